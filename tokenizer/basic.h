// BERT's basic step in one pass over the raw UTF-8: find the special tokens written in the text,
// clean (drop NUL, U+FFFD and control characters, whitespace ends a word), isolate CJK ideographs,
// lowercase and strip accents for uncased vocabularies, and split on whitespace and on every
// punctuation character. Each normalized character remembers the byte range of the original
// character it came from, so tokens map back to the input (offsets).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace tokenizer {

// The words of one text. All storage is reused from call to call: no allocation once warm.
struct Words {
  struct Word {
    uint32_t first_char;  // index into char_* arrays
    uint32_t n_chars;     // normalized characters (what the 100-character limit counts)
    int32_t special_id;   // >= 0: a special token written in the text, taken as is
  };
  std::string text;                 // normalized UTF-8 of all words back to back
  std::vector<uint32_t> char_pos;   // byte offset in `text` of each normalized character
  std::vector<uint32_t> src_begin;  // original byte range of the character it came from
  std::vector<uint32_t> src_end;
  std::vector<Word> words;

  void clear() {
    text.clear();
    char_pos.clear();
    src_begin.clear();
    src_end.clear();
    words.clear();
  }
  // Byte range of a word's characters [c0, c1) in `text` (c1 may be one past the last char).
  uint32_t byte_of(uint32_t char_index) const {
    return char_index < char_pos.size() ? char_pos[char_index] : static_cast<uint32_t>(text.size());
  }
};

// Splits `input` into normalized words (appends to `out`, which the caller clears). With
// `lowercase` the uncased rules apply (lowercase + NFD + drop Mn); otherwise case and accents stay.
void split_words(std::string_view input, bool lowercase, const Vocab& vocab, Words& out);

}  // namespace tokenizer
