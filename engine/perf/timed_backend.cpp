// TimedBackend (timed_backend.h): forwarding, and the marks that bracket each op while armed.
#include "engine/perf/timed_backend.h"

#include "engine/error.h"

namespace engine::perf {

const char* category_name(OpCategory c) {
  switch (c) {
    case OpCategory::attention: return "attention";
    case OpCategory::matmuls: return "matmuls";
    case OpCategory::layernorm: return "layernorm";
    case OpCategory::gelu: return "gelu";
    case OpCategory::loss: return "loss";
    case OpCategory::optimizer: return "optimizer";
    case OpCategory::other: return "other";
  }
  return "other";
}

OpCategory categorize_op(const std::string& name) {
  auto starts = [&](const char* prefix) { return name.rfind(prefix, 0) == 0; };
  if (name == "gelu") return OpCategory::gelu;
  if (starts("linear") || starts("lora")) return OpCategory::matmuls;
  if (starts("attention")) return OpCategory::attention;
  if (starts("embeddings") || name.find("layernorm") != std::string::npos) return OpCategory::layernorm;
  if (name == "cross_entropy" || name == "mse" || name == "span_cross_entropy") return OpCategory::loss;
  if (name == "adamw" || name == "global_norm") return OpCategory::optimizer;
  return OpCategory::other;
}

TimedBackend::~TimedBackend() { inner_.set_op_piece_listener(nullptr); }

void TimedBackend::arm(StepTimer* timer) {
  ENGINE_CHECK(timer && timer->size() > 0, "TimedBackend::arm needs a timer with marks");
  timer_ = timer;
  intervals_.clear();
  next_mark_ = 0;
  depth_ = 0;
  timer_->mark(next_mark_++);
}

void TimedBackend::disarm() { timer_ = nullptr; }

void TimedBackend::begin(const char* op) {
  if (depth_++ > 0) return;
  current_ = op;
}

void TimedBackend::end() {
  if (--depth_ > 0) return;
  close_interval();
}

void TimedBackend::on_op_piece(const char* piece) {
  if (depth_ == 0) return;  // a piece outside any op of ours: nothing to split
  close_interval();
  current_ = piece;
}

void TimedBackend::close_interval() {
  ++intervals_called_;
  if (!timer_) return;
  ENGINE_CHECK(next_mark_ < timer_->size(), "step timer has ", timer_->size(),
               " marks, too few for the ops of this step (size it from a plain step's intervals_called())");
  const OpCategory category = optimizer_phase_ ? OpCategory::optimizer : categorize_op(current_);
  timer_->mark(next_mark_);
  intervals_.push_back(Interval{current_, category, next_mark_});
  ++next_mark_;
}

// ---- forwarded ops: each one bracketed ----

// Runs `call` as the op `op_name`; end() also runs when the op throws, so depth stays balanced.
#define TIMED_OP(op_name, call)   \
  do {                            \
    begin(op_name);               \
    try {                         \
      call;                       \
    } catch (...) {               \
      --depth_;                   \
      throw;                      \
    }                             \
    end();                        \
  } while (0)

void TimedBackend::copy_from_host(Tensor dst, const void* src) { TIMED_OP("copy_from_host", inner_.copy_from_host(dst, src)); }
void TimedBackend::copy_to_host(void* dst, Tensor src) { TIMED_OP("copy_to_host", inner_.copy_to_host(dst, src)); }
void TimedBackend::copy(Tensor dst, Tensor src) { TIMED_OP("copy", inner_.copy(dst, src)); }
void TimedBackend::fill(Tensor x, float value) { TIMED_OP("fill", inner_.fill(x, value)); }
void TimedBackend::cast(Tensor dst, Tensor src) { TIMED_OP("cast", inner_.cast(dst, src)); }

void TimedBackend::embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids,
                                      Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma,
                                      Tensor beta, float eps) {
  TIMED_OP("embeddings_forward",
           inner_.embeddings_forward(y, s, mean, rstd, ids, pos_ids, type_ids, word, pos, type, gamma, beta, eps));
}

void TimedBackend::embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta,
                                       Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids,
                                       Tensor pos_ids, Tensor type_ids) {
  TIMED_OP("embeddings_backward", inner_.embeddings_backward(dword, dpos, dtype, dgamma, dbeta, dy, s, mean, rstd,
                                                             gamma, ids, pos_ids, type_ids));
}

