// Residual + dropout + layernorm, the end of every attention and FFN block, forward and backward:
//   forward   s = residual + dropout(branch)  (element index t*H + c);  y = (s - mean) rstd gamma + beta
//   backward  ds = layernorm backward of dy;  d_residual = ds;  d_branch = dropout_backward(ds);
//             dgamma += sum_t dy xhat;  dbeta += sum_t dy
// Layout: act [T, H] rows (f32 or bf16), gamma/beta act [H], mean/rstd f32 [T], dgamma/dbeta f32 [H].
// Precision: f32 arithmetic and statistics; s is rounded to its storage type before the
// statistics, so forward and backward see exactly the same s. One warp per row, the row in
// registers (layernorm_row.cuh), 16-byte loads.
// Determinism: the backward grid is a function of T alone; each warp takes rows w, w + W, ... in
// order, each block adds its warps in warp order, and column_sum_f32 adds the blocks in block
// order. No atomics.
#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/layernorm_row.cuh"

namespace engine::cuda {

namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = kWarpsPerBlock * kWarp;
constexpr int64_t kMaxBackwardBlocks = 512;  // fixed: the number of partials is a function of T only

int64_t backward_blocks(int64_t T) {
  const int64_t b = ceil_div(T, kWarpsPerBlock);
  return b < kMaxBackwardBlocks ? (b > 0 ? b : 1) : kMaxBackwardBlocks;
}

template <typename T, typename Shape>
__global__ void __launch_bounds__(kThreads) add_dropout_layernorm_forward_kernel(
    T* y, T* s, float* mean, float* rstd, const T* branch, const T* residual, const T* gamma, const T* beta,
    int64_t rows, int H, float eps, uint32_t threshold, float keep_scale, DropoutRng rng) {
  constexpr int VEC = Shape::vec, ITEMS = Shape::items;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const int64_t base = row * H;
  float v[ITEMS][VEC];
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int c = Shape::col(it, lane);
    if (c >= H) continue;
    float b[VEC], r[VEC], f[VEC];
    load_vec<VEC>(b, branch + base + c);
    load_vec<VEC>(r, residual + base + c);
    dropout_factors<VEC>(f, rng, uint64_t(base + c), threshold, keep_scale);
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[it][k] = round_to<T>(r[k] + b[k] * f[k]);
    store_vec<VEC>(s + base + c, v[it]);
  }
  layernorm_row_forward<T, Shape>(v, y + base, mean + row, rstd + row, gamma, beta, H, eps, lane);
}

// TDS: the type ds is written in (act for the block ends, f32 for the embedding tables).
// d_branch (may be null) receives dropout_backward(ds).
template <typename T, typename TDS, typename Shape>
__global__ void __launch_bounds__(kThreads) layernorm_backward_kernel(
    TDS* ds_out, T* d_branch, float* partials, const T* dy, const T* s, const float* mean, const float* rstd,
    const T* gamma, int64_t rows, int H, uint32_t threshold, float keep_scale, DropoutRng rng) {
  constexpr int VEC = Shape::vec, ITEMS = Shape::items;
  float* smem = dynamic_smem<float>();  // 2H floats
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t warps_total = int64_t(gridDim.x) * kWarpsPerBlock;
  float dg[ITEMS][VEC] = {}, db[ITEMS][VEC] = {};
  for (int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + warp; row < rows; row += warps_total) {
    const int64_t base = row * H;
    float ds[ITEMS][VEC];
    layernorm_row_backward<T, Shape>(ds, dg, db, dy + base, s + base, mean[row], rstd[row], gamma, H, lane);
#pragma unroll
    for (int it = 0; it < ITEMS; ++it) {
      const int c = Shape::col(it, lane);
      if (c >= H) continue;
      store_vec<VEC>(ds_out + base + c, ds[it]);
      if (d_branch) {
        float f[VEC];
        dropout_factors<VEC>(f, rng, uint64_t(base + c), threshold, keep_scale);
#pragma unroll
        for (int k = 0; k < VEC; ++k) f[k] *= ds[it][k];
        store_vec<VEC>(d_branch + base + c, f);
      }
    }
  }
  write_block_partials<Shape>(partials, smem, dg, db, H, lane, warp, kWarpsPerBlock);
}

template <typename T>
void forward(T* y, T* s, float* mean, float* rstd, const T* branch, const T* residual, const T* gamma,
             const T* beta, int64_t rows, int64_t H, float eps, float p, DropoutRng rng, cudaStream_t stream) {
  const bool vec_ok = aligned_to(y, 16) && aligned_to(s, 16) && aligned_to(branch, 16) &&
                      aligned_to(residual, 16) && aligned_to(gamma, 16) && aligned_to(beta, 16);
  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = float(1.0 / (1.0 - double(p)));
  const unsigned grid = unsigned(ceil_div(rows, kWarpsPerBlock));
  with_row_shape<T>(H, vec_ok, [&](auto shape) {
    launch<add_dropout_layernorm_forward_kernel<T, decltype(shape)>>(grid, kThreads, 0, stream,
        y, s, mean, rstd, branch, residual, gamma, beta, rows, int(H), eps, threshold, keep_scale, rng);
  });
  CUDA_CHECK_LAUNCH();
}

