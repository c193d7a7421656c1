// Multi-head self-attention of the fast CPU backend on the packed layout, one (sequence, head)
// pair at a time: the pair's rows of q, k and v are read in place from qkv [T, 3H] (row stride 3H)
// by BLAS products, so no padding is ever touched and nothing is gathered.
//   forward   S = Q K^T (sgemm), per row: p = softmax(scale S), lse saved, p *= dropout mask;
//             O = P V (sgemm) written into out [T, H] at the head's columns
//   backward  S = Q K^T and dP = dO V^T (sgemm), per row: P = exp(scale S - lse) from the saved lse,
//             dP *= mask, D = sum P dP, dS = P (dP - D) scale, S <- P * mask;
//             dV = (P*mask)^T dO, dQ = dS K, dK = dS^T Q (sgemm) written into dqkv
// Same definitions as the reference (engine/cpu/attention.cpp), f32 arithmetic. Pairs are spread
// over threads (each pair computed whole by one thread with serial BLAS calls), so a
// pair's result does not depend on the thread count or on which thread ran it.
#include <algorithm>
#include <cmath>

#include "engine/cpu/kernels.h"
#include "engine/cpu_fast/blas.h"
#include "engine/cpu_fast/fast_cpu_backend.h"
#include "engine/cpu_fast/threads.h"
#include "engine/cpu_fast/vec_math.h"
#include "engine/op_checks.h"

namespace engine {

namespace {

using cpu::Packed;
using fastcpu::sgemm_serial;

// Dropout of attention probabilities: the multipliers of one query row's L keys.
struct ProbDropout {
  DropoutRng rng;
  uint32_t threshold;  // 0: no dropout
  float keep_scale;
  int heads;
  void row(float* mult, int64_t q_token, int h, int64_t L) const {
    fastcpu::dropout_multipliers(mult, rng, attention_dropout_index(q_token, h, heads, 0), L, threshold, keep_scale);
  }
};

// Row of raw scores s (L values) -> probabilities in place; returns the log-sum-exp of scale * s.
ENGINE_FAST_CLONES float softmax_row(float* s, int64_t L, float scale) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < L; ++j) m = std::max(m, s[j] * scale);
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < L; ++j) {
    s[j] = fastcpu::exp_f32(s[j] * scale - m);
    sum += s[j];
  }
  const float inv = 1.f / sum;
#pragma omp simd
  for (int64_t j = 0; j < L; ++j) s[j] *= inv;
  return m + std::log(sum);
}

ENGINE_FAST_CLONES void multiply_row(float* x, const float* mult, int64_t L) {
#pragma omp simd
  for (int64_t j = 0; j < L; ++j) x[j] *= mult[j];
}

// One row of the backward pass: s (raw scores) becomes P * mask, dp (dO . v_j) becomes dS.
// With kDropout, mult holds the row's dropout multipliers (a template parameter so that the loops
// have no branch and vectorise).
template <bool kDropout>
ENGINE_FAST_CLONES void backward_row(float* s, float* dp, const float* mult, int64_t L, float scale, float lse) {
  float D = 0.f;
#pragma omp simd reduction(+ : D)
  for (int64_t j = 0; j < L; ++j) {
    s[j] = fastcpu::exp_f32(s[j] * scale - lse);  // P
    if (kDropout) dp[j] *= mult[j];
    D += s[j] * dp[j];
  }
#pragma omp simd
  for (int64_t j = 0; j < L; ++j) {
    dp[j] = s[j] * (dp[j] - D) * scale;
    if (kDropout) s[j] *= mult[j];
  }
}

void forward_pair(const Packed& a, int64_t b, int h, const float* qkv, float* out, float* lse, float scale,
                  const ProbDropout& drop) {
  const int64_t start = a.cu[b], L = a.cu[b + 1] - start, stride = 3 * a.H, d = a.d;
  if (L == 0) return;
  const float* Q = qkv + start * stride + h * d;
  const float* K = Q + a.H;
  const float* V = Q + 2 * a.H;
  float* S = fastcpu::thread_scratch(size_t(L * L), 0);
  float* mult = fastcpu::thread_scratch(size_t(L), 1);
  sgemm_serial(false, true, L, L, d, Q, stride, K, stride, 0.f, S, L);
  for (int64_t i = 0; i < L; ++i) {
    float* row = S + i * L;
    lse[(start + i) * a.heads + h] = softmax_row(row, L, scale);
    if (drop.threshold) {
      drop.row(mult, start + i, h, L);
      multiply_row(row, mult, L);
    }
  }
  sgemm_serial(false, false, L, d, L, S, L, V, stride, 0.f, out + start * a.H + h * d, a.H);
}

