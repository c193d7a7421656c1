// Standalone dropout (after the embeddings, before the classifier), forward and backward alike:
//   y[i] = x[i] * keep(i) / (1 - p),  keep(i) = engine::dropout_keep(rng, i, threshold(p))
// Layout: a flat tensor of n elements (element index t*C + c of [T, C]); y may alias x.
// Precision: x and y f32 or bf16, the product in f32. The mask is regenerated from Philox, never
// stored, so backward calls the same kernel on dy. Each thread takes 8 consecutive elements (two
// Philox calls, one 16-byte bf16 vector or two f32 vectors); p == 0 is an exact copy.
#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kGroup = 8;

template <typename T>
__global__ void dropout_kernel(T* y, const T* x, int64_t n, uint32_t threshold, float keep_scale, DropoutRng rng,
                               bool aligned) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t groups = aligned ? n / kGroup : 0;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    float v[kGroup], f[kGroup];
    constexpr int kPerLoad = kVec16<T> < kGroup ? kVec16<T> : kGroup;
#pragma unroll
    for (int part = 0; part < kGroup / kPerLoad; ++part)
      load_vec<kPerLoad>(*reinterpret_cast<float(*)[kPerLoad]>(v + part * kPerLoad), x + g * kGroup + part * kPerLoad);
    dropout_factors<kGroup>(f, rng, uint64_t(g * kGroup), threshold, keep_scale);
#pragma unroll
    for (int k = 0; k < kGroup; ++k) v[k] *= f[k];
#pragma unroll
    for (int part = 0; part < kGroup / kPerLoad; ++part)
      store_vec<kPerLoad>(y + g * kGroup + part * kPerLoad, *reinterpret_cast<float(*)[kPerLoad]>(v + part * kPerLoad));
  }
  for (int64_t i = groups * kGroup + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float f[1];
    dropout_factors<1>(f, rng, uint64_t(i), threshold, keep_scale);
    y[i] = from_float<T>(to_float(x[i]) * f[0]);
  }
}

template <typename T>
void run(T* y, const T* x, int64_t n, float p, DropoutRng rng, cudaStream_t stream) {
  const bool aligned = aligned_to(y, 16) && aligned_to(x, 16);
  int64_t blocks = ceil_div(ceil_div(n, kGroup), kThreads);
  blocks = blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks);
  const float keep_scale = float(1.0 / (1.0 - double(p)));  // as cpu::dropout_scale
  launch<dropout_kernel<T>>(int(blocks), kThreads, 0, stream, y, x, n, dropout_threshold(p), keep_scale, rng, aligned);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void dropout(DType act, void* y, const void* x, int64_t n, float p, DropoutRng rng, cudaStream_t stream) {
  if (n == 0) return;
  if (dropout_threshold(p) == 0u) {  // p == 0: identity, bit for bit
    if (y != x) CUDA_CHECK(cudaMemcpyAsync(y, x, size_t(n) * dtype_size(act), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  if (act == DType::bf16)
    run(static_cast<__nv_bfloat16*>(y), static_cast<const __nv_bfloat16*>(x), n, p, rng, stream);
  else
    run(static_cast<float*>(y), static_cast<const float*>(x), n, p, rng, stream);
}

}  // namespace engine::cuda
