// Loading vocab.txt and the open-addressing token tables.
#include "tokenizer/vocab.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "engine/error.h"
#include "tokenizer/utf8.h"

namespace tokenizer {
namespace {

// A fast hash for short byte strings: 8 bytes per step, multiply-xorshift mixing.
inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94D049BB133111EBull;
    h ^= h >> 29;
  }
  h *= 0xFF51AFD7ED558CCDull;
  return h ^ (h >> 32);
}

}  // namespace

void TokenTable::build(const std::vector<std::string_view>& keys) {
  keys_ = keys;
  size_t capacity = 16;
  while (capacity < keys.size() * 4) capacity *= 2;  // load <= 1/4: probes stay short
  slots_.assign(capacity, Slot{0, -1});
  mask_ = capacity - 1;
  for (size_t id = 0; id < keys.size(); ++id) {
    const std::string_view key = keys[id];
    if (key.empty()) continue;
    const uint64_t h = hash_bytes(key.data(), key.size());
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.id < 0) {
        s = Slot{tag, static_cast<int32_t>(id)};
        break;
      }
      if (s.tag == tag && keys_[static_cast<size_t>(s.id)] == key) {
        s.id = static_cast<int32_t>(id);  // duplicate line: the later id wins, as in HF
        break;
      }
    }
  }
}

int32_t TokenTable::find(std::string_view key) const {
  const uint64_t h = hash_bytes(key.data(), key.size());
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
    const Slot& s = slots_[i];
    if (s.id < 0) return -1;
    if (s.tag == tag) {
      const std::string_view k = keys_[static_cast<size_t>(s.id)];
      if (k.size() == key.size() && std::memcmp(k.data(), key.data(), key.size()) == 0) return s.id;
    }
  }
}

Vocab Vocab::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) engine::fail("cannot open vocabulary file '", path, "'");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) engine::fail("cannot read vocabulary file '", path, "'");
  return from_text(buf.str(), "vocabulary file '" + path + "'");
}

Vocab Vocab::from_text(std::string_view text, const std::string& origin) {
  Vocab v;
  v.text_.assign(text.data(), text.size());
  if (v.text_.empty()) engine::fail(origin, " is empty");
  // One token per line, "\n" or "\r\n" ends a line; a final line without "\n" counts.
  std::string_view rest = v.text_;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!is_valid_utf8(line))
      engine::fail(origin, ": line ", v.tokens_.size() + 1, " is not valid UTF-8");
    if (line.find_first_of(" \t") != std::string_view::npos)
      engine::fail(origin, ": line ", v.tokens_.size() + 1, " contains whitespace ('",
                   line, "'): not a WordPiece vocabulary");
    v.tokens_.push_back(line);
  }
  if (v.tokens_.size() > 0x7FFFFFFF) engine::fail(origin, ": too many tokens");

  // Word-initial pieces are the tokens as written; continuations are "##x" tokens keyed by "x".
  std::vector<std::string_view> continuation_keys(v.tokens_.size());
  for (size_t id = 0; id < v.tokens_.size(); ++id) {
    const std::string_view t = v.tokens_[id];
    if (t.size() > 2 && t.compare(0, 2, "##") == 0) continuation_keys[id] = t.substr(2);
    v.max_piece_bytes_ = std::max(v.max_piece_bytes_, t.size());
  }
  v.starts_.build(v.tokens_);
  v.continuations_.build(continuation_keys);

  auto require = [&](const char* name) {
    const int32_t id = v.find(name);
    if (id < 0) engine::fail(origin, " has no ", name, " token: not a BERT WordPiece vocabulary");
    return id;
  };
  v.pad_id_ = require("[PAD]");
  v.unk_id_ = require("[UNK]");
  v.cls_id_ = require("[CLS]");
  v.sep_id_ = require("[SEP]");
  v.mask_id_ = require("[MASK]");
  return v;
}

int32_t Vocab::find(std::string_view token) const { return starts_.find(token); }

}  // namespace tokenizer
