// WordPiece as BERT does it: each word is cut greedily into the longest vocabulary piece that
// starts where the previous one ended ("##" marks a piece that continues a word). A word with no
// such cut, or longer than 100 characters, becomes one [UNK].
#pragma once
#include <cstdint>
#include <vector>

#include "tokenizer/basic.h"
#include "tokenizer/vocab.h"

namespace tokenizer {

constexpr uint32_t kMaxWordChars = 100;  // HF's max_input_chars_per_word

// One token of a text before [CLS]/[SEP] are added: its id, the original byte range it covers
// and the index of the word it came from.
struct Piece {
  int32_t id;
  uint32_t src_begin;
  uint32_t src_end;
  uint32_t word;
};

// Appends the pieces of every word in `words` to `out`.
void wordpiece(const Words& words, const Vocab& vocab, std::vector<Piece>& out);

}  // namespace tokenizer
