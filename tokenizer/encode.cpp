// Single and pair encoding, truncation, batch encoding on threads, packing.
#include "tokenizer/encode.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <fstream>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "tokenizer/basic.h"
#include "tokenizer/utf8.h"
#include "tokenizer/wordpiece.h"

namespace tokenizer {
namespace {

// Reused per thread so that encoding allocates nothing once warm (beyond the output).
struct Scratch {
  Words words;
  std::vector<Piece> a, b;
};

Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

void text_to_pieces(std::string_view text, bool lowercase, const Vocab& vocab, Scratch& s,
                    std::vector<Piece>& out) {
  s.words.clear();
  out.clear();
  split_words(text, lowercase, vocab, s.words);
  wordpiece(s.words, vocab, out);
}

// How many pieces of a and b survive truncation to `budget` (max_length minus [CLS]/[SEP]), as
// Hugging Face tokenizers computes it.
void truncated_lengths(size_t n_a, size_t n_b, bool pair, size_t budget, Truncation strategy,
                       size_t* keep_a, size_t* keep_b) {
  *keep_a = n_a;
  *keep_b = n_b;
  if (!pair) {
    if (strategy == Truncation::kOnlySecond)
      engine::fail("truncation 'only_second' needs a pair of texts");
    *keep_a = std::min(n_a, budget);
    return;
  }
  if (n_a + n_b <= budget) return;
  if (budget == 0) {  // HF empties both texts whatever the strategy
    *keep_a = *keep_b = 0;
    return;
  }
  const size_t excess = n_a + n_b - budget;
  switch (strategy) {
    case Truncation::kLongestFirst: {
      // The shorter text (a on a tie) keeps up to half the budget, the longer one the rest.
      if (n_a <= n_b) {
        *keep_a = std::min(n_a, budget / 2);
        *keep_b = budget - *keep_a;
      } else {
        *keep_b = std::min(n_b, budget / 2);
        *keep_a = budget - *keep_b;
      }
      return;
    }
    case Truncation::kOnlyFirst:
      if (n_a <= excess)
        engine::fail("truncation 'only_first': the first text (", n_a, " tokens) is too short to fit ",
                     budget + 3, " tokens with the second (", n_b, " tokens)");
      *keep_a = n_a - excess;
      return;
    case Truncation::kOnlySecond:
      if (n_b <= excess)
        engine::fail("truncation 'only_second': the second text (", n_b, " tokens) is too short to fit ",
                     budget + 3, " tokens with the first (", n_a, " tokens)");
      *keep_b = n_b - excess;
      return;
  }
}

void push_token(Encoding& out, int32_t id, int32_t type, int8_t seq, Offset off, int32_t word) {
  out.ids.push_back(id);
  out.type_ids.push_back(type);
  out.sequence_ids.push_back(seq);
  out.offsets.push_back(off);
  out.word_ids.push_back(word);
}

void push_pieces(Encoding& out, const std::vector<Piece>& pieces, size_t n, int32_t type) {
  for (size_t i = 0; i < n; ++i) {
    const Piece& p = pieces[i];
    push_token(out, p.id, type, static_cast<int8_t>(type), Offset{p.src_begin, p.src_end},
               static_cast<int32_t>(p.word));
  }
}

}  // namespace

Truncation parse_truncation(std::string_view name) {
  if (name == "longest_first") return Truncation::kLongestFirst;
  if (name == "only_first") return Truncation::kOnlyFirst;
  if (name == "only_second") return Truncation::kOnlySecond;
  engine::fail("unknown truncation strategy '", name,
               "' (expected longest_first, only_first or only_second)");
}

const char* truncation_name(Truncation t) {
  switch (t) {
    case Truncation::kLongestFirst: return "longest_first";
    case Truncation::kOnlyFirst: return "only_first";
    case Truncation::kOnlySecond: return "only_second";
  }
  return "?";
}

void Encoding::clear() {
  ids.clear();
  type_ids.clear();
  offsets.clear();
  sequence_ids.clear();
  word_ids.clear();
}

BertTokenizer::BertTokenizer(Vocab vocab, bool lowercase)
    : vocab_(std::make_shared<const Vocab>(std::move(vocab))), lowercase_(lowercase) {}

BertTokenizer BertTokenizer::from_model_dir(const std::string& dir) {
  const std::optional<bool> lower = read_do_lower_case(dir);
  return BertTokenizer(Vocab::load(dir + "/vocab.txt"), lower.value_or(true));
}

void BertTokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                           const EncodeOptions& options, Encoding& out) const {
  Scratch& s = thread_scratch();
  const Vocab& v = *vocab_;
  text_to_pieces(a, lowercase_, v, s, s.a);
  const bool pair = b.has_value();
  if (pair) text_to_pieces(*b, lowercase_, v, s, s.b);
  else s.b.clear();

  size_t keep_a = s.a.size(), keep_b = s.b.size();
  if (options.max_length > 0) {
    const size_t specials = pair ? 3 : 2;
    if (static_cast<size_t>(options.max_length) < specials)
      engine::fail("max length ", options.max_length, " is shorter than the ", specials,
                   " special tokens ([CLS], [SEP]) of a ", pair ? "pair" : "single text");
    truncated_lengths(s.a.size(), s.b.size(), pair,
                      static_cast<size_t>(options.max_length) - specials, options.truncation,
                      &keep_a, &keep_b);
  }

  out.clear();
  push_token(out, v.cls_id(), 0, -1, Offset{}, -1);
  push_pieces(out, s.a, keep_a, 0);
  push_token(out, v.sep_id(), 0, -1, Offset{}, -1);
  if (pair) {
    push_pieces(out, s.b, keep_b, 1);
    push_token(out, v.sep_id(), 1, -1, Offset{}, -1);
  }
}

