// Gradient buckets and their overlapped all-reduce (grad_sync.h).
#include "engine/dist/grad_sync.h"

#include <algorithm>
#include <map>

#include "engine/error.h"

namespace engine::dist {

namespace {

// The encoder layer a parameter belongs to, or -1.
int layer_of(const std::string& name) {
  const std::string prefix = "bert.encoder.layer.";
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  const size_t dot = name.find('.', prefix.size());
  const std::string digits = name.substr(prefix.size(), dot - prefix.size());
  if (digits.empty() || digits.size() > 6 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) return -1;
  return std::stoi(digits);
}

}  // namespace

std::vector<GradBucket> plan_grad_buckets(const ParamStore& params) {
  // Only trainable parameters have gradients: the buffer is their prefix (frozen ones, the base under
  // LoRA adapters, come after it).
  std::vector<const ParamInfo*> sorted;
  for (const ParamInfo& p : params.list())
    if (p.trainable) sorted.push_back(&p);
  std::sort(sorted.begin(), sorted.end(), [](const ParamInfo* a, const ParamInfo* b) { return a->offset < b->offset; });
  // Each element from a parameter's offset up to the next parameter's offset (its gap included)
  // goes with that parameter's layer; elements before the first parameter go to the rest.
  std::map<int, std::vector<std::pair<int64_t, int64_t>>> by_layer;  // -1: the rest
  auto add = [&](int layer, int64_t begin, int64_t end) {
    if (begin >= end) return;
    auto& r = by_layer[layer];
    if (!r.empty() && r.back().second == begin) r.back().second = end;
    else r.emplace_back(begin, end);
  };
  add(-1, 0, sorted.empty() ? params.trainable_size() : sorted.front()->offset);
  for (size_t i = 0; i < sorted.size(); ++i) {
    // Fused QKV parts may share storage (follows_previous): the later offset is never below the earlier.
    const int64_t end = i + 1 < sorted.size() ? sorted[i + 1]->offset : params.trainable_size();
    add(layer_of(sorted[i]->name), sorted[i]->offset, end);
  }
  std::vector<GradBucket> out;
  for (auto it = by_layer.rbegin(); it != by_layer.rend(); ++it) {
    if (it->first < 0) continue;
    out.push_back({"layer." + std::to_string(it->first) + ".attention", it->second});
  }
  if (by_layer.count(-1)) out.push_back({"", by_layer[-1]});
  return out;
}

GradientSync::GradientSync(World& world, BertModel& model, bool overlap)
    : world_(world), model_(model), overlap_(overlap && world.distributed()) {
  if (overlap_) buckets_ = plan_grad_buckets(model.params());
}

GradientSync::~GradientSync() { model_.set_after_backward({}); }

void GradientSync::arm() {
  if (!overlap_) return;
  model_.set_after_backward([this](const std::string& node) { on_backward(node); });
}

void GradientSync::on_backward(const std::string& node) {
  for (size_t b = started_; b < buckets_.size(); ++b)
    if (!buckets_[b].after_node.empty() && buckets_[b].after_node == node) start_through(b);
}

// Starts buckets [started_, last] in their fixed order: a bucket whose node came early waits for
// those before it, so every rank starts the same sequence.
void GradientSync::start_through(size_t last) {
  Tensor grads = model_.params().grads();
  for (; started_ <= last && started_ < buckets_.size(); ++started_)
    for (const auto& [begin, end] : buckets_[started_].ranges)
      world_.start_gradient_sum(grads.as<float>() + begin, end - begin, model_.backend().native_stream());
}

void GradientSync::finish() {
  if (!world_.distributed()) return;
  if (!overlap_) {
    world_.allreduce_gradients(model_.params().grads());
    return;
  }
  model_.set_after_backward({});
  if (!buckets_.empty()) start_through(buckets_.size() - 1);
  world_.wait_gradient_sums(model_.params().grads());
  started_ = 0;  // also for a rank that had no batch to arm for this step
}

}  // namespace engine::dist
