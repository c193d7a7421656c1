// Layernorm of one row held in registers by one warp, forward and backward: the shared core of
// layernorm.cu (residual + dropout + layernorm) and embeddings.cu (gathered sum + layernorm).
// Row shape: H columns as ITEMS slots per lane of VEC consecutive columns each; slot `it` of lane
// `lane` covers columns (it * 32 + lane) * VEC .. + VEC - 1 (slots past H are skipped). So a warp
// reads a row with 16-byte vector loads (VEC = 4 f32 or 8 bf16), and all statistics are f32
// warp sums. rstd = 1/sqrt(biased var + eps) like torch.nn.LayerNorm.
#pragma once
#include <type_traits>

#include "cuda/common.cuh"

namespace engine::cuda {

template <int VEC, int ITEMS>
struct RowShape {
  static constexpr int vec = VEC;
  static constexpr int items = ITEMS;
  __device__ static int col(int it, int lane) { return (it * kWarp + lane) * VEC; }
};

// Calls f(RowShape<VEC, ITEMS>{}) with the smallest register footprint that holds H columns:
// 16-byte vectors when H and every pointer allow (`vec_ok`), else scalars. Register budget: at
// most 32 floats per lane per row array (H <= 1024 vectorised, H <= 256 scalar).
template <typename T, typename F>
void with_row_shape(int64_t H, bool vec_ok, F&& f) {
  constexpr int V = kVec16<T>;
  if (vec_ok && H % V == 0) {
    const int64_t items = ceil_div(H / V, kWarp);
    if (items <= 1) return f(RowShape<V, 1>{});
    if (items <= 2) return f(RowShape<V, 2>{});
    if (items <= 4) return f(RowShape<V, 4>{});
    if constexpr (V == 4) {
      if (items <= 8) return f(RowShape<V, 8>{});
    }
  } else {
    const int64_t items = ceil_div(H, kWarp);
    if (items <= 1) return f(RowShape<1, 1>{});
    if (items <= 2) return f(RowShape<1, 2>{});
    if (items <= 4) return f(RowShape<1, 4>{});
    if (items <= 8) return f(RowShape<1, 8>{});
  }
  fail("layernorm: hidden size ", H, " is larger than the register-resident row kernels take (",
       vec_ok && H % V == 0 ? 32 * 8 * 4 : 32 * 8, " here)");
}

inline int64_t row_kernel_max_hidden() { return 1024; }

// Forward: v holds the row (already rounded to its storage type and stored as s). Writes y, and
// mean / rstd when lane 0.
template <typename T, typename Shape>
__device__ __forceinline__ void layernorm_row_forward(float (&v)[Shape::items][Shape::vec], T* y, float* mean,
                                                      float* rstd, const T* gamma, const T* beta, int H, float eps,
                                                      int lane) {
  constexpr int VEC = Shape::vec, ITEMS = Shape::items;
  float sum = 0.f;
#pragma unroll
  for (int it = 0; it < ITEMS; ++it)
    if (Shape::col(it, lane) < H)
#pragma unroll
      for (int k = 0; k < VEC; ++k) sum += v[it][k];
  const float mu = warp_sum(sum) / float(H);
  float sq = 0.f;  // two passes over registers: no cancellation when the mean is large
#pragma unroll
  for (int it = 0; it < ITEMS; ++it)
    if (Shape::col(it, lane) < H)
#pragma unroll
      for (int k = 0; k < VEC; ++k) sq += (v[it][k] - mu) * (v[it][k] - mu);
  const float r = rsqrtf(warp_sum(sq) / float(H) + eps);
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int c = Shape::col(it, lane);
    if (c >= H) continue;
    float g[VEC], b[VEC], out[VEC];
    load_vec<VEC>(g, gamma + c);
    load_vec<VEC>(b, beta + c);
#pragma unroll
    for (int k = 0; k < VEC; ++k) out[k] = (v[it][k] - mu) * r * g[k] + b[k];
    store_vec<VEC>(y + c, out);
  }
  if (lane == 0) {
    *mean = mu;
    *rstd = r;
  }
}

// Backward of one row: with xhat = (s - mean) rstd and g = dy * gamma,
//   ds = rstd * (g - mean(g) - xhat * mean(g * xhat));  dgamma += dy * xhat;  dbeta += dy.
// On return `ds` holds ds (f32); dg / db are this lane's running column sums.
template <typename T, typename Shape>
__device__ __forceinline__ void layernorm_row_backward(float (&ds)[Shape::items][Shape::vec],
                                                       float (&dg)[Shape::items][Shape::vec],
                                                       float (&db)[Shape::items][Shape::vec], const T* dy,
                                                       const T* s, float mean, float rstd, const T* gamma, int H,
                                                       int lane) {
  constexpr int VEC = Shape::vec, ITEMS = Shape::items;
  float xhat[ITEMS][VEC] = {};
  float g_sum = 0.f, gx_sum = 0.f;
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int c = Shape::col(it, lane);
    if (c >= H) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) ds[it][k] = 0.f;
      continue;
    }
    float d[VEC], sv[VEC], gm[VEC];
    load_vec<VEC>(d, dy + c);
    load_vec<VEC>(sv, s + c);
    load_vec<VEC>(gm, gamma + c);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      xhat[it][k] = (sv[k] - mean) * rstd;
      dg[it][k] += d[k] * xhat[it][k];
      db[it][k] += d[k];
      ds[it][k] = d[k] * gm[k];  // g, turned into ds below
      g_sum += ds[it][k];
      gx_sum += ds[it][k] * xhat[it][k];
    }
  }
  const float g_mean = warp_sum(g_sum) / float(H), gx_mean = warp_sum(gx_sum) / float(H);
#pragma unroll
  for (int it = 0; it < ITEMS; ++it)
#pragma unroll
    for (int k = 0; k < VEC; ++k) ds[it][k] = rstd * (ds[it][k] - g_mean - xhat[it][k] * gx_mean);
}

// After every row: this block's warps add their dg / db in warp order through shared memory
// (2H floats) and the block writes its partial sums to partials[blockIdx.x, 0..2H).
template <typename Shape>
__device__ __forceinline__ void write_block_partials(float* partials, float* smem,
                                                     const float (&dg)[Shape::items][Shape::vec],
                                                     const float (&db)[Shape::items][Shape::vec], int H, int lane,
                                                     int warp, int warps) {
  constexpr int VEC = Shape::vec, ITEMS = Shape::items;
  for (int w = 0; w < warps; ++w) {
    if (warp == w) {
#pragma unroll
      for (int it = 0; it < ITEMS; ++it) {
        const int c = Shape::col(it, lane);
        if (c >= H) continue;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          smem[c + k] = w == 0 ? dg[it][k] : smem[c + k] + dg[it][k];
          smem[H + c + k] = w == 0 ? db[it][k] : smem[H + c + k] + db[it][k];
        }
      }
    }
    __syncthreads();
  }
  float* out = partials + size_t(blockIdx.x) * 2 * H;
  for (int i = threadIdx.x; i < 2 * H; i += blockDim.x) out[i] = smem[i];
}

}  // namespace engine::cuda
