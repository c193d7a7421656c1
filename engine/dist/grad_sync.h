// The gradient all-reduce of a data-parallel step, optionally overlapped with the backward pass.
//
// Buckets. The flat gradient buffer is cut into slices by encoder layer: bucket i holds the elements
// of every parameter named bert.encoder.layer.<i>.* (weights and biases sit in two groups of the
// buffer, so a bucket is up to a few ranges), plus the alignment gaps after them; one last bucket
// holds the rest (embeddings, pooler, head, and anything another name pattern adds). Every element
// is in exactly one bucket.
// Overlap (on by default; --dist-overlap off for measurement): during the backward pass of the
// step's last micro-batch, when the graph node layer.<i>.attention (the first node of layer i, so the
// last of its backward) has been queued, the sums of the buckets from the top layer down to i start,
// in that fixed order (buckets in reverse layer order, as PyTorch DDP), while backward goes on below.
// finish() starts what has not started (the rest bucket last; everything, on a rank whose shard of
// the last micro-batch was empty) and waits. Every rank starts the same buckets in the same order,
// which MPI and NCCL require. Without overlap, finish() sums the whole buffer in one call.
// The sum of each element is the same either way (a bucket is only a slice), so overlap changes
// when the numbers arrive, not which numbers.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/dist/world.h"
#include "engine/model/bert.h"

namespace engine::dist {

struct GradBucket {
  std::string after_node;  // graph node whose backward makes it final; empty: the rest, at finish()
  std::vector<std::pair<int64_t, int64_t>> ranges;  // [begin, end) element ranges of the flat buffer
};

// The buckets of a parameter store, in the order they start (top layer first, the rest last).
std::vector<GradBucket> plan_grad_buckets(const ParamStore& params);

class GradientSync {
 public:
  GradientSync(World& world, BertModel& model, bool overlap);
  ~GradientSync();
  // Before the backward pass of the step's last micro-batch: buckets start as their layers finish.
  void arm();
  // After it, on every rank: starts what has not started and waits until the buffer is summed.
  void finish();

 private:
  void on_backward(const std::string& node);
  void start_through(size_t bucket);

  World& world_;
  BertModel& model_;
  bool overlap_;
  std::vector<GradBucket> buckets_;
  size_t started_ = 0;  // buckets [0, started_) have started this step
};

}  // namespace engine::dist