Encoding BertTokenizer::encode(std::string_view a, std::optional<std::string_view> b,
                               const EncodeOptions& options) const {
  Encoding out;
  encode(a, b, options, out);
  return out;
}

std::vector<Encoding> BertTokenizer::encode_windows(std::string_view a, std::string_view b, int max_length,
                                                   int stride) const {
  Scratch& s = thread_scratch();
  const Vocab& v = *vocab_;
  text_to_pieces(a, lowercase_, v, s, s.a);
  text_to_pieces(b, lowercase_, v, s, s.b);
  if (stride < 0) engine::fail("stride ", stride, " is negative");
  const int64_t room = int64_t(max_length) - 3 - int64_t(s.a.size());
  // HF: a pair that fits is one window; otherwise b must keep at least one piece, and more than stride.
  const bool fits = s.a.size() + s.b.size() + 3 <= size_t(std::max(max_length, 0));
  if (!fits && room <= 0)
    engine::fail("the question (", s.a.size(), " tokens) leaves no room for the context in ", max_length,
                 " tokens");
  if (!fits && stride >= room)
    engine::fail("the question (", s.a.size(), " tokens) leaves room for ", room, " context tokens in ", max_length,
                 ", not more than the stride ", stride, " (raise --max-length or lower --doc-stride)");
  const size_t n_b = s.b.size(), width = fits ? n_b : size_t(room);
  std::vector<Encoding> windows;
  for (size_t start = 0;; start += width - size_t(fits ? 0 : stride)) {
    const size_t stop = std::min(n_b, start + width);
    Encoding& out = windows.emplace_back();
    push_token(out, v.cls_id(), 0, -1, Offset{}, -1);
    push_pieces(out, s.a, s.a.size(), 0);
    push_token(out, v.sep_id(), 0, -1, Offset{}, -1);
    for (size_t i = start; i < stop; ++i) {
      const Piece& p = s.b[i];
      push_token(out, p.id, 1, 1, Offset{p.src_begin, p.src_end}, static_cast<int32_t>(p.word));
    }
    push_token(out, v.sep_id(), 1, -1, Offset{}, -1);
    if (stop == n_b) break;
  }
  return windows;
}

std::vector<int32_t> BertTokenizer::tokenize_ids(std::string_view text) const {
  Scratch& s = thread_scratch();
  text_to_pieces(text, lowercase_, *vocab_, s, s.a);
  std::vector<int32_t> ids;
  ids.reserve(s.a.size());
  for (const Piece& p : s.a) ids.push_back(p.id);
  return ids;
}