void backward_pair(const Packed& a, int64_t b, int h, const float* qkv, const float* dout, const float* lse,
                   float* dqkv, float scale, const ProbDropout& drop) {
  const int64_t start = a.cu[b], L = a.cu[b + 1] - start, stride = 3 * a.H, d = a.d;
  if (L == 0) return;
  const float* Q = qkv + start * stride + h * d;
  const float* K = Q + a.H;
  const float* V = Q + 2 * a.H;
  const float* dO = dout + start * a.H + h * d;
  float* dQ = dqkv + start * stride + h * d;
  float* dK = dQ + a.H;
  float* dV = dQ + 2 * a.H;
  float* S = fastcpu::thread_scratch(size_t(L * L), 0);
  float* dP = fastcpu::thread_scratch(size_t(L * L), 1);
  float* mult = fastcpu::thread_scratch(size_t(L), 2);
  sgemm_serial(false, true, L, L, d, Q, stride, K, stride, 0.f, S, L);
  sgemm_serial(false, true, L, L, d, dO, a.H, V, stride, 0.f, dP, L);
  for (int64_t i = 0; i < L; ++i) {
    const float row_lse = lse[(start + i) * a.heads + h];
    if (drop.threshold) {
      drop.row(mult, start + i, h, L);
      backward_row<true>(S + i * L, dP + i * L, mult, L, scale, row_lse);
    } else {
      backward_row<false>(S + i * L, dP + i * L, nullptr, L, scale, row_lse);
    }
  }
  sgemm_serial(true, false, L, d, L, S, L, dO, a.H, 0.f, dV, stride);
  sgemm_serial(false, false, L, d, L, dP, L, K, stride, 0.f, dQ, stride);
  sgemm_serial(true, false, L, d, L, dP, L, Q, stride, 0.f, dK, stride);
}

// fn(b, h) for every (sequence, head) pair; pairs handed out as threads come free (long and short
// sequences balance), each computed whole by one thread, so the result does not depend on the schedule.
template <typename Fn>
void for_each_pair(const Packed& a, Fn fn) {
  double work = 0;  // about 5 L^2 d operations per pair: two (three in backward) L x L x d products
  for (int64_t b = 0; b < a.B; ++b) work += 5.0 * double(a.cu[b + 1] - a.cu[b]) * (a.cu[b + 1] - a.cu[b]) * a.d;
  work *= double(a.heads);
  const int64_t pairs = a.B * a.heads;
  const int threads = work >= fastcpu::kSerialWork ? cpu_threads() : 1;
  fastcpu::run_blocks(threads, pairs, false, [&](int64_t p) { fn(p / a.heads, int(p % a.heads)); });
}

}  // namespace

void FastCpuBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                       int heads, float scale, float p, DropoutRng rng) {
  const OpCheck c("attention_forward", *this);
  const AttentionShape shape = check_attention_forward(c, out, lse, qkv, cu_seqlens, batch, heads, scale, p);
  const Packed a = cpu::check_cu_seqlens(c, shape, cu_seqlens, batch);
  const ProbDropout drop{rng, dropout_threshold(p), cpu::dropout_scale(p), heads};
  for_each_pair(a, [&](int64_t b, int h) {
    forward_pair(a, b, h, qkv.as<const float>(), out.as<float>(), lse.as<float>(), scale, drop);
  });
}

void FastCpuBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                        Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p,
                                        DropoutRng rng) {
  const OpCheck c("attention_backward", *this);
  const AttentionShape shape =
      check_attention_backward(c, dqkv, dout, qkv, out, lse, cu_seqlens, batch, heads, scale, p);
  const Packed a = cpu::check_cu_seqlens(c, shape, cu_seqlens, batch);
  const ProbDropout drop{rng, dropout_threshold(p), cpu::dropout_scale(p), heads};
  for_each_pair(a, [&](int64_t b, int h) {
    backward_pair(a, b, h, qkv.as<const float>(), dout.as<const float>(), lse.as<const float>(), dqkv.as<float>(),
                  scale, drop);
  });
}

}  // namespace engine
