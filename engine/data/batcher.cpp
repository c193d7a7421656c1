// The batcher (see batcher.h for the order and the limits).
#include "engine/data/batcher.h"

#include <algorithm>

#include "engine/error.h"

namespace engine {

uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  ENGINE_CHECK(n > 0, "uniform_below(0)");
  // 2^64 mod n, computed in 64-bit arithmetic as (2^64 - n) mod n. Draws below it are the
  // incomplete stretch that would make small residues more likely.
  const uint64_t threshold = (0 - n) % n;
  while (true) {
    const uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

void shuffle_positions(std::vector<int64_t>& v, std::mt19937_64& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

PackedBatch pack_batch(const std::vector<TokenizedExample>& examples, const std::vector<int64_t>& positions) {
  PackedBatch b;
  b.sequences = static_cast<int64_t>(positions.size());
  int64_t total = 0;
  for (int64_t p : positions) total += static_cast<int64_t>(examples[p].ids.size());
  ENGINE_CHECK(total <= INT32_MAX, "batch of ", total, " tokens does not fit 32-bit offsets");
  const bool token_labels = !positions.empty() && !examples[positions[0]].token_labels.empty();
  b.ids.reserve(total);
  b.type_ids.reserve(total);
  b.pos_ids.reserve(total);
  if (token_labels) b.token_labels.reserve(total);
  b.cu_seqlens.reserve(positions.size() + 1);
  b.cu_seqlens.push_back(0);
  for (int64_t p : positions) {
    const TokenizedExample& ex = examples[p];
    const int32_t len = static_cast<int32_t>(ex.ids.size());
    b.cls_rows.push_back(b.cu_seqlens.back());
    b.ids.insert(b.ids.end(), ex.ids.begin(), ex.ids.end());
    b.type_ids.insert(b.type_ids.end(), ex.type_ids.begin(), ex.type_ids.end());
    for (int32_t i = 0; i < len; ++i) b.pos_ids.push_back(i);
    if (token_labels) b.token_labels.insert(b.token_labels.end(), ex.token_labels.begin(), ex.token_labels.end());
    b.cu_seqlens.push_back(b.cu_seqlens.back() + len);
    b.labels.push_back(ex.label);
    b.targets.push_back(ex.target);
    b.span_positions.push_back(ex.span_start);
    b.span_positions.push_back(ex.span_end);
    b.example_index.push_back(ex.index);
    b.max_seqlen = std::max<int64_t>(b.max_seqlen, len);
  }
  b.tokens = total;
  return b;
}

Batcher::Batcher(std::vector<TokenizedExample> examples, BatcherOptions options)
    : examples_(std::move(examples)), options_(options) {
  ENGINE_CHECK(!examples_.empty(), "batcher: no examples");
  ENGINE_CHECK(options_.batch_size > 0, "batcher: batch size must be positive, got ", options_.batch_size);
  ENGINE_CHECK(options_.max_tokens >= 0, "batcher: max_tokens must be 0 (no limit) or positive, got ",
               options_.max_tokens);
  const bool token_labels = !examples_[0].token_labels.empty();
  for (size_t i = 0; i < examples_.size(); ++i) {
    const TokenizedExample& ex = examples_[i];
    ENGINE_CHECK(!ex.ids.empty(), "batcher: example ", ex.index, " has no tokens");
    ENGINE_CHECK(ex.type_ids.size() == ex.ids.size(), "batcher: example ", ex.index, " has ", ex.ids.size(),
                 " ids but ", ex.type_ids.size(), " type ids");
    ENGINE_CHECK(ex.token_labels.empty() != token_labels, "batcher: example ", ex.index,
                 token_labels ? " has no token labels" : " has token labels", " but example ", examples_[0].index,
                 token_labels ? " has" : " has none");
    ENGINE_CHECK(!token_labels || ex.token_labels.size() == ex.ids.size(), "batcher: example ", ex.index, " has ",
                 ex.ids.size(), " ids but ", ex.token_labels.size(), " token labels");
    ENGINE_CHECK(options_.max_tokens == 0 || int64_t(ex.ids.size()) <= options_.max_tokens, "batcher: example ",
                 ex.index, " has ", ex.ids.size(), " tokens, more than max_tokens ", options_.max_tokens,
                 " (truncate it or raise the limit)");
  }
}

// Greedy: an example joins the open batch unless that would pass either limit.
std::vector<std::vector<int64_t>> Batcher::cut_into_batches(const std::vector<int64_t>& order) const {
  std::vector<std::vector<int64_t>> batches;
  std::vector<int64_t> open;
  int64_t open_tokens = 0;
  for (int64_t p : order) {
    const int64_t len = static_cast<int64_t>(examples_[p].ids.size());
    const bool full = int64_t(open.size()) == options_.batch_size ||
                      (options_.max_tokens > 0 && open_tokens + len > options_.max_tokens);
    if (full && !open.empty()) {
      batches.push_back(std::move(open));
      open.clear();
      open_tokens = 0;
    }
    open.push_back(p);
    open_tokens += len;
  }
  if (!open.empty()) batches.push_back(std::move(open));
  return batches;
}

std::vector<std::vector<int64_t>> Batcher::epoch_plan(int64_t epoch) const {
  ENGINE_CHECK(epoch >= 0, "batcher: negative epoch ", epoch);
  const int64_t n = static_cast<int64_t>(examples_.size());
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (!options_.shuffle) return cut_into_batches(order);

  std::mt19937_64 rng(options_.seed + static_cast<uint64_t>(epoch));
  shuffle_positions(order, rng);
  if (!options_.group_by_length) return cut_into_batches(order);

  // Length grouping: sort each mega-batch longest first, batch it, then shuffle the batches.
  const int64_t mega = 50 * options_.batch_size;
  std::vector<std::vector<int64_t>> batches;
  for (int64_t start = 0; start < n; start += mega) {
    std::vector<int64_t> chunk(order.begin() + start, order.begin() + std::min(n, start + mega));
    std::stable_sort(chunk.begin(), chunk.end(),
                     [&](int64_t a, int64_t b) { return examples_[a].ids.size() > examples_[b].ids.size(); });
    for (auto& batch : cut_into_batches(chunk)) batches.push_back(std::move(batch));
  }
  std::vector<int64_t> batch_order(batches.size());
  for (size_t i = 0; i < batch_order.size(); ++i) batch_order[i] = static_cast<int64_t>(i);
  shuffle_positions(batch_order, rng);
  std::vector<std::vector<int64_t>> shuffled;
  shuffled.reserve(batches.size());
  for (int64_t i : batch_order) shuffled.push_back(std::move(batches[i]));
  return shuffled;
}

const std::vector<std::vector<int64_t>>& Batcher::plan_for(int64_t epoch) const {
  if (epoch != cached_epoch_) {
    cached_plan_ = epoch_plan(epoch);
    cached_epoch_ = epoch;
  }
  return cached_plan_;
}

int64_t Batcher::num_batches(int64_t epoch) const {
  // Without a token limit the count is the same every epoch (length grouping too: its mega-batches
  // are whole multiples of batch_size), so no epoch needs planning for it.
  if (options_.max_tokens == 0) {
    const int64_t n = static_cast<int64_t>(examples_.size());
    return (n + options_.batch_size - 1) / options_.batch_size;
  }
  return static_cast<int64_t>(plan_for(epoch).size());
}

const std::vector<int64_t>& Batcher::batch_positions(int64_t epoch, int64_t b) const {
  const auto& plan = plan_for(epoch);
  ENGINE_CHECK(b >= 0 && b < int64_t(plan.size()), "batcher: batch ", b, " of epoch ", epoch, " does not exist (",
               plan.size(), " batches)");
  return plan[b];
}

PackedBatch Batcher::batch(int64_t epoch, int64_t b) const { return pack_batch(examples_, batch_positions(epoch, b)); }

PackedBatch Batcher::next() {
  PackedBatch out = batch(epoch_, batch_);
  if (++batch_ == num_batches(epoch_)) {
    ++epoch_;
    batch_ = 0;
  }
  return out;
}

BatcherState Batcher::state() const {
  BatcherState s;
  s.epoch = epoch_;
  s.batch = batch_;
  s.seed = options_.seed;
  s.examples = static_cast<int64_t>(examples_.size());
  return s;
}

void Batcher::restore(const BatcherState& s) {
  ENGINE_CHECK(s.seed == options_.seed, "batcher: the saved data state has seed ", s.seed, ", this run has seed ",
               options_.seed, " (resume with the same seed)");
  ENGINE_CHECK(s.examples == int64_t(examples_.size()), "batcher: the saved data state is over ", s.examples,
               " examples, this run has ", examples_.size(), " (resume with the same data)");
  ENGINE_CHECK(s.epoch >= 0 && s.batch >= 0 && s.batch < num_batches(s.epoch), "batcher: the saved data state (epoch ",
               s.epoch, ", batch ", s.batch, ") is past the end of its epoch");
  epoch_ = s.epoch;
  batch_ = s.batch;
}

}  // namespace engine
