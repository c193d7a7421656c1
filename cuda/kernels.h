// Host entry points of the hand-written kernels, one group per .cu file. Raw device pointers and
// sizes only: CudaBackend (cuda_backend.cu) validates the Tensors and calls these, and the benches
// may call them directly. Every launcher is asynchronous on `stream`, allocates nothing, and
// takes any scratch it needs from the caller (see the *_scratch_bytes functions).
// Activations are `Act` (f32 or bf16 storage); statistics, losses and parameter gradients are f32.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "engine/philox.h"
#include "engine/tensor.h"

namespace engine::cuda {

// ---- fill_cast.cu ----
void fill(void* x, DType dtype, int64_t n, float value, cudaStream_t stream);
// dst and src f32 / bf16 / f16 (i32 only when both are i32: a copy).
void cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n, cudaStream_t stream);
// dst[i] += src[i], f32.
void add_inplace_f32(float* dst, const float* src, int64_t n, cudaStream_t stream);

// ---- dropout.cu: y = x * keep(i) / (1 - p) over a flat tensor; y may alias x ----
void dropout(DType act, void* y, const void* x, int64_t n, float p, DropoutRng rng, cudaStream_t stream);

// ---- reduce.cu: deterministic column sums ----
// out[c] (+)= sum_r in[r * ld + c] for c < cols, summed in a fixed order (accumulate: add to out).
void column_sum_f32(float* out, const float* in, int64_t rows, int64_t cols, int64_t ld, bool accumulate,
                    cudaStream_t stream);
// out[c] += sum_r x[r, c] of an act matrix [rows, cols]: per-chunk partials then column_sum_f32.
size_t column_sum_act_scratch_bytes(int64_t rows, int64_t cols);
void column_sum_act_accumulate(float* out, DType act, const void* x, int64_t rows, int64_t cols, void* scratch,
                               cudaStream_t stream);

// ---- layernorm.cu ----
// Largest hidden size the register-resident row kernels take (one warp per row).
int64_t layernorm_max_hidden(DType act);
void add_dropout_layernorm_forward(DType act, void* y, void* s, float* mean, float* rstd, const void* branch,
                                   const void* residual, const void* gamma, const void* beta, int64_t T, int64_t H,
                                   float eps, float p, DropoutRng rng, cudaStream_t stream);
size_t layernorm_backward_scratch_bytes(int64_t T, int64_t H);
// ds (act) = layernorm backward; d_residual = ds; d_branch = dropout_backward(ds); dgamma, dbeta +=.
void add_dropout_layernorm_backward(DType act, void* d_branch, void* d_residual, float* dgamma, float* dbeta,
                                    const void* dy, const void* s, const float* mean, const float* rstd,
                                    const void* gamma, int64_t T, int64_t H, float p, DropoutRng rng, void* scratch,
                                    cudaStream_t stream);
// The same backward writing ds in f32 (for the embedding tables) and no dropout.
void layernorm_backward_f32_ds(DType act, float* ds, float* dgamma, float* dbeta, const void* dy, const void* s,
                               const float* mean, const float* rstd, const void* gamma, int64_t T, int64_t H,
                               void* scratch, cudaStream_t stream);

// ---- embeddings.cu ----
void embeddings_forward(DType act, void* y, void* s, float* mean, float* rstd, const int32_t* ids,
                        const int32_t* pos_ids, const int32_t* type_ids, const void* word, int64_t word_rows,
                        const void* pos, int64_t pos_rows, const void* type, int64_t type_rows, const void* gamma,
                        const void* beta, int64_t T, int64_t H, float eps, cudaStream_t stream);
size_t embeddings_backward_scratch_bytes(int64_t T, int64_t H, int64_t word_rows, int64_t pos_rows,
                                         int64_t type_rows);
void embeddings_backward(DType act, float* dword, int64_t word_rows, float* dpos, int64_t pos_rows, float* dtype,
                         int64_t type_rows, float* dgamma, float* dbeta, const void* dy, const void* s,
                         const float* mean, const float* rstd, const void* gamma, const int32_t* ids,
                         const int32_t* pos_ids, const int32_t* type_ids, int64_t T, int64_t H, void* scratch,
                         size_t scratch_bytes, cudaStream_t stream);

// ---- gelu.cu: exact (erf) GELU, the Hugging Face "gelu" ----
void gelu_forward(DType act, void* y, const void* pre, int64_t n, cudaStream_t stream);
// dx *= gelu'(pre), in place.
void gelu_backward_inplace(DType act, void* dx, const void* pre, int64_t n, cudaStream_t stream);

// ---- pooler.cu ----
void gather_rows(DType act, void* out, const void* x, const int32_t* rows, int64_t B, int64_t C, int64_t x_rows,
                 cudaStream_t stream);
void scatter_add_rows(DType act, void* dx, const void* dout, const int32_t* rows, int64_t B, int64_t C,
                      int64_t x_rows, cudaStream_t stream);
void tanh_forward(DType act, void* y, const void* x, int64_t n, cudaStream_t stream);
void tanh_backward(DType act, void* dx, const void* dy, const void* y, int64_t n, cudaStream_t stream);

// ---- losses.cu ----
// dlogits may be null (losses only) and may alias logits.
void cross_entropy(DType act, float* losses, void* dlogits, const void* logits, const int32_t* labels, int64_t N,
                   int64_t C, float scale, cudaStream_t stream);
void mse(DType act, float* losses, void* dpred, const void* pred, const float* target, int64_t N, float scale,
         cudaStream_t stream);

// ---- span_loss.cu: question answering's start/end cross-entropy per packed sequence ----
// logits, dlogits act [T, 2] (dlogits may be null: losses only; never aliasing logits);
// cu_seqlens i32 [B+1]; positions i32 [B, 2]; losses f32 [B, 2].
void span_cross_entropy(DType act, float* losses, void* dlogits, const void* logits, const int32_t* cu_seqlens,
                        const int32_t* positions, int64_t B, int64_t max_seqlen, float scale_start, float scale_end,
                        cudaStream_t stream);

// ---- adamw.cu ----
size_t global_norm_scratch_bytes();
void global_norm(float* norm, const float* grads, int64_t n, void* scratch, cudaStream_t stream);
struct AdamWLaunch {
  float lr, beta1, beta2, eps, weight_decay;
  float inv_bias1, inv_sqrt_bias2;  // 1 / (1 - b1^t), 1 / sqrt(1 - b2^t), from the host in double
  float max_grad_norm;              // <= 0: no clipping (norm not read)
  int64_t decay_end;
};
void adamw(float* params, const float* grads, float* m, float* v, void* working, DType working_dtype,
           const float* norm, int64_t n, const AdamWLaunch& args, cudaStream_t stream);

}  // namespace engine::cuda
