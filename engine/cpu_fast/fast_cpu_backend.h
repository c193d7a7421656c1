// The fast CPU backend ("cpu", the default without a GPU). It derives from the plain-loop reference
// (engine/cpu/, "cpu-ref") and overrides the ops a fine-tune step spends its time in:
//   - linear layers: matrix products through OpenBLAS (sgemm), bias and exact GELU fused in
//     vectorised passes;
//   - attention on the packed layout, one (sequence, head) at a time with BLAS products on that
//     pair's rows only (no padding anywhere), softmax and dropout vectorised;
//   - embeddings + layernorm, residual + dropout + layernorm, dropout, AdamW and the global norm:
//     single fused passes per token (or per element), vectorised, threaded over tokens.
// Every op not overridden here (losses, pooler pieces, memory, casts) runs the reference's code,
// so an op added to Backend works here at reference speed until it gets a fast version.
//
// Arithmetic is f32 with f32 accumulation (the reference accumulates in double), so results agree
// with the reference to f32 rounding, not bitwise. Dropout masks come from the same Philox stream
// (engine/philox.h), element for element, so both backends drop the same elements.
//
// Threads: cpu_threads() (engine/cpu_fast/threads.h) threads of one pool for the per-token loops and
// for the matrix products (rows of each product split over the threads, one serial BLAS call each).
// Determinism: with the same inputs and thread count every op gives bitwise the same result; every
// reduction (layernorm parameter gradients, bias gradients, the global norm) runs over fixed blocks
// of rows combined in block order, so those do not depend on the thread count either. What can
// change with the thread count is the split of a product's rows into pieces (the BLAS may block a
// piece differently and so round the last bits of its products differently); and results differ
// between CPUs (AVX2+FMA code on x86-64-v3, SSE2 elsewhere, and the BLAS's kernels per CPU).
#pragma once
#include "engine/cpu/cpu_backend.h"

namespace engine {

class FastCpuBackend : public CpuBackend {
 public:
  // Makes the BLAS single-threaded: the backend splits products over its own threads.
  FastCpuBackend();
  std::string name() const override;
  std::string device_label() const override;

  void embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids, Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) override;
  void embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids, Tensor pos_ids, Tensor type_ids) override;
  void add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch, Tensor residual, Tensor gamma, Tensor beta, float eps, float p, DropoutRng rng) override;
  void add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, float p, DropoutRng rng) override;
  void dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) override;
  void dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) override;
  void linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) override;
  void linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x, Tensor pre_of_x) override;
  void linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) override;
  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) override;
  void global_norm(Tensor norm, Tensor grads) override;
  void adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm, const AdamWArgs& args) override;
};

}  // namespace engine
