// The training batches of one rank of a data-parallel run: a function of (seed, epoch, rank, world).
//
// Order. The per-rank batches are the single-process plan of the Batcher (engine/data/batcher.h:
// the epoch's shuffle by seed + epoch, cut into batches of at most --batch-size sequences and
// --max-tokens tokens). Global micro-batch k of an epoch is the W consecutive batches
// plan[k*W] .. plan[k*W + W-1]; rank r trains on plan[k*W + r]. When the epoch's last global
// micro-batch has fewer than W batches, the ranks past its end get none (they add zero gradient and
// zero rows, and still take part in every collective); the next micro-batch starts the next epoch.
// So, without a token budget and without length grouping, W ranks of batch B see, micro-batch by
// micro-batch, exactly the examples one process of batch W*B sees, in the same order: rank 0's
// shard first, then rank 1's, ... The place of an example in its global batch (token and sequence
// offsets of this rank's shard) is returned with it, so that its dropout masks do not depend on
// which rank drew it.
//
// State. The Batcher's cursor (epoch, next plan batch) is the state, and it counts per-rank
// batches, not steps: a checkpoint resumes with another world size at the same place in the epoch
// (the trainer converts the cursor when the per-rank batch changes with it, the global batch staying).
#pragma once
#include <cstdint>

#include "engine/data/batcher.h"

namespace engine::dist {

struct Shard {
  PackedBatch batch;             // empty (sequences == 0) when this rank has none this micro-batch
  int64_t token_offset = 0;      // tokens of ranks 0 .. rank-1 in this global micro-batch
  int64_t sequence_offset = 0;   // their sequences
  int64_t global_sequences = 0;  // of the whole global micro-batch
  int64_t global_tokens = 0;
};

class ShardedBatches {
 public:
  // batcher: the single-process plan; it must outlive this and nobody else may move its cursor.
  ShardedBatches(Batcher& batcher, int rank, int world);
  // This rank's shard of the next global micro-batch; the cursor moves past all W batches.
  Shard next();
  // Global micro-batches of an epoch.
  int64_t global_batches(int64_t epoch) const;

 private:
  Batcher& batcher_;
  int rank_, world_;
};

}  // namespace engine::dist
