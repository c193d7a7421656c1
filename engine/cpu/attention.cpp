// Multi-head self-attention over the packed (varlen) layout, bidirectional inside each sequence,
// no attention across sequences:
//   S = scale * Q K^T,  lse = logsumexp(S) per row,  P = exp(S - lse),  out = dropout(P) V
// Layout: qkv act f32 [T, 3H] = [q | k | v], head h at columns h*d .. h*d+d-1 of each part
// (d = H / heads); out act f32 [T, H]; lse f32 [T, heads]; cu_seqlens host i32 [B+1].
// Dropout on probabilities with attention_dropout_index(global query token, head, heads, key
// index within the sequence). Scores, softmax sums and products in double. Backward recomputes
// P from q, k and the saved lse, with the same mask, and overwrites dqkv [T, 3H].
// Each (sequence, head) pair is independent and written by one thread: deterministic.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"
#include "engine/op_checks.h"

namespace engine {

namespace cpu {
// The values of cu_seqlens, beyond the shared contract's dtype and shape: the CPU reads them in
// host memory, the CUDA backend cannot without a host round trip. Lengths below 65536 follow from
// len <= batch.max_seqlen, which the contract bounds.
Packed check_cu_seqlens(const OpCheck& c, const AttentionShape& a, Tensor cu_seqlens, const BatchShape& batch) {
  const int32_t* cu = cu_seqlens.as<const int32_t>();
  c.that(cu[0] == 0, "cu_seqlens[0] = ", cu[0], ", expected 0");
  for (int64_t b = 0; b < a.B; ++b) {
    int64_t len = int64_t(cu[b + 1]) - cu[b];
    c.that(len >= 0, "cu_seqlens is not non-decreasing at ", b + 1, " (", cu[b], " then ", cu[b + 1], ")");
    c.that(len <= batch.max_seqlen, "sequence ", b, " has length ", len, " > batch.max_seqlen = ",
           batch.max_seqlen);
  }
  c.that(cu[a.B] == a.T, "cu_seqlens[", a.B, "] = ", cu[a.B], " but the batch has ", a.T, " tokens");
  return Packed{a.T, a.H, a.heads, a.head_dim, a.B, cu};
}
}  // namespace cpu

namespace {

using cpu::check_cu_seqlens;
using cpu::Packed;

// Scaled scores of query row i against keys 0..L-1 of one (sequence, head); returns their
// log-sum-exp. q points at the query's head slice, k0 at key 0's head slice, rows 3H apart.
double scores_row(std::vector<double>& s, const float* q, const float* k0, int64_t L, int64_t d, int64_t stride,
                  float scale) {
  double m = -INFINITY;
  for (int64_t j = 0; j < L; ++j) {
    const float* k = k0 + j * stride;
    double dot = 0;
    for (int64_t e = 0; e < d; ++e) dot += double(q[e]) * double(k[e]);
    s[j] = double(scale) * dot;
    m = std::max(m, s[j]);
  }
  double sum = 0;
  for (int64_t j = 0; j < L; ++j) sum += std::exp(s[j] - m);
  return m + std::log(sum);
}

// The dropout multiplier of probability (query token, head, key j): 0 or 1/(1-p).
struct ProbDropout {
  DropoutRng rng;
  uint32_t threshold;
  float keep_scale;
  int heads;
  double factor(int64_t q_token, int h, int64_t j) const {
    if (threshold == 0u) return 1.0;
    return dropout_keep(rng, attention_dropout_index(q_token, h, heads, int(j)), threshold) ? keep_scale : 0.0;
  }
};

void forward_head(const Packed& a, int64_t b, int h, const float* qkv, float* out, float* lse, float scale,
                  const ProbDropout& drop) {
  const int64_t start = a.cu[b], L = a.cu[b + 1] - start, stride = 3 * a.H, d = a.d;
  std::vector<double> s(L), acc(d);
  const float* k0 = qkv + start * stride + a.H + h * d;
  const float* v0 = qkv + start * stride + 2 * a.H + h * d;
  for (int64_t i = 0; i < L; ++i) {
    const int64_t t = start + i;
    double row_lse = scores_row(s, qkv + t * stride + h * d, k0, L, d, stride, scale);
    lse[t * a.heads + h] = float(row_lse);
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int64_t j = 0; j < L; ++j) {
      double pd = std::exp(s[j] - row_lse) * drop.factor(t, h, j);
      if (pd == 0.0) continue;
      for (int64_t e = 0; e < d; ++e) acc[e] += pd * v0[j * stride + e];
    }
    for (int64_t e = 0; e < d; ++e) out[t * a.H + h * d + e] = float(acc[e]);
  }
}

void backward_head(const Packed& a, int64_t b, int h, const float* qkv, const float* dout, const float* lse,
                   float* dqkv, float scale, const ProbDropout& drop) {
  const int64_t start = a.cu[b], L = a.cu[b + 1] - start, stride = 3 * a.H, d = a.d;
  std::vector<double> s(L), dp(L), dq(d), dk(L * d, 0.0), dv(L * d, 0.0);
  const float* k0 = qkv + start * stride + a.H + h * d;
  const float* v0 = qkv + start * stride + 2 * a.H + h * d;
  for (int64_t i = 0; i < L; ++i) {
    const int64_t t = start + i;
    const float* q = qkv + t * stride + h * d;
    const float* go = dout + t * a.H + h * d;
    scores_row(s, q, k0, L, d, stride, scale);
    const double row_lse = lse[t * a.heads + h];
    // s becomes P, dp becomes dL/dP (through the dropout mask); D = sum_j P dP.
    double D = 0;
    for (int64_t j = 0; j < L; ++j) {
      s[j] = std::exp(s[j] - row_lse);
      const double mask = drop.factor(t, h, j);
      double dpd = 0;
      for (int64_t e = 0; e < d; ++e) dpd += double(go[e]) * v0[j * stride + e];
      for (int64_t e = 0; e < d; ++e) dv[j * d + e] += s[j] * mask * go[e];
      dp[j] = dpd * mask;
      D += s[j] * dp[j];
    }
    std::fill(dq.begin(), dq.end(), 0.0);
    for (int64_t j = 0; j < L; ++j) {
      const double ds = s[j] * (dp[j] - D) * scale;  // d loss / d (q . k_j)
      const float* k = k0 + j * stride;
      for (int64_t e = 0; e < d; ++e) {
        dq[e] += ds * k[e];
        dk[j * d + e] += ds * q[e];
      }
    }
    for (int64_t e = 0; e < d; ++e) dqkv[t * stride + h * d + e] = float(dq[e]);
  }
  for (int64_t j = 0; j < L; ++j)
    for (int64_t e = 0; e < d; ++e) {
      dqkv[(start + j) * stride + a.H + h * d + e] = float(dk[j * d + e]);
      dqkv[(start + j) * stride + 2 * a.H + h * d + e] = float(dv[j * d + e]);
    }
}

// Runs fn(b, h) for every (sequence, head) pair, spread over threads.
template <typename Fn>
void for_each_head(const Packed& a, Fn fn) {
  const int64_t pairs = a.B * a.heads;
  const double mean_len = a.B ? double(a.T) / double(a.B) : 0.0;
  cpu::parallel_rows(pairs, 4 * mean_len * mean_len * double(a.d) + 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) fn(p / a.heads, int(p % a.heads));
  });
}

}  // namespace

void CpuBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                   int heads, float scale, float p, DropoutRng rng) {
  const OpCheck c("attention_forward", *this);
  const AttentionShape shape = check_attention_forward(c, out, lse, qkv, cu_seqlens, batch, heads, scale, p);
  const Packed a = check_cu_seqlens(c, shape, cu_seqlens, batch);
  const ProbDropout drop{rng, dropout_threshold(p), cpu::dropout_scale(p), heads};
  for_each_head(a, [&](int64_t b, int h) {
    forward_head(a, b, h, qkv.as<const float>(), out.as<float>(), lse.as<float>(), scale, drop);
  });
}

void CpuBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                    Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p,
                                    DropoutRng rng) {
  const OpCheck c("attention_backward", *this);
  const AttentionShape shape =
      check_attention_backward(c, dqkv, dout, qkv, out, lse, cu_seqlens, batch, heads, scale, p);
  const Packed a = check_cu_seqlens(c, shape, cu_seqlens, batch);
  // `out` is not needed: D_i = sum_j P_ij dP_ij is computed directly (dout . out equals it).
  const ProbDropout drop{rng, dropout_threshold(p), cpu::dropout_scale(p), heads};
  for_each_head(a, [&](int64_t b, int h) {
    backward_head(a, b, h, qkv.as<const float>(), dout.as<const float>(), lse.as<const float>(),
                  dqkv.as<float>(), scale, drop);
  });
}

}  // namespace engine
