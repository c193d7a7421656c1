// Shared CPU numeric blocks (see kernels.h): deterministic row-parallel loop, the NT matrix
// product with double accumulation, transpose, layernorm rows. f32 in and out, double sums.
#include "engine/cpu/kernels.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace engine {
namespace cpu {

static int worker_count() {
  unsigned hw = std::thread::hardware_concurrency();
  return int(std::clamp(hw, 1u, 16u));
}

void parallel_rows(int64_t n, double cost_per_item, const std::function<void(int64_t, int64_t)>& fn) {
  // Below ~2M multiply-adds a thread start costs more than it saves.
  int threads = int(std::min<double>(worker_count(), std::max(1.0, n * cost_per_item / 2e6)));
  threads = int(std::min<int64_t>(threads, std::max<int64_t>(n, 1)));
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  std::vector<std::thread> pool;
  int64_t chunk = (n + threads - 1) / threads;
  for (int i = 1; i < threads; ++i) {
    int64_t begin = std::min(n, i * chunk), end = std::min(n, begin + chunk);
    pool.emplace_back(fn, begin, end);
  }
  fn(0, std::min(n, chunk));
  for (std::thread& t : pool) t.join();
}

// R dot products of rows a[r*lda ..] with the row b, each in double over 4 interleaved lanes.
// The lane structure is identical for every R, so a row's result does not depend on which block
// it was computed in.
template <int R>
static void dot_block(double out[R], const float* a, int64_t lda, const float* b, int64_t K) {
  constexpr int L = 4;
  double acc[R][L] = {};
  int64_t k = 0;
  for (; k + L <= K; k += L)
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < L; ++l) acc[r][l] += double(a[r * lda + k + l]) * double(b[k + l]);
  for (int r = 0; r < R; ++r) {
    double s = (acc[r][0] + acc[r][1]) + (acc[r][2] + acc[r][3]);
    for (int64_t kk = k; kk < K; ++kk) s += double(a[r * lda + kk]) * double(b[kk]);
    out[r] = s;
  }
}

// Rows m..m+R-1 of C, columns [n0, n1).
template <int R>
static void gemm_rows(float* C, const float* A, const float* B, const float* bias, int64_t m, int64_t n0,
                      int64_t n1, int64_t N, int64_t K, bool accumulate) {
  for (int64_t n = n0; n < n1; ++n) {
    double dots[R];
    dot_block<R>(dots, A + m * K, K, B + n * K, K);
    for (int r = 0; r < R; ++r) {
      float& c = C[(m + r) * N + n];
      double v = dots[r] + (bias ? double(bias[n]) : 0.0);
      c = float(accumulate ? double(c) + v : v);
    }
  }
}

// Row blocks [b0, b1) of C. Compiled twice, for x86-64-v3 (AVX2 + FMA: the double lanes become
// one vector each, about twice as fast) and for plain x86-64, picked at run time by the CPU: the
// binary still runs on any x86-64 machine (the GPU machine's included).
__attribute__((target_clones("arch=x86-64-v3", "default"))) static void gemm_row_blocks(
    float* C, const float* A, const float* B, const float* bias, int64_t M, int64_t N, int64_t K, bool accumulate,
    int64_t b0, int64_t b1, int64_t panel) {
  for (int64_t n0 = 0; n0 < N; n0 += panel) {
    const int64_t n1 = std::min(N, n0 + panel);
    for (int64_t blk = b0; blk < b1; ++blk) {
      int64_t m = blk * 4;
      if (m + 4 <= M) {
        gemm_rows<4>(C, A, B, bias, m, n0, n1, N, K, accumulate);
      } else {
        for (; m < M; ++m) gemm_rows<1>(C, A, B, bias, m, n0, n1, N, K, accumulate);
      }
    }
  }
}

void gemm_nt(float* C, const float* A, const float* B, const float* bias, int64_t M, int64_t N, int64_t K,
             bool accumulate) {
  // Blocks of 4 rows of A share each row of B read (a quarter of the traffic on B), and B is
  // walked in panels of about 128 KiB so a panel stays in cache while every row block uses it.
  const int64_t blocks = (M + 3) / 4;
  const int64_t panel = std::max<int64_t>(1, (int64_t(128) << 10) / std::max<int64_t>(1, K * 4));
  parallel_rows(blocks, double(4 * N * K), [&](int64_t b0, int64_t b1) {
    gemm_row_blocks(C, A, B, bias, M, N, K, accumulate, b0, b1, panel);
  });
}

void transpose(float* dst, const float* src, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;  // tiles keep both sides in cache
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile)
      for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c) dst[c * rows + r] = src[r * cols + c];
}

void layernorm_row_forward(float* y, float* mean, float* rstd, const float* s, const float* gamma,
                           const float* beta, int64_t H, float eps) {
  double sum = 0;
  for (int64_t c = 0; c < H; ++c) sum += s[c];
  double mu = sum / double(H);
  double sq = 0;  // two passes: no cancellation when the mean is large
  for (int64_t c = 0; c < H; ++c) sq += (s[c] - mu) * (s[c] - mu);
  double r = 1.0 / std::sqrt(sq / double(H) + double(eps));
  *mean = float(mu);
  *rstd = float(r);
  for (int64_t c = 0; c < H; ++c) y[c] = float((s[c] - mu) * r * double(gamma[c]) + double(beta[c]));
}

void layernorm_row_backward(float* ds, double* dgamma_sum, double* dbeta_sum, const float* dy, const float* s,
                            float mean, float rstd, const float* gamma, int64_t H) {
  // With xhat = (s - mean) rstd and g = dy * gamma:
  // ds = rstd * (g - mean(g) - xhat * mean(g * xhat)).
  double g_sum = 0, gx_sum = 0;
  for (int64_t c = 0; c < H; ++c) {
    double xhat = (double(s[c]) - mean) * rstd;
    double g = double(dy[c]) * gamma[c];
    g_sum += g;
    gx_sum += g * xhat;
    dgamma_sum[c] += double(dy[c]) * xhat;
    dbeta_sum[c] += dy[c];
  }
  double g_mean = g_sum / double(H), gx_mean = gx_sum / double(H);
  for (int64_t c = 0; c < H; ++c) {
    double xhat = (double(s[c]) - mean) * rstd;
    double g = double(dy[c]) * gamma[c];
    ds[c] = float(double(rstd) * (g - g_mean - xhat * gx_mean));
  }
}

}  // namespace cpu
}  // namespace engine
