// Losses with their backward in the same pass.
// cross_entropy: per row n of logits [N, C]:
//   lse = log sum_k exp(x_k);  losses[n] = lse - x[label];  dlogits[n, k] = scale (exp(x_k - lse) - [k == label])
//   label < 0: loss 0 and a zero gradient row; label >= C: NaN (the CPU backend throws instead).
// mse: losses[n] = (pred[n] - target[n])^2;  dpred[n] = scale * 2 (pred[n] - target[n]).
// Layout: logits, dlogits act [N, C] (dlogits may alias logits, or be absent); labels i32 [N];
// losses, target f32 [N]; pred, dpred act [N, 1].
// Precision: f32 math; the max and the sum of exponentials are one online pass (running max,
// sum rescaled when the max grows), merged across the block in a fixed tree.
// One block per row: the row is read twice (statistics, then gradients), and with a few hundred
// rows in flight the second read comes from L2 even for vocabulary-sized rows.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

// Merges running (max, sum of exp(x - max)) pairs.
__device__ __forceinline__ void merge_softmax(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  if (mx == -INFINITY) return;  // both empty
  s = s * expf(m - mx) + s2 * expf(m2 - mx);
  m = mx;
}

template <typename T, int VEC>
__global__ void cross_entropy_kernel(float* losses, T* dlogits, const T* logits, const int32_t* labels, int64_t C,
                                     float scale) {
  __shared__ float red_m[kWarp], red_s[kWarp];
  const int64_t n = blockIdx.x;
  const T* row = logits + n * C;
  const int32_t label = labels[n];
  T* grad = dlogits ? dlogits + n * C : nullptr;
  if (label < 0) {
    if (threadIdx.x == 0) losses[n] = 0.f;
    if (grad)
      for (int64_t k = threadIdx.x; k < C; k += blockDim.x) grad[k] = from_float<T>(0.f);
    return;
  }
  float m = -INFINITY, s = 0.f;
  for (int64_t k = int64_t(threadIdx.x) * VEC; k < C; k += int64_t(blockDim.x) * VEC) {
    float x[VEC];
    load_vec<VEC>(x, row + k);
    float mx = m;  // one rescale per vector: VEC + 1 exponentials for VEC elements
#pragma unroll
    for (int i = 0; i < VEC; ++i) mx = fmaxf(mx, x[i]);
    if (mx == -INFINITY) continue;
    float acc = s * expf(m - mx);
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc += expf(x[i] - mx);
    m = mx;
    s = acc;
  }
  // Warp then block merge, in a fixed order.
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float m2 = __shfl_xor_sync(0xFFFFFFFFu, m, offset), s2 = __shfl_xor_sync(0xFFFFFFFFu, s, offset);
    merge_softmax(m, s, m2, s2);
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  if (lane == 0) {
    red_m[warp] = m;
    red_s[warp] = s;
  }
  __syncthreads();
  m = -INFINITY;
  s = 0.f;
  for (int w = 0; w < warps; ++w) merge_softmax(m, s, red_m[w], red_s[w]);
  const float lse = m + logf(s);
  const bool valid = label < C;
  if (threadIdx.x == 0) losses[n] = valid ? lse - to_float(row[label]) : __int_as_float(0x7fffffff);
  if (!grad) return;
  __syncthreads();  // every thread has read row[label] before any thread may overwrite it (aliasing)
  for (int64_t k = int64_t(threadIdx.x) * VEC; k < C; k += int64_t(blockDim.x) * VEC) {
    float x[VEC];
    load_vec<VEC>(x, row + k);
#pragma unroll
    for (int i = 0; i < VEC; ++i)
      x[i] = valid ? scale * (expf(x[i] - lse) - (k + i == label ? 1.f : 0.f)) : __int_as_float(0x7fffffff);
    store_vec<VEC>(grad + k, x);
  }
}

template <typename T>
__global__ void mse_kernel(float* losses, T* dpred, const T* pred, const float* target, int64_t N, float scale) {
  const int64_t n = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  const float diff = to_float(pred[n]) - target[n];
  losses[n] = diff * diff;
  if (dpred) dpred[n] = from_float<T>(scale * 2.f * diff);
}

template <typename T>
void launch_ce(float* losses, T* dlogits, const T* logits, const int32_t* labels, int64_t N, int64_t C, float scale,
               cudaStream_t stream) {
  constexpr int V = kVec16<T>;
  const bool vec = C % V == 0 && aligned_to(logits, 16) && (dlogits == nullptr || aligned_to(dlogits, 16));
  const int64_t per_thread = vec ? V : 1;
  const int threads = int(std::min<int64_t>(512, ceil_div(ceil_div(C, per_thread), kWarp) * kWarp));
  if (vec)
    launch<cross_entropy_kernel<T, V>>(unsigned(N), threads, 0, stream, losses, dlogits, logits, labels, C, scale);
  else
    launch<cross_entropy_kernel<T, 1>>(unsigned(N), threads, 0, stream, losses, dlogits, logits, labels, C, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void cross_entropy(DType act, float* losses, void* dlogits, const void* logits, const int32_t* labels, int64_t N,
                   int64_t C, float scale, cudaStream_t stream) {
  if (N == 0) return;
  ENGINE_CHECK(N <= 0x7FFFFFFF, "cross_entropy: ", N, " rows");
  using bf16 = __nv_bfloat16;
  if (act == DType::bf16)
    launch_ce(losses, static_cast<bf16*>(dlogits), static_cast<const bf16*>(logits), labels, N, C, scale, stream);
  else
    launch_ce(losses, static_cast<float*>(dlogits), static_cast<const float*>(logits), labels, N, C, scale, stream);
}

void mse(DType act, float* losses, void* dpred, const void* pred, const float* target, int64_t N, float scale,
         cudaStream_t stream) {
  if (N == 0) return;
  const unsigned blocks = unsigned(ceil_div(N, 256));
  if (act == DType::bf16)
    launch<mse_kernel<__nv_bfloat16>>(blocks, 256, 0, stream, losses, static_cast<__nv_bfloat16*>(dpred),
                                      static_cast<const __nv_bfloat16*>(pred), target, N, scale);
  else
    launch<mse_kernel<float>>(blocks, 256, 0, stream, losses, static_cast<float*>(dpred),
                              static_cast<const float*>(pred), target, N, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace engine::cuda
