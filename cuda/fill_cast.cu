// Fills, dtype casts and an f32 in-place add over flat buffers.
// Layout: any contiguous buffer of n elements. Precision: conversions round to nearest even
// (__float2bfloat16_rn / __float2half_rn), as engine/bf16.h does on the host; i32 fills store
// int(value). Each thread handles 4 consecutive elements (vector loads and stores when every
// pointer is aligned for them), a grid-stride loop covers any n.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 4;

__device__ __forceinline__ float load_as_float(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_as_float(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float load_as_float(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void store_from_float(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_from_float(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store_from_float(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }

int grid_for(int64_t n) {
  int64_t blocks = ceil_div(ceil_div(n, kPerThread), kThreads);
  return int(blocks < 65535 * 8 ? (blocks > 0 ? blocks : 1) : 65535 * 8);
}

template <typename T>
__global__ void fill_kernel(T* x, int64_t n, T value) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) x[i] = value;
}

// Groups of 4: the compiler emits one vector load per source group and one store per destination
// group when `aligned` (checked on the host for both pointers); the tail runs element by element.
template <typename D, typename S>
__global__ void cast_kernel(D* dst, const S* src, int64_t n, bool aligned) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t groups = aligned ? n / kPerThread : 0;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    Pack<S, kPerThread> in = reinterpret_cast<const Pack<S, kPerThread>*>(src)[g];
    Pack<D, kPerThread> out;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) store_from_float(out.v, k, load_as_float(in.v, k));
    reinterpret_cast<Pack<D, kPerThread>*>(dst)[g] = out;
  }
  for (int64_t i = groups * kPerThread + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    store_from_float(dst, i, load_as_float(src, i));
}

__global__ void add_f32_kernel(float* dst, const float* src, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] += src[i];
}

template <typename D>
void cast_from(D* dst, const void* src, DType src_dtype, int64_t n, cudaStream_t stream) {
  const bool aligned = aligned_to(dst, sizeof(D) * kPerThread) && aligned_to(src, dtype_size(src_dtype) * kPerThread);
  switch (src_dtype) {
    case DType::f32:
      launch<cast_kernel<D, float>>(grid_for(n), kThreads, 0, stream, dst, static_cast<const float*>(src), n, aligned);
      break;
    case DType::bf16:
      launch<cast_kernel<D, __nv_bfloat16>>(grid_for(n), kThreads, 0, stream, dst, static_cast<const __nv_bfloat16*>(src), n, aligned);
      break;
    case DType::f16:
      launch<cast_kernel<D, __half>>(grid_for(n), kThreads, 0, stream, dst, static_cast<const __half*>(src), n, aligned);
      break;
    case DType::i32: fail("cast: cannot cast i32 to a float type");
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void fill(void* x, DType dtype, int64_t n, float value, cudaStream_t stream) {
  if (n == 0) return;
  const int grid = grid_for(n * kPerThread);  // one element per thread here
  switch (dtype) {
    case DType::f32: launch<fill_kernel<float>>(grid, kThreads, 0, stream, static_cast<float*>(x), n, value); break;
    case DType::bf16:
      launch<fill_kernel<__nv_bfloat16>>(grid, kThreads, 0, stream, static_cast<__nv_bfloat16*>(x), n, __float2bfloat16_rn(value));
      break;
    case DType::f16:
      launch<fill_kernel<__half>>(grid, kThreads, 0, stream, static_cast<__half*>(x), n, __float2half_rn(value));
      break;
    case DType::i32:
      launch<fill_kernel<int32_t>>(grid, kThreads, 0, stream, static_cast<int32_t*>(x), n, int32_t(value));
      break;
  }
  CUDA_CHECK_LAUNCH();
}

void cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (dst_dtype == src_dtype) {
    if (dst != src) CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(n) * dtype_size(dst_dtype), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  switch (dst_dtype) {
    case DType::f32: cast_from(static_cast<float*>(dst), src, src_dtype, n, stream); break;
    case DType::bf16: cast_from(static_cast<__nv_bfloat16*>(dst), src, src_dtype, n, stream); break;
    case DType::f16: cast_from(static_cast<__half*>(dst), src, src_dtype, n, stream); break;
    case DType::i32: fail("cast: cannot cast a float type to i32");
  }
}

void add_inplace_f32(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  launch<add_f32_kernel>(grid_for(n * kPerThread), kThreads, 0, stream, dst, src, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace engine::cuda
