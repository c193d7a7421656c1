// UTF-8 decoding that never fails: an ill-formed sequence decodes to U+FFFD, one per "maximal
// subpart" (Unicode ch. 3, U+FFFD substitution of maximal subparts). That is exactly what Python's
// bytes.decode("utf-8", errors="replace") does, so character offsets of text with invalid bytes
// agree with Hugging Face run on the same bytes decoded by Python.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tokenizer {

constexpr uint32_t kReplacementChar = 0xFFFD;

// Decodes the code point starting at p (p < end) into *cp and returns the number of bytes used
// (at least 1).
inline size_t decode_utf8(const unsigned char* p, const unsigned char* end, uint32_t* cp) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  const size_t avail = static_cast<size_t>(end - p);
  // Lead byte decides the length and the allowed range of the second byte (Table 3-7).
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  uint32_t value;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    value = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    value = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    value = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // no overlong forms
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *cp = kReplacementChar;  // stray continuation byte or a byte never used in UTF-8
    return 1;
  }
  for (size_t i = 1; i < len; ++i) {
    if (i >= avail) {
      *cp = kReplacementChar;  // truncated sequence: the valid prefix is one maximal subpart
      return i;
    }
    const unsigned char b = p[i];
    if (b < lo || b > hi) {
      *cp = kReplacementChar;
      return i;
    }
    lo = 0x80;
    hi = 0xBF;
    value = (value << 6) | (b & 0x3F);
  }
  *cp = value;
  return len;
}

// Appends the UTF-8 encoding of a valid code point.
inline void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// True when s is well-formed UTF-8.
bool is_valid_utf8(std::string_view s);

// Number of code points Python sees in s decoded with errors="replace".
size_t count_chars(std::string_view s);

}  // namespace tokenizer
