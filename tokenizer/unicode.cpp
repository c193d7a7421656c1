// Builds the per-code-point tables of unicode.h from utf8proc (plus unicode_compat.cpp).
#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <mutex>
#include <vector>

namespace tokenizer {
namespace {

// The CJK Unified Ideographs blocks BERT's original code lists (not Hangul, kana or symbols).
// HF tokenizers starts Extension E at U+2B920 where BERT says U+2B820: we follow HF.
bool is_cjk_ideograph(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B920 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// Unicode White_Space minus the C0/C1 controls, which the cleaner drops before it looks for
// whitespace (as Rust's char::is_whitespace does in HF; Python BERT adds Zs, the same set).
bool is_whitespace(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0D: case 0x20: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

bool is_control(uint32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;  // these count as whitespace
  if (CategoryOverrides::extra_control(cp)) return true;
  if (CategoryOverrides::not_control(cp)) return false;
  // Unassigned code points (Cn) stay: HF keeps them (Python's BertTokenizerLegacy drops them).
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CS:
      return true;
    default:
      return false;
  }
}

bool is_punct_char(uint32_t cp) {
  // BERT counts every non-alphanumeric printable ASCII character as punctuation ($, +, ^, ...).
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126))
    return true;
  if (CategoryOverrides::extra_punctuation(cp)) return true;
  if (CategoryOverrides::not_punctuation(cp)) return false;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_PC: case UTF8PROC_CATEGORY_PD: case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE: case UTF8PROC_CATEGORY_PI: case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

bool is_nonspacing_mark(uint32_t cp) {
  if (CategoryOverrides::extra_nonspacing_mark(cp)) return true;
  if (CategoryOverrides::not_nonspacing_mark(cp)) return false;
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp)) == UTF8PROC_CATEGORY_MN;
}

uint32_t lowercase(uint32_t cp) {
  if (uint32_t lower = CategoryOverrides::extra_lowercase(cp)) return lower;
  return static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp)));
}

// NFD, drop nonspacing marks, then lowercase each remaining character: HF's BertNormalizer
// strips accents before it lowercases, character by character.
FoldedChar compute_fold(uint32_t cp) {
  utf8proc_int32_t buf[8];
  int boundclass = 0;
  utf8proc_ssize_t n = 1;
  buf[0] = static_cast<utf8proc_int32_t>(cp);
  if (!CategoryOverrides::no_decomposition(cp))
    n = utf8proc_decompose_char(static_cast<utf8proc_int32_t>(cp), buf, 8, UTF8PROC_DECOMPOSE, &boundclass);
  FoldedChar out;
  for (utf8proc_ssize_t i = 0; i < n && i < 8; ++i) {
    const auto c = static_cast<uint32_t>(buf[i]);
    if (is_nonspacing_mark(c)) continue;
    if (out.count < 4) out.cps[out.count++] = lowercase(c);
  }
  return out;
}

bool is_identity(const FoldedChar& f, uint32_t cp) { return f.count == 1 && f.cps[0] == cp; }

constexpr uint32_t kHangulFirst = 0xAC00, kHangulLast = 0xD7A3;

struct Tables {
  std::vector<uint8_t> flags;
  // Folded forms of the BMP through a dense index (0 = none), the rest in a sorted list.
  std::vector<uint16_t> bmp_index;
  std::vector<FoldedChar> bmp_folds;
  std::vector<std::pair<uint32_t, FoldedChar>> astral_folds;

  Tables() : flags(kMaxCodePoint + 1, 0), bmp_index(0x10000, 0), bmp_folds(1) {
    for (uint32_t cp = 0; cp <= kMaxCodePoint; ++cp) {
      const CharKind kind = classify(cp);
      uint8_t f = static_cast<uint8_t>(kind);
      if (is_punct_char(cp)) f |= kPunctBit;
      if (kind == CharKind::kKeep || kind == CharKind::kCjk) {
        if (cp >= 0x80 && !(cp >= kHangulFirst && cp <= kHangulLast)) {
          FoldedChar fold = compute_fold(cp);
          if (!is_identity(fold, cp)) {
            f |= kFoldedBit;
            store_fold(cp, fold);
          }
        } else if ((cp >= 'A' && cp <= 'Z') || (cp >= kHangulFirst && cp <= kHangulLast)) {
          f |= kFoldedBit;  // ASCII and Hangul are folded by code, not stored
        }
      }
      flags[cp] = f;
    }
  }

  static CharKind classify(uint32_t cp) {
    if (cp == 0 || cp == 0xFFFD) return CharKind::kRemove;
    if (cp >= 0xD800 && cp <= 0xDFFF) return CharKind::kRemove;  // never decoded; kept sane
    if (is_control(cp)) return CharKind::kRemove;
    if (is_whitespace(cp)) return CharKind::kSpace;
    if (is_cjk_ideograph(cp)) return CharKind::kCjk;
    return CharKind::kKeep;
  }

  void store_fold(uint32_t cp, const FoldedChar& fold) {
    if (cp < 0x10000) {
      bmp_index[cp] = static_cast<uint16_t>(bmp_folds.size());
      bmp_folds.push_back(fold);
    } else {
      astral_folds.emplace_back(cp, fold);  // built in increasing cp order: stays sorted
    }
  }
};

const Tables& tables() {
  static const Tables t;  // C++11 guarantees one thread builds it
  return t;
}

// Hangul syllables decompose algorithmically into 2 or 3 conjoining jamo (Unicode ch. 3.12).
FoldedChar fold_hangul(uint32_t cp) {
  const uint32_t s = cp - kHangulFirst;
  FoldedChar out;
  out.cps[out.count++] = 0x1100 + s / (21 * 28);
  out.cps[out.count++] = 0x1161 + (s % (21 * 28)) / 28;
  if (s % 28 != 0) out.cps[out.count++] = 0x11A7 + s % 28;
  return out;
}

}  // namespace

const uint8_t* char_flags() { return tables().flags.data(); }

FoldedChar fold_char(uint32_t cp) {
  const Tables& t = tables();
  if (!(t.flags[cp] & kFoldedBit)) {
    FoldedChar same;
    same.count = 1;
    same.cps[0] = cp;
    return same;
  }
  if (cp >= 'A' && cp <= 'Z') {
    FoldedChar lower;
    lower.count = 1;
    lower.cps[0] = cp + 32;
    return lower;
  }
  if (cp >= kHangulFirst && cp <= kHangulLast) return fold_hangul(cp);
  if (cp < 0x10000) return t.bmp_folds[t.bmp_index[cp]];
  auto it = std::lower_bound(t.astral_folds.begin(), t.astral_folds.end(), cp,
                             [](const auto& entry, uint32_t key) { return entry.first < key; });
  return it->second;
}

}  // namespace tokenizer