std::vector<Encoding> BertTokenizer::encode_batch(const std::vector<std::string_view>& a,
                                                  const std::vector<std::string_view>& b,
                                                  const EncodeOptions& options, int threads) const {
  const bool pairs = !b.empty();
  if (pairs && b.size() != a.size())
    engine::fail("encode_batch: ", a.size(), " first texts but ", b.size(), " second texts");
  std::vector<Encoding> out(a.size());
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Small chunks handed out from a counter keep threads busy when lengths vary; every result is
  // written to its own slot, so the output never depends on scheduling.
  constexpr size_t kChunk = 64;
  const size_t n_chunks = (a.size() + kChunk - 1) / kChunk;
  threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(threads), std::max<size_t>(1, n_chunks)));
  std::atomic<size_t> next_chunk{0};
  std::vector<std::exception_ptr> errors(a.size());
  auto work = [&] {
    for (size_t c; (c = next_chunk.fetch_add(1)) < n_chunks;) {
      const size_t end = std::min(a.size(), (c + 1) * kChunk);
      for (size_t i = c * kChunk; i < end; ++i) {
        try {
          encode(a[i], pairs ? std::optional<std::string_view>(b[i]) : std::nullopt, options, out[i]);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  // The first failing text decides the error, whatever thread met it first.
  for (size_t i = 0; i < errors.size(); ++i) {
    if (!errors[i]) continue;
    try {
      std::rethrow_exception(errors[i]);
    } catch (const engine::Error& e) {
      engine::fail("text ", i, ": ", e.what());
    }
  }
  return out;
}

std::optional<bool> read_do_lower_case(const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer_config.json";
  std::ifstream in(path);
  if (!in) return std::nullopt;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    engine::fail("'", path, "' is not valid JSON: ", e.what());
  }
  if (!config.is_object()) engine::fail("'", path, "' is not a JSON object");
  auto get_bool = [&](const char* key) -> std::optional<bool> {
    auto it = config.find(key);
    if (it == config.end() || it->is_null()) return std::nullopt;
    if (!it->is_boolean()) engine::fail("'", path, "': ", key, " must be true or false");
    return it->get<bool>();
  };
  const std::optional<bool> lower = get_bool("do_lower_case");
  // BERT strips accents exactly when it lowercases; other combinations are not implemented.
  const std::optional<bool> strip = get_bool("strip_accents");
  if (strip && *strip != lower.value_or(true))
    engine::fail("'", path, "': strip_accents different from do_lower_case is not supported");
  const std::optional<bool> chinese = get_bool("tokenize_chinese_chars");
  if (chinese && !*chinese)
    engine::fail("'", path, "': tokenize_chinese_chars = false is not supported");
  return lower;
}

std::vector<Offset> char_offsets(std::string_view text, const std::vector<Offset>& byte_offsets) {
  // char_at[i]: number of characters before byte i (only character starts are ever asked).
  std::vector<uint32_t> char_at(text.size() + 1, 0);
  const auto* begin = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = begin + text.size();
  uint32_t chars = 0;
  for (const unsigned char* p = begin; p < end;) {
    uint32_t cp;
    const size_t n = decode_utf8(p, end, &cp);
    for (size_t k = 0; k < n; ++k) char_at[static_cast<size_t>(p - begin) + k] = chars;
    ++chars;
    p += n;
  }
  char_at[text.size()] = chars;
  std::vector<Offset> out;
  out.reserve(byte_offsets.size());
  for (const Offset& o : byte_offsets) {
    if (o.begin == 0 && o.end == 0) {
      out.push_back(o);
      continue;
    }
    ENGINE_CHECK(o.end <= text.size() && o.begin <= o.end, "offset [", o.begin, ", ", o.end,
                 ") outside a text of ", text.size(), " bytes");
    out.push_back(Offset{char_at[o.begin], char_at[o.end]});
  }
  return out;
}

}  // namespace tokenizer
