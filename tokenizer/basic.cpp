// The single-pass basic tokenizer (see basic.h). ASCII takes a table-driven fast path; other
// characters go through the per-code-point tables of unicode.h.
#include "tokenizer/basic.h"

#include <cstring>

#include "tokenizer/unicode.h"
#include "tokenizer/utf8.h"

namespace tokenizer {
namespace {

// Builds words incrementally: characters are appended to an open word, which is closed by
// whitespace, punctuation, CJK or a special token.
class WordBuilder {
 public:
  explicit WordBuilder(Words& out) : out_(out) {}

  void add_char(uint32_t cp, uint32_t src_begin, uint32_t src_end) {
    if (!open_) {
      out_.words.push_back(Words::Word{static_cast<uint32_t>(out_.char_pos.size()), 0, -1});
      open_ = true;
    }
    out_.char_pos.push_back(static_cast<uint32_t>(out_.text.size()));
    out_.src_begin.push_back(src_begin);
    out_.src_end.push_back(src_end);
    append_utf8(out_.text, cp);
    out_.words.back().n_chars++;
  }
  void end_word() { open_ = false; }
  // A character that is a word by itself (punctuation).
  void add_lone_char(uint32_t cp, uint32_t src_begin, uint32_t src_end) {
    end_word();
    add_char(cp, src_begin, src_end);
    end_word();
  }
  void add_special(int32_t id, uint32_t src_begin, uint32_t src_end) {
    end_word();
    // One pseudo character keeps the offsets; its text is never looked up.
    add_char(' ', src_begin, src_end);
    out_.words.back().special_id = id;
    end_word();
  }

 private:
  Words& out_;
  bool open_ = false;
};

// The special tokens HF matches in raw text before normalizing (exact, case-sensitive).
struct SpecialMatch {
  int32_t id = -1;
  size_t length = 0;
};

SpecialMatch match_special(std::string_view rest, const Vocab& vocab) {
  static constexpr const char* kNames[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  const int32_t ids[] = {vocab.pad_id(), vocab.unk_id(), vocab.cls_id(), vocab.sep_id(), vocab.mask_id()};
  for (int i = 0; i < 5; ++i) {
    const size_t n = std::strlen(kNames[i]);
    if (rest.size() >= n && std::memcmp(rest.data(), kNames[i], n) == 0) return SpecialMatch{ids[i], n};
  }
  return SpecialMatch{};
}

// ASCII classes for the fast path.
enum AsciiClass : uint8_t { kLetter, kDrop, kBreak, kPunct };

struct AsciiTable {
  AsciiClass cls[128];
  AsciiTable() {
    for (uint32_t c = 0; c < 128; ++c) {
      const uint8_t flags = char_flags()[c];
      const auto kind = static_cast<CharKind>(flags & kKindMask);
      if (kind == CharKind::kRemove) cls[c] = kDrop;
      else if (kind == CharKind::kSpace) cls[c] = kBreak;
      else if (flags & kPunctBit) cls[c] = kPunct;
      else cls[c] = kLetter;
    }
  }
};

// Adds a non-ASCII character after cleaning: its normalized form goes into the open word, with
// each punctuation character of that form as a word of its own.
void add_unicode_char(uint32_t cp, uint32_t b, uint32_t e, bool lowercase, WordBuilder& words) {
  const uint8_t flags = char_flags()[cp];
  switch (static_cast<CharKind>(flags & kKindMask)) {
    case CharKind::kRemove:
      return;
    case CharKind::kSpace:
      words.end_word();
      return;
    case CharKind::kCjk:
    case CharKind::kKeep:
      break;
  }
  const bool cjk = static_cast<CharKind>(flags & kKindMask) == CharKind::kCjk;
  if (cjk) words.end_word();
  if (!lowercase || !(flags & kFoldedBit)) {
    if (cjk || (flags & kPunctBit)) words.add_lone_char(cp, b, e);
    else words.add_char(cp, b, e);
    return;
  }
  const FoldedChar folded = fold_char(cp);
  for (uint8_t i = 0; i < folded.count; ++i) {
    const uint32_t c = folded.cps[i];
    if (is_punctuation(c)) words.add_lone_char(c, b, e);
    else words.add_char(c, b, e);
  }
  if (cjk) words.end_word();
}

}  // namespace

void split_words(std::string_view input, bool lowercase, const Vocab& vocab, Words& out) {
  static const AsciiTable ascii;
  WordBuilder words(out);
  const auto* begin = reinterpret_cast<const unsigned char*>(input.data());
  const auto* end = begin + input.size();
  const unsigned char* p = begin;
  while (p < end) {
    const auto pos = static_cast<uint32_t>(p - begin);
    const unsigned char c = *p;
    if (c < 0x80) {
      switch (ascii.cls[c]) {
        case kLetter:
          words.add_char(lowercase && c >= 'A' && c <= 'Z' ? c + 32u : c, pos, pos + 1);
          break;
        case kDrop:
          break;
        case kBreak:
          words.end_word();
          break;
        case kPunct:
          if (c == '[') {
            const SpecialMatch m = match_special(input.substr(pos), vocab);
            if (m.id >= 0) {
              words.add_special(m.id, pos, pos + static_cast<uint32_t>(m.length));
              p += m.length;
              continue;
            }
          }
          words.add_lone_char(c, pos, pos + 1);
          break;
      }
      ++p;
      continue;
    }
    uint32_t cp;
    const size_t n = decode_utf8(p, end, &cp);
    add_unicode_char(cp, pos, pos + static_cast<uint32_t>(n), lowercase, words);
    p += n;
  }
}

}  // namespace tokenizer
