// Whole-string UTF-8 helpers built on decode_utf8.
#include "tokenizer/utf8.h"

namespace tokenizer {

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    uint32_t cp;
    const size_t n = decode_utf8(p, end, &cp);
    // A real U+FFFD in the text is 3 bytes long; a substitution never is.
    if (cp == kReplacementChar && n != 3) return false;
    if (cp == kReplacementChar && !(p[0] == 0xEF && p[1] == 0xBF && p[2] == 0xBD)) return false;
    p += n;
  }
  return true;
}

size_t count_chars(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  size_t n = 0;
  while (p < end) {
    uint32_t cp;
    p += decode_utf8(p, end, &cp);
    ++n;
  }
  return n;
}

}  // namespace tokenizer
