// Per-code-point facts the BERT basic step needs, computed once from utf8proc into flat tables:
// what the text cleaner does with a character (keep, drop, turn into a space, isolate as CJK),
// whether it is punctuation for the pre-tokenizer, and what lowercasing plus accent stripping
// (NFD, then drop Mn, then lowercase) turns it into.
//
// The reference is Hugging Face `tokenizers` (what BertTokenizer/BertTokenizerFast run). It takes
// general categories from tables frozen at an old Unicode version while utf8proc follows the
// current one, so a few hundred rarely used code points are classified differently; those are
// listed in unicode_compat.cpp and applied on top of utf8proc.
#pragma once
#include <cstdint>
#include <string_view>

namespace tokenizer {

// What BERT's text cleaning does with one character.
enum class CharKind : uint8_t {
  kKeep = 0,    // part of a word
  kRemove = 1,  // NUL, U+FFFD, control/format/private-use characters: dropped, no word break
  kSpace = 2,   // whitespace: ends the current word
  kCjk = 3,     // CJK ideograph: a word of its own
};

// A character after lowercasing and accent stripping: up to 4 code points (most are 1, Mn are 0).
struct FoldedChar {
  uint8_t count = 0;
  uint32_t cps[4] = {0, 0, 0, 0};
};

constexpr uint32_t kMaxCodePoint = 0x10FFFF;

// Flag bits of one table entry.
constexpr uint8_t kKindMask = 0x03;
constexpr uint8_t kPunctBit = 0x04;   // punctuation for the pre-tokenizer
constexpr uint8_t kFoldedBit = 0x08;  // lowercase + strip accents changes it

// The table of one byte per code point, built on first use (thread-safe).
const uint8_t* char_flags();

inline CharKind char_kind(uint32_t cp) { return static_cast<CharKind>(char_flags()[cp] & kKindMask); }
inline bool is_punctuation(uint32_t cp) { return (char_flags()[cp] & kPunctBit) != 0; }

// Lowercase + strip accents of cp as Hugging Face's uncased BERT does it (identity when the
// kFoldedBit flag is clear).
FoldedChar fold_char(uint32_t cp);

// Exceptions to utf8proc's general categories, so that the classification matches Hugging Face
// `tokenizers` (unicode_compat.cpp).
struct CategoryOverrides {
  // Characters HF does not treat as punctuation although utf8proc says P* (and the reverse).
  static bool not_punctuation(uint32_t cp);
  static bool extra_punctuation(uint32_t cp);
  // Characters HF does not drop as control/format although utf8proc says Cc/Cf/Co (and reverse).
  static bool not_control(uint32_t cp);
  static bool extra_control(uint32_t cp);
  // Nonspacing marks HF keeps when stripping accents (and marks it strips that utf8proc calls Mc).
  static bool not_nonspacing_mark(uint32_t cp);
  static bool extra_nonspacing_mark(uint32_t cp);
  // Characters whose canonical decomposition HF's NFD does not apply.
  static bool no_decomposition(uint32_t cp);
  // Lowercase mappings newer than utf8proc's Unicode version: 0 when none.
  static uint32_t extra_lowercase(uint32_t cp);
};

}  // namespace tokenizer