void TimedBackend::add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch,
                                                 Tensor residual, Tensor gamma, Tensor beta, float eps, float p,
                                                 DropoutRng rng) {
  TIMED_OP("add_dropout_layernorm_forward",
           inner_.add_dropout_layernorm_forward(y, s, mean, rstd, branch, residual, gamma, beta, eps, p, rng));
}

void TimedBackend::add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta,
                                                  Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma,
                                                  float p, DropoutRng rng) {
  TIMED_OP("add_dropout_layernorm_backward", inner_.add_dropout_layernorm_backward(d_branch, d_residual, dgamma, dbeta,
                                                                                   dy, s, mean, rstd, gamma, p, rng));
}

void TimedBackend::dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) {
  TIMED_OP("dropout_forward", inner_.dropout_forward(y, x, p, rng));
}
void TimedBackend::dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) {
  TIMED_OP("dropout_backward", inner_.dropout_backward(dx, dy, p, rng));
}

void TimedBackend::linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) {
  TIMED_OP("linear_forward", inner_.linear_forward(y, x, w, b, act, pre));
}
void TimedBackend::linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x,
                                      Tensor pre_of_x) {
  TIMED_OP("linear_backward_dx", inner_.linear_backward_dx(dx, dy, w, accumulate, act_of_x, pre_of_x));
}
void TimedBackend::linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) {
  TIMED_OP("linear_backward_dw", inner_.linear_backward_dw(dw, db, dy, x));
}
void TimedBackend::lora_forward(Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b, const LoraArgs& args,
                                Activation act, Tensor pre) {
  TIMED_OP("lora_forward", inner_.lora_forward(y, z, u, x, a, b, args, act, pre));
}
void TimedBackend::lora_backward(Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy, Tensor x, Tensor z,
                                 Tensor a, Tensor b, const LoraArgs& args, Activation act_of_x, Tensor pre_of_x) {
  TIMED_OP("lora_backward", inner_.lora_backward(dx, da, db, dz, u, dy, x, z, a, b, args, act_of_x, pre_of_x));
}

void TimedBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                     int heads, float scale, float p, DropoutRng rng) {
  TIMED_OP("attention_forward", inner_.attention_forward(out, lse, qkv, cu_seqlens, batch, heads, scale, p, rng));
}
void TimedBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                      Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p,
                                      DropoutRng rng) {
  TIMED_OP("attention_backward",
           inner_.attention_backward(dqkv, dout, qkv, out, lse, cu_seqlens, batch, heads, scale, p, rng));
}

void TimedBackend::gather_rows(Tensor out, Tensor x, Tensor rows) { TIMED_OP("gather_rows", inner_.gather_rows(out, x, rows)); }
void TimedBackend::scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) {
  TIMED_OP("scatter_add_rows", inner_.scatter_add_rows(dx, dout, rows));
}
void TimedBackend::tanh_forward(Tensor y, Tensor x) { TIMED_OP("tanh_forward", inner_.tanh_forward(y, x)); }
void TimedBackend::tanh_backward(Tensor dx, Tensor dy, Tensor y) { TIMED_OP("tanh_backward", inner_.tanh_backward(dx, dy, y)); }

void TimedBackend::cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) {
  TIMED_OP("cross_entropy", inner_.cross_entropy(losses, dlogits, logits, labels, scale));
}
void TimedBackend::mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) {
  TIMED_OP("mse", inner_.mse(losses, dpred, pred, target, scale));
}
void TimedBackend::span_cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor cu_seqlens,
                                      Tensor positions, const BatchShape& batch, float scale_start, float scale_end) {
  TIMED_OP("span_cross_entropy",
           inner_.span_cross_entropy(losses, dlogits, logits, cu_seqlens, positions, batch, scale_start, scale_end));
}

void TimedBackend::global_norm(Tensor norm, Tensor grads) { TIMED_OP("global_norm", inner_.global_norm(norm, grads)); }
void TimedBackend::adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                         const AdamWArgs& args) {
  TIMED_OP("adamw", inner_.adamw(params, grads, m, v, working, norm, args));
}

#undef TIMED_OP

}  // namespace engine::perf
