// A rank's share of each global micro-batch (the order is in sharded_batches.h).
#include "engine/dist/sharded_batches.h"

#include "engine/error.h"

namespace engine::dist {

ShardedBatches::ShardedBatches(Batcher& batcher, int rank, int world) : batcher_(batcher), rank_(rank), world_(world) {
  ENGINE_CHECK(world >= 1 && rank >= 0 && rank < world, "sharded batches: rank ", rank, " of ", world);
}

int64_t ShardedBatches::global_batches(int64_t epoch) const {
  return (batcher_.num_batches(epoch) + world_ - 1) / world_;
}

Shard ShardedBatches::next() {
  const BatcherState s = batcher_.state();
  const int64_t n = batcher_.num_batches(s.epoch);
  Shard out;
  for (int r = 0; r < world_ && s.batch + r < n; ++r) {
    int64_t tokens = 0;
    const std::vector<int64_t>& positions = batcher_.batch_positions(s.epoch, s.batch + r);
    for (int64_t p : positions) tokens += int64_t(batcher_.examples()[size_t(p)].ids.size());
    if (r < rank_) {
      out.token_offset += tokens;
      out.sequence_offset += int64_t(positions.size());
    }
    if (r == rank_) out.batch = pack_batch(batcher_.examples(), positions);
    out.global_tokens += tokens;
    out.global_sequences += int64_t(positions.size());
  }
  BatcherState after = s;
  after.batch += world_;
  if (after.batch >= n) {
    ++after.epoch;
    after.batch = 0;
  }
  batcher_.restore(after);
  return out;
}

}  // namespace engine::dist