template <typename T, typename TDS>
void backward(TDS* ds, T* d_branch, float* dgamma, float* dbeta, const T* dy, const T* s, const float* mean,
              const float* rstd, const T* gamma, int64_t rows, int64_t H, float p, DropoutRng rng, void* scratch,
              cudaStream_t stream) {
  const size_t ds_align = size_t(kVec16<T>) * sizeof(TDS);  // one vector of ds (32 bytes for bf16 -> f32)
  const bool vec_ok = aligned_to(ds, ds_align) && (d_branch == nullptr || aligned_to(d_branch, 16)) &&
                      aligned_to(dy, 16) && aligned_to(s, 16) && aligned_to(gamma, 16);
  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = float(1.0 / (1.0 - double(p)));
  const int64_t blocks = backward_blocks(rows);
  float* partials = static_cast<float*>(scratch);
  const size_t smem = size_t(2 * H) * sizeof(float);
  with_row_shape<T>(H, vec_ok, [&](auto shape) {
    launch<layernorm_backward_kernel<T, TDS, decltype(shape)>>(unsigned(blocks), kThreads, smem, stream,
        ds, d_branch, partials, dy, s, mean, rstd, gamma, rows, int(H), threshold, keep_scale, rng);
  });
  CUDA_CHECK_LAUNCH();
  column_sum_f32(dgamma, partials, blocks, H, 2 * H, true, stream);
  column_sum_f32(dbeta, partials + H, blocks, H, 2 * H, true, stream);
}

using bf16 = __nv_bfloat16;

}  // namespace

int64_t layernorm_max_hidden(DType) { return row_kernel_max_hidden(); }

size_t layernorm_backward_scratch_bytes(int64_t T, int64_t H) {
  return size_t(backward_blocks(T)) * size_t(2 * H) * sizeof(float);
}

void add_dropout_layernorm_forward(DType act, void* y, void* s, float* mean, float* rstd, const void* branch,
                                   const void* residual, const void* gamma, const void* beta, int64_t T, int64_t H,
                                   float eps, float p, DropoutRng rng, cudaStream_t stream) {
  if (T == 0) return;
  if (act == DType::bf16)
    forward(static_cast<bf16*>(y), static_cast<bf16*>(s), mean, rstd, static_cast<const bf16*>(branch),
            static_cast<const bf16*>(residual), static_cast<const bf16*>(gamma), static_cast<const bf16*>(beta), T,
            H, eps, p, rng, stream);
  else
    forward(static_cast<float*>(y), static_cast<float*>(s), mean, rstd, static_cast<const float*>(branch),
            static_cast<const float*>(residual), static_cast<const float*>(gamma), static_cast<const float*>(beta),
            T, H, eps, p, rng, stream);
}

void add_dropout_layernorm_backward(DType act, void* d_branch, void* d_residual, float* dgamma, float* dbeta,
                                    const void* dy, const void* s, const float* mean, const float* rstd,
                                    const void* gamma, int64_t T, int64_t H, float p, DropoutRng rng, void* scratch,
                                    cudaStream_t stream) {
  if (T == 0) return;
  if (act == DType::bf16)
    backward(static_cast<bf16*>(d_residual), static_cast<bf16*>(d_branch), dgamma, dbeta,
             static_cast<const bf16*>(dy), static_cast<const bf16*>(s), mean, rstd, static_cast<const bf16*>(gamma),
             T, H, p, rng, scratch, stream);
  else
    backward(static_cast<float*>(d_residual), static_cast<float*>(d_branch), dgamma, dbeta,
             static_cast<const float*>(dy), static_cast<const float*>(s), mean, rstd,
             static_cast<const float*>(gamma), T, H, p, rng, scratch, stream);
}

void layernorm_backward_f32_ds(DType act, float* ds, float* dgamma, float* dbeta, const void* dy, const void* s,
                               const float* mean, const float* rstd, const void* gamma, int64_t T, int64_t H,
                               void* scratch, cudaStream_t stream) {
  if (T == 0) return;
  if (act == DType::bf16)
    backward(ds, static_cast<bf16*>(nullptr), dgamma, dbeta, static_cast<const bf16*>(dy),
             static_cast<const bf16*>(s), mean, rstd, static_cast<const bf16*>(gamma), T, H, 0.f, DropoutRng{},
             scratch, stream);
  else
    backward(ds, static_cast<float*>(nullptr), dgamma, dbeta, static_cast<const float*>(dy),
             static_cast<const float*>(s), mean, rstd, static_cast<const float*>(gamma), T, H, 0.f, DropoutRng{},
             scratch, stream);
}

}  // namespace engine::cuda
