// The batcher: turns tokenized examples into packed batches (the only batch layout, see
// ARCHITECTURE.md): the sequences of a batch laid end to end, T tokens in all, with cu_seqlens[B+1]
// (prefix sums of the lengths) to keep them apart and pos_ids restarting at 0 in each sequence.
//
// Order. Training (shuffle on): each epoch e permutes the examples with a Fisher-Yates shuffle
// driven by std::mt19937_64 seeded with seed + e, drawing integers from the generator's raw 64-bit
// output by rejection (std::uniform_int_distribution is implementation-defined, so it would give
// other batches on another standard library). Evaluation (shuffle off): input order.
// Batches are filled greedily in that order, closing a batch before it would exceed batch_size
// sequences or max_tokens tokens (0 = no token limit).
// Length grouping (training only): as Hugging Face's group_by_length, the shuffled order is cut
// into mega-batches of 50 * batch_size examples, each sorted by length (longest first) and cut into
// batches, then the order of all the batches is shuffled with the same generator. Batches then hold
// similar lengths, which matters less here than for padded frameworks (no padding is computed), but
// keeps attention work per batch even and makes the padded comparison in benches fair.
//
// Batches of epoch e are a pure function of (seed, e, examples, options). The cursor (epoch, batch
// within the epoch) is the whole state needed to resume a run exactly.
// A Batcher caches the plan of one epoch inside const methods: use one Batcher from one thread.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace engine {

struct TokenizedExample {
  std::vector<int32_t> ids;           // [CLS] ... [SEP] (... [SEP]), as the tokenizer made them
  std::vector<int32_t> type_ids;      // same length as ids
  int32_t label = -1;                 // class id (classification), -1 when none
  float target = 0.0f;                // regression target
  std::vector<int32_t> token_labels;  // token classification: one per id, -100 where ignored; else empty
  int32_t span_start = -1, span_end = -1;  // question answering: the answer's tokens here, 0 ([CLS]) if absent
  int64_t index = 0;                  // the example's row in its dataset, carried into batches
};

struct PackedBatch {
  std::vector<int32_t> ids, type_ids, pos_ids;  // [T]
  std::vector<int32_t> cu_seqlens;              // [B+1], cu_seqlens[0] = 0, cu_seqlens[B] = T
  std::vector<int32_t> cls_rows;                // [B], == cu_seqlens[0..B-1]: the [CLS] row of each sequence
  std::vector<int32_t> labels;                  // [B]
  std::vector<float> targets;                   // [B]
  std::vector<int32_t> token_labels;            // [T] when the examples have token labels, else empty
  std::vector<int32_t> span_positions;          // [B, 2] span_start, span_end of each sequence
  std::vector<int64_t> example_index;           // [B] TokenizedExample::index of each sequence
  int64_t tokens = 0, sequences = 0, max_seqlen = 0;
};

// Packs the examples at the given positions, in that order, into one batch.
PackedBatch pack_batch(const std::vector<TokenizedExample>& examples, const std::vector<int64_t>& positions);

struct BatcherOptions {
  int64_t batch_size = 32;        // at most this many sequences per batch
  int64_t max_tokens = 0;         // at most this many tokens per batch (0 = no limit)
  bool shuffle = true;            // false: input order (evaluation)
  bool group_by_length = false;   // with shuffle: length-grouped batches (see above)
  uint64_t seed = 42;
};

// Where the batcher is: batch `batch` of epoch `epoch` comes next. seed and examples are recorded
// so that restoring into a batcher over other data or another seed is an error, not a quiet change.
struct BatcherState {
  int64_t epoch = 0;
  int64_t batch = 0;
  uint64_t seed = 0;
  int64_t examples = 0;
};

class Batcher {
 public:
  // Takes the examples (move them in). Throws on an empty set, an example without tokens, a
  // type_ids/token_labels length that differs from ids, some examples with token labels and some
  // without, or an example longer than max_tokens.
  Batcher(std::vector<TokenizedExample> examples, BatcherOptions options);

  // The batch at the cursor; then the cursor moves on (to batch 0 of the next epoch after the last).
  PackedBatch next();
  // Batch b of epoch e, without moving the cursor.
  PackedBatch batch(int64_t epoch, int64_t b) const;
  // Example positions (into examples()) of every batch of an epoch, in batch order.
  std::vector<std::vector<int64_t>> epoch_plan(int64_t epoch) const;
  int64_t num_batches(int64_t epoch) const;
  // Example positions of batch b of an epoch (the epoch's plan is cached, as for batch()).
  const std::vector<int64_t>& batch_positions(int64_t epoch, int64_t b) const;

  BatcherState state() const;
  // Continues exactly where state() was taken. Throws if the state belongs to another seed or
  // another number of examples, or points past the end of its epoch.
  void restore(const BatcherState& state);

  const std::vector<TokenizedExample>& examples() const { return examples_; }
  const BatcherOptions& options() const { return options_; }

 private:
  std::vector<TokenizedExample> examples_;
  BatcherOptions options_;
  int64_t epoch_ = 0, batch_ = 0;
  // The plan of the cursor's epoch, built once per epoch (a shuffle of 67k examples is cheap, but
  // not per step).
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<std::vector<int64_t>> cached_plan_;

  const std::vector<std::vector<int64_t>>& plan_for(int64_t epoch) const;
  std::vector<std::vector<int64_t>> cut_into_batches(const std::vector<int64_t>& order) const;
};

// A uniform integer in [0, n) from the generator's raw output, the same on every platform:
// draws below 2^64 mod n are rejected so that every residue is equally likely.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);
// Fisher-Yates with uniform_below: the same permutation everywhere for the same generator state.
void shuffle_positions(std::vector<int64_t>& v, std::mt19937_64& rng);

}  // namespace engine
