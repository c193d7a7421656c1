// TimedBackend: a Backend that forwards every call to another backend and, while a timer is
// armed, records a timestamp after each op (and at each piece boundary an op reports, such as the
// GELU after a linear layer's product). The step bench builds the model on it, so the same model
// code yields a per-op breakdown on the CPU (host clock) and on the GPU (CUDA events between ops).
//
// Charging rule: an interval runs from the previous timestamp to this one, so launch gaps and host
// work between ops are charged to the op that waited for them. The intervals of a step therefore
// sum exactly to the instrumented step time, and each lands in one category:
//   matmuls    linear_*, lora_* (the product and its bias; on the GPU also the bias-gradient reduction)
//   attention  attention_*
//   layernorm  embeddings_*, add_dropout_layernorm_* (the residual and dropout fused in them)
//   gelu       the "gelu" piece of linear_forward / linear_backward_dx
//   loss       cross_entropy, mse, span_cross_entropy
//   optimizer  global_norm, adamw, and every op run while the optimizer phase is on (zeroing grads)
//   other      everything else: dropout, gather/scatter of [CLS] rows, tanh, fill, cast, copies,
//              the batch upload
// Unarmed, each call costs one extra virtual call; the untimed step bench runs through it too.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace engine::perf {

enum class OpCategory : uint8_t { attention, matmuls, layernorm, gelu, loss, optimizer, other };
constexpr int kOpCategories = 7;
const char* category_name(OpCategory c);  // "attention", "matmuls", ... as in the bench's JSON
// Category of an op (or piece) name, by the rule above (the optimizer phase aside).
OpCategory categorize_op(const std::string& name);

class TimedBackend final : public Backend, private OpPieceListener {
 public:
  // Listens to the inner backend's op pieces for its lifetime.
  explicit TimedBackend(Backend& inner) : inner_(inner) { inner_.set_op_piece_listener(this); }
  ~TimedBackend() override;

  Backend& inner() { return inner_; }
  // Ops (and pieces) called since construction: sizes the timer of an instrumented step.
  int64_t intervals_called() const { return intervals_called_; }

  // One timed interval.
  struct Interval {
    const char* name;  // op or piece name (string literals)
    OpCategory category;
    int mark;          // the interval ends at this mark of the timer and starts at mark - 1
  };
  // Records mark 0 now; from here on each op and piece boundary takes the next mark. The timer
  // must have enough marks for the step (intervals_called() of a plain step, plus one).
  void arm(StepTimer* timer);
  // Stops recording; the intervals of the armed span stay readable until the next arm().
  void disarm();
  const std::vector<Interval>& intervals() const { return intervals_; }
  int marks_used() const { return next_mark_; }
  // While on, every op is charged to the optimizer (zero_grads, global norm, AdamW).
  void set_optimizer_phase(bool on) { optimizer_phase_ = on; }

  // ---- Backend: forwarded ----
  Device device() const override { return inner_.device(); }
  std::string name() const override { return inner_.name(); }
  bool supports(DType act) const override { return inner_.supports(act); }
  void* allocate(size_t bytes) override { return inner_.allocate(bytes); }
  void release(void* p) override { inner_.release(p); }
  void copy_from_host(Tensor dst, const void* src) override;
  void copy_to_host(void* dst, Tensor src) override;
  void copy(Tensor dst, Tensor src) override;
  void synchronize() override { inner_.synchronize(); }
  double peak_tflops(DType act) const override { return inner_.peak_tflops(act); }
  void range_push(const char* name) override { inner_.range_push(name); }
  void range_pop() override { inner_.range_pop(); }
  std::unique_ptr<StepTimer> make_timer(int marks) override { return inner_.make_timer(marks); }
  bool can_capture() const override { return inner_.can_capture(); }
  void begin_capture() override { inner_.begin_capture(); }
  std::unique_ptr<CapturedWork> end_capture() override { return inner_.end_capture(); }
  void profiler_start() override { inner_.profiler_start(); }
  void profiler_stop() override { inner_.profiler_stop(); }
  std::string device_label() const override { return inner_.device_label(); }
  int64_t device_bytes_in_use() const override { return inner_.device_bytes_in_use(); }
  size_t scratch_bytes() const override { return inner_.scratch_bytes(); }

  void fill(Tensor x, float value) override;
  void cast(Tensor dst, Tensor src) override;
  void embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids, Tensor type_ids,
                          Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) override;
  void embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor s,
                           Tensor mean, Tensor rstd, Tensor gamma, Tensor ids, Tensor pos_ids,
                           Tensor type_ids) override;
  void add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch, Tensor residual,
                                     Tensor gamma, Tensor beta, float eps, float p, DropoutRng rng) override;
  void add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta, Tensor dy,
                                      Tensor s, Tensor mean, Tensor rstd, Tensor gamma, float p,
                                      DropoutRng rng) override;
  void dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) override;
  void dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) override;
  void linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) override;
  void linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x,
                          Tensor pre_of_x) override;
  void linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) override;
  void lora_forward(Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b, const LoraArgs& args, Activation act,
                    Tensor pre) override;
  void lora_backward(Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy, Tensor x, Tensor z, Tensor a,
                     Tensor b, const LoraArgs& args, Activation act_of_x, Tensor pre_of_x) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch, int heads,
                         float scale, float p, DropoutRng rng) override;
  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor cu_seqlens,
                          const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) override;
  void gather_rows(Tensor out, Tensor x, Tensor rows) override;
  void scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) override;
  void tanh_forward(Tensor y, Tensor x) override;
  void tanh_backward(Tensor dx, Tensor dy, Tensor y) override;
  void cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) override;
  void mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) override;
  void span_cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor cu_seqlens, Tensor positions,
                          const BatchShape& batch, float scale_start, float scale_end) override;
  void global_norm(Tensor norm, Tensor grads) override;
  void adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
             const AdamWArgs& args) override;

 private:
  // Brackets one forwarded op: begin() names the interval, end() closes it with a mark.
  void begin(const char* op);
  void end();
  void on_op_piece(const char* piece) override;  // OpPieceListener: the inner backend's op boundaries
  void close_interval();

  Backend& inner_;
  StepTimer* timer_ = nullptr;
  std::vector<Interval> intervals_;
  int next_mark_ = 0;
  const char* current_ = nullptr;
  int depth_ = 0;  // ops never nest through this backend, but be safe: only the outermost is charged
  bool optimizer_phase_ = false;
  int64_t intervals_called_ = 0;
};

}  // namespace engine::perf
