// Device helpers every kernel family shares: conversions between the activation storage types
// (float, __nv_bfloat16) and float, 16-byte vector loads and stores, warp and block sums, and the
// Philox dropout mask for a group of neighbouring elements. Included by the .cu files only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launch.cuh"
#include "engine/philox.h"

namespace engine::cuda {

constexpr int kWarp = 32;

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- scalar conversions: all arithmetic is float, storage is T ----
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
// x rounded to what storing it as T keeps (so statistics see exactly the stored values).
template <typename T>
__device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

// ---- vectors: N elements of T in one aligned load/store (16 bytes when N = 16 / sizeof(T)) ----
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// How many T fill 16 bytes: one LDG.128 / STG.128.
template <typename T>
constexpr int kVec16 = int(16 / sizeof(T));

template <int N, typename T>
__device__ __forceinline__ void load_vec(float (&out)[N], const T* p) {
  Pack<T, N> pk = *reinterpret_cast<const Pack<T, N>*>(p);
#pragma unroll
  for (int i = 0; i < N; ++i) out[i] = to_float(pk.v[i]);
}

template <int N, typename T>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[N]) {
  Pack<T, N> pk;
#pragma unroll
  for (int i = 0; i < N; ++i) pk.v[i] = from_float<T>(in[i]);
  *reinterpret_cast<Pack<T, N>*>(p) = pk;
}

// ---- reductions ----
template <typename F>
__device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024), returned to every thread.
// The tree is fixed by the block size, so the result is deterministic. `scratch` holds 32 F.
template <typename F>
__device__ F block_sum(F v, F* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : F(0);
  return warp_sum(v);
}

__device__ inline float block_max(float v, float* scratch) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// ---- dropout: multipliers (0 or keep_scale) for N consecutive elements starting at `index` ----
// Bitwise the same mask as engine::dropout_keep(): when the group starts on a multiple of 4 and N is
// a multiple of 4, one Philox call serves four elements (dropout_bits() takes word index & 3 of
// the call for block index >> 2); otherwise each element pays its own call.
template <int N>
__device__ __forceinline__ void dropout_factors(float (&f)[N], DropoutRng rng, uint64_t index, uint32_t threshold,
                                                float keep_scale) {
  if (threshold == 0u) {
#pragma unroll
    for (int i = 0; i < N; ++i) f[i] = 1.f;
    return;
  }
  const uint64_t first = index + rng.offset;  // the element's index in the global batch
  if (N % 4 == 0 && (first & 3) == 0) {
#pragma unroll
    for (int g = 0; g < N / 4; ++g) {
      Philox4 r = dropout_block(rng, (first >> 2) + g);
#pragma unroll
      for (int k = 0; k < 4; ++k) f[g * 4 + k] = r.v[k] >= threshold ? keep_scale : 0.f;
    }
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) f[i] = dropout_bits(rng, index + i) >= threshold ? keep_scale : 0.f;
  }
}

// True when p is aligned to `bytes` (vector paths check every pointer they touch).
__host__ __device__ inline bool aligned_to(const void* p, size_t bytes) {
  return (reinterpret_cast<uintptr_t>(p) % bytes) == 0;
}

}  // namespace engine::cuda
