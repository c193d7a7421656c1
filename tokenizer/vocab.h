// A WordPiece vocabulary as Hugging Face reads vocab.txt: one token per line, the line number is
// the id. Lookups go through two open-addressing hash tables over string_views into one buffer:
// one for word-initial pieces, one for "##" continuations keyed without the "##", so WordPiece
// can look a piece up without building a string.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tokenizer {

// Open-addressing hash table from a token to its id; keys live in the owning Vocab.
class TokenTable {
 public:
  // keys[i] is the key of id i; empty views are not inserted. Later ids win on duplicates.
  void build(const std::vector<std::string_view>& keys);
  int32_t find(std::string_view key) const;  // -1 when absent

 private:
  struct Slot {
    uint32_t tag;  // high bits of the hash, to skip most string compares
    int32_t id;    // -1: empty
  };
  std::vector<Slot> slots_;
  std::vector<std::string_view> keys_;
  uint64_t mask_ = 0;
};

class Vocab {
 public:
  // Reads vocab.txt; throws engine::Error for a missing, empty or malformed file.
  static Vocab load(const std::string& path);
  // Builds from the lines of a vocab.txt already in memory (tests); `origin` names it in errors.
  static Vocab from_text(std::string_view text, const std::string& origin = "vocabulary");

  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  std::string_view token(int32_t id) const { return tokens_.at(static_cast<size_t>(id)); }
  int32_t find(std::string_view token) const;             // the exact token, -1 when absent
  int32_t find_word_start(std::string_view piece) const { return starts_.find(piece); }
  int32_t find_continuation(std::string_view piece) const { return continuations_.find(piece); }
  // Longest piece in bytes (without "##"): WordPiece never needs to try a longer one.
  size_t max_piece_bytes() const { return max_piece_bytes_; }

  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  int32_t cls_id() const { return cls_id_; }
  int32_t sep_id() const { return sep_id_; }
  int32_t mask_id() const { return mask_id_; }

  Vocab(const Vocab&) = delete;  // tables hold views into text_: moves only
  Vocab& operator=(const Vocab&) = delete;
  Vocab(Vocab&&) = default;
  Vocab& operator=(Vocab&&) = default;

 private:
  Vocab() = default;
  std::string text_;  // the file's bytes, which every view points into (heap: stable on move)
  std::vector<std::string_view> tokens_;
  TokenTable starts_, continuations_;
  size_t max_piece_bytes_ = 0;
  int32_t pad_id_ = -1, unk_id_ = -1, cls_id_ = -1, sep_id_ = -1, mask_id_ = -1;
};

}  // namespace tokenizer
