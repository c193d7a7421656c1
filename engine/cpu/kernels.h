// Numeric building blocks shared by several CPU ops: the one matrix product every linear layer
// uses, a deterministic row-parallel loop, layernorm of one row forward and backward, exact GELU
// and the dropout scale. All inputs and outputs f32; sums in double. Internal to engine/cpu/.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>

#include "engine/backend.h"
#include "engine/op_checks.h"

namespace engine {
namespace cpu {

// Runs fn(begin, end) over [0, n) split into contiguous chunks, one per thread (std::thread),
// when n * cost_per_item is large enough to pay for starting threads. Each item belongs to exactly
// one chunk, so results do not depend on the number of threads.
void parallel_rows(int64_t n, double cost_per_item, const std::function<void(int64_t, int64_t)>& fn);

// C[m, n] (+)= sum_k A[m, k] * B[n, k] (+ bias[n]): both operands are read along contiguous rows,
// every dot product is accumulated in double and rounded to f32 once. A: [M, K], B: [N, K],
// C: [M, N], all row-major and contiguous; bias [N] or nullptr. With accumulate the old C is added
// in double before the single rounding. Parallel over rows of C, deterministic.
void gemm_nt(float* C, const float* A, const float* B, const float* bias, int64_t M, int64_t N, int64_t K,
             bool accumulate);

// dst[c, r] = src[r, c] for src [rows, cols].
void transpose(float* dst, const float* src, int64_t rows, int64_t cols);

// Layernorm of one row of H values: biased variance, rstd = 1/sqrt(var + eps), statistics in
// double, stored as f32. y may alias nothing.
void layernorm_row_forward(float* y, float* mean, float* rstd, const float* s, const float* gamma,
                           const float* beta, int64_t H, float eps);
// ds = d(layernorm)/ds given dy and the saved statistics; dgamma_sum, dbeta_sum (double [H]) are
// accumulated (callers add them to the f32 parameter gradients once, after all rows).
// ds may alias dy.
void layernorm_row_backward(float* ds, double* dgamma_sum, double* dbeta_sum, const float* dy, const float* s,
                            float mean, float rstd, const float* gamma, int64_t H);

// The checked sizes of an attention call plus the host prefix sums its loops walk.
struct Packed {
  int64_t T, H, heads, d, B;
  const int32_t* cu;  // host prefix sums [B + 1]
};
// The values of cu_seqlens, beyond the shared contract's dtype and shape (attention.cpp): the CPU
// backends read them in host memory.
Packed check_cu_seqlens(const OpCheck& c, const AttentionShape& a, Tensor cu_seqlens, const BatchShape& batch);

constexpr double kSqrtHalf = 0.70710678118654752440;     // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;   // 1 / sqrt(2 pi)

// Exact (erf) GELU, as Hugging Face "gelu": 0.5 x (1 + erf(x / sqrt 2)).
inline float gelu(float x) { return float(0.5 * double(x) * (1.0 + std::erf(double(x) * kSqrtHalf))); }
// d gelu / dx = Phi(x) + x phi(x).
inline float gelu_grad(float x) {
  double xd = x;
  double cdf = 0.5 * (1.0 + std::erf(xd * kSqrtHalf));
  double pdf = std::exp(-0.5 * xd * xd) * kInvSqrt2Pi;
  return float(cdf + xd * pdf);
}

// Kept elements are multiplied by this (1 / (1 - p), rounded to f32 once so every backend scales
// by the same number).
inline float dropout_scale(float p) { return float(1.0 / (1.0 - double(p))); }

}  // namespace cpu
}  // namespace engine
