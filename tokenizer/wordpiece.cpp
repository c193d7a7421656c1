// Greedy longest-match-first WordPiece over the normalized words of basic.h.
#include "tokenizer/wordpiece.h"

#include <string_view>

namespace tokenizer {
namespace {

// Pieces of one word; returns false (and leaves `out` as it was) when the word cannot be cut.
bool cut_word(const Words& words, const Words::Word& w, uint32_t word_index, const Vocab& vocab,
              std::vector<Piece>& out) {
  const size_t mark = out.size();
  const uint32_t first = w.first_char, last = w.first_char + w.n_chars;  // chars [first, last)
  const size_t max_bytes = vocab.max_piece_bytes();
  uint32_t start = first;
  while (start < last) {
    const uint32_t start_byte = words.char_pos[start];
    // Skip ends that make the piece longer than any vocabulary entry.
    uint32_t end = last;
    while (end > start + 1 && words.byte_of(end) - start_byte > max_bytes) --end;
    int32_t id = -1;
    for (; end > start; --end) {
      const std::string_view piece(words.text.data() + start_byte, words.byte_of(end) - start_byte);
      id = start == first ? vocab.find_word_start(piece) : vocab.find_continuation(piece);
      if (id >= 0) break;
    }
    if (id < 0) {
      out.resize(mark);
      return false;
    }
    out.push_back(Piece{id, words.src_begin[start], words.src_end[end - 1], word_index});
    start = end;
  }
  return true;
}

}  // namespace

void wordpiece(const Words& words, const Vocab& vocab, std::vector<Piece>& out) {
  for (uint32_t i = 0; i < words.words.size(); ++i) {
    const Words::Word& w = words.words[i];
    const uint32_t src_begin = words.src_begin[w.first_char];
    const uint32_t src_end = words.src_end[w.first_char + w.n_chars - 1];
    if (w.special_id >= 0) {
      out.push_back(Piece{w.special_id, src_begin, src_end, i});
    } else if (w.n_chars > kMaxWordChars || !cut_word(words, w, i, vocab, out)) {
      out.push_back(Piece{vocab.unk_id(), src_begin, src_end, i});
    }
  }
}

}  // namespace tokenizer
