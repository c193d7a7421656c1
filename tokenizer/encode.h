// BERT encoding of single sentences and pairs as Hugging Face's BertTokenizer(Fast) gives it:
// [CLS] a [SEP] or [CLS] a [SEP] b [SEP], token type ids 0 for a and 1 for b, optional truncation
// to a maximum length, offsets of every token into its text, and batch encoding on several threads
// with deterministic output. engine/data/batcher.h packs encodings into the engine's batches.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace tokenizer {

// How a text that is too long is cut (HF names). Tokens are removed from the end.
enum class Truncation {
  kLongestFirst,  // pairs: the longer text loses tokens first (HF's split of the budget)
  kOnlyFirst,     // only text a is cut; an error when that is not enough
  kOnlySecond,    // only text b is cut; an error when that is not enough or there is no b
};
Truncation parse_truncation(std::string_view name);  // "longest_first", "only_first", "only_second"
const char* truncation_name(Truncation t);

struct EncodeOptions {
  int max_length = 0;  // tokens including [CLS]/[SEP]; 0 = no truncation
  Truncation truncation = Truncation::kLongestFirst;
};

// Byte range [begin, end) of a token in the text it came from (a or b); {0, 0} for [CLS]/[SEP].
struct Offset {
  uint32_t begin = 0;
  uint32_t end = 0;
  bool operator==(const Offset& o) const { return begin == o.begin && end == o.end; }
};

struct Encoding {
  std::vector<int32_t> ids;
  std::vector<int32_t> type_ids;      // 0 for [CLS] a [SEP], 1 for b [SEP]
  std::vector<Offset> offsets;        // byte offsets (see char_offsets for HF's character unit)
  std::vector<int8_t> sequence_ids;   // 0: from a, 1: from b, -1: [CLS]/[SEP]
  std::vector<int32_t> word_ids;      // index of the word within its text, -1 for [CLS]/[SEP]
  size_t size() const { return ids.size(); }
  void clear();
};

class BertTokenizer {
 public:
  // `lowercase`: the uncased rules (lowercase and strip accents), as HF's do_lower_case.
  BertTokenizer(Vocab vocab, bool lowercase);
  // Reads `dir`/vocab.txt and do_lower_case from `dir`/tokenizer_config.json (true when absent,
  // as in HF).
  static BertTokenizer from_model_dir(const std::string& dir);

  const Vocab& vocab() const { return *vocab_; }
  bool lowercase() const { return lowercase_; }

  // Encodes a (and b for a pair) into `out`, reusing its storage. Throws engine::Error when the
  // truncation cannot be done (as HF does).
  void encode(std::string_view a, std::optional<std::string_view> b, const EncodeOptions& options,
              Encoding& out) const;
  Encoding encode(std::string_view a, std::optional<std::string_view> b = std::nullopt,
                  const EncodeOptions& options = {}) const;

  // The overflowing windows of a pair for extractive question answering, as Hugging Face's fast
  // tokenizer returns them with truncation 'only_second', return_overflowing_tokens and `stride`:
  // every window is [CLS] a [SEP] w [SEP] with all of a, and w a run of at most
  // room = max_length - len(a) - 3 pieces of b; window k starts at k * (room - stride), and the last
  // one is the first that reaches b's end (one window when the pair fits). Throws engine::Error when a
  // leaves no room for b or stride >= room (where HF fails too).
  std::vector<Encoding> encode_windows(std::string_view a, std::string_view b, int max_length, int stride) const;

  // The WordPiece ids of a text alone, no [CLS]/[SEP], no truncation.
  std::vector<int32_t> tokenize_ids(std::string_view text) const;

  // Encodes many texts (pairs when `b` is non-empty: b.size() == a.size()) on `threads` threads
  // (0: all hardware threads). Result i is always encode(a[i], b[i]): independent of threads.
  std::vector<Encoding> encode_batch(const std::vector<std::string_view>& a,
                                     const std::vector<std::string_view>& b,
                                     const EncodeOptions& options, int threads = 0) const;

 private:
  std::shared_ptr<const Vocab> vocab_;  // shared: copies of a tokenizer share one vocabulary
  bool lowercase_;
};

// do_lower_case from a model directory's tokenizer_config.json: nullopt when the file or the key
// is absent. Throws engine::Error for malformed JSON or settings this tokenizer cannot follow.
std::optional<bool> read_do_lower_case(const std::string& model_dir);

// Converts byte offsets into `text` to character offsets, the unit HF reports (code points of
// the text as Python decodes it, an invalid byte sequence counting as one U+FFFD).
std::vector<Offset> char_offsets(std::string_view text, const std::vector<Offset>& byte_offsets);

}  // namespace tokenizer
