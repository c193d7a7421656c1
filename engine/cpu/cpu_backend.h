// The CPU reference backend ("cpu-ref"): plain, obviously-correct fp32 loops with double
// accumulation where it is cheap. Used by tests and gradient checks as the reference; the fast CPU
// backend (engine/cpu_fast/, "cpu") derives from it and overrides the hot ops, so an op it does not
// override runs this code. Activations
// are f32 only (any other activation dtype throws engine::Error). Ops are spread over
// engine/cpu/*.cpp by family: memory (allocation, copies, fill, cast), embeddings, layernorm
// (residual + dropout + layernorm), dropout, linear, attention, pooler (gather/scatter/tanh),
// losses, span_loss (question answering), adamw (+ global_norm); kernels.* hold the shared numeric pieces (the matrix product,
// layernorm rows, GELU). Each op first checks its arguments with the contract both backends share
// (engine/op_checks.h).
// CPU specifics: "device" memory is host memory, so cu_seqlens, ids and labels are read directly,
// and their values are checked too (ids and rows inside their tables, labels below the class
// count, cu_seqlens consistent with the batch); cross_entropy and mse accept an empty gradient
// tensor (losses only, for evaluation).
// Every op is deterministic: the same inputs give bitwise the same outputs, whatever the thread count.
#pragma once
#include "engine/backend.h"

namespace engine {

class CpuBackend : public Backend {
 public:
  Device device() const override;
  std::string name() const override;
  bool supports(DType act) const override;
  void* allocate(size_t bytes) override;
  void release(void* p) override;
  void copy_from_host(Tensor dst, const void* src) override;
  void copy_to_host(void* dst, Tensor src) override;
  void copy(Tensor dst, Tensor src) override;
  void synchronize() override;
  void fill(Tensor x, float value) override;
  void cast(Tensor dst, Tensor src) override;
  void embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids, Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) override;
  void embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids, Tensor pos_ids, Tensor type_ids) override;
  void add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch, Tensor residual, Tensor gamma, Tensor beta, float eps, float p, DropoutRng rng) override;
  void add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, float p, DropoutRng rng) override;
  void dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) override;
  void dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) override;
  void linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) override;
  void linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x, Tensor pre_of_x) override;
  void linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) override;
  void lora_forward(Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b, const LoraArgs& args, Activation act,
                    Tensor pre) override;
  void lora_backward(Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy, Tensor x, Tensor z, Tensor a,
                     Tensor b, const LoraArgs& args, Activation act_of_x, Tensor pre_of_x) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) override;
  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) override;
  void gather_rows(Tensor out, Tensor x, Tensor rows) override;
  void scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) override;
  void tanh_forward(Tensor y, Tensor x) override;
  void tanh_backward(Tensor dx, Tensor dy, Tensor y) override;
  void cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) override;
  void mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) override;
  void span_cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor cu_seqlens, Tensor positions, const BatchShape& batch, float scale_start, float scale_end) override;
  void global_norm(Tensor norm, Tensor grads) override;
  void adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm, const AdamWArgs& args) override;
};

}  // namespace engine
