// The span loss of extractive question answering (Backend::span_cross_entropy) with its gradient
// in the same pass. For sequence b of the packed batch and column j (0 start, 1 end) of logits
// act [T, 2]:
//   lse_j = log sum_{t in b} exp(x[t, j]);  losses[b, j] = lse_j - x[cu[b] + pos_j, j]
//   dlogits[t, j] = scale_j (exp(x[t, j] - lse_j) - [t == cu[b] + pos_j])
// pos_j = max(positions[b, j], 0); pos_j >= len(b) is ignored: loss 0, gradient 0 (HF's clamp and
// ignore_index). One block per sequence does both columns: a block max, then a block sum of the
// exponentials, each reduced in a fixed tree (deterministic), then the gradient in a second read of
// the sequence's logits (a few KB, from L1/L2). f32 math on f32 or bf16 storage.
#include <algorithm>

#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

struct MaxOp {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Reduces the pair (a, b) over the block with `op`: warps by shuffles, then every thread merges the
// warps' results in warp order, so all threads get the same bits. scratch: 2 x kWarp floats.
template <typename Op>
__device__ void block_reduce_pair(float& a, float& b, float (*scratch)[kWarp], Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    a = op(a, __shfl_xor_sync(0xFFFFFFFFu, a, offset));
    b = op(b, __shfl_xor_sync(0xFFFFFFFFu, b, offset));
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) {
    scratch[0][warp] = a;
    scratch[1][warp] = b;
  }
  __syncthreads();
  a = scratch[0][0];
  b = scratch[1][0];
  for (int w = 1; w < warps; ++w) {
    a = op(a, scratch[0][w]);
    b = op(b, scratch[1][w]);
  }
}

template <typename T>
__global__ void span_cross_entropy_kernel(float* losses, T* dlogits, const T* logits, const int32_t* cu_seqlens,
                                          const int32_t* positions, float scale_start, float scale_end) {
  __shared__ float scratch[2][kWarp];
  const int64_t b = blockIdx.x;
  const int64_t begin = cu_seqlens[b], len = int64_t(cu_seqlens[b + 1]) - begin;
  const T* x = logits + begin * 2;

  float m0 = -INFINITY, m1 = -INFINITY;
  for (int64_t t = threadIdx.x; t < len; t += blockDim.x) {
    m0 = fmaxf(m0, to_float(x[t * 2]));
    m1 = fmaxf(m1, to_float(x[t * 2 + 1]));
  }
  block_reduce_pair(m0, m1, scratch, MaxOp{});
  float s0 = 0.f, s1 = 0.f;
  for (int64_t t = threadIdx.x; t < len; t += blockDim.x) {
    s0 += expf(to_float(x[t * 2]) - m0);
    s1 += expf(to_float(x[t * 2 + 1]) - m1);
  }
  block_reduce_pair(s0, s1, scratch, SumOp{});
  const float lse[2] = {m0 + logf(s0), m1 + logf(s1)};
  int64_t target[2];
  for (int j = 0; j < 2; ++j) {
    const int64_t pos = positions[b * 2 + j] > 0 ? positions[b * 2 + j] : 0;
    target[j] = pos < len ? pos : -1;  // -1: ignored
  }
  if (threadIdx.x == 0)
    for (int j = 0; j < 2; ++j) losses[b * 2 + j] = target[j] < 0 ? 0.f : lse[j] - to_float(x[target[j] * 2 + j]);
  if (!dlogits) return;
  const float scale[2] = {scale_start, scale_end};
  T* dx = dlogits + begin * 2;
  for (int64_t t = threadIdx.x; t < len; t += blockDim.x)
    for (int j = 0; j < 2; ++j) {
      const float g = target[j] < 0 ? 0.f
                                    : scale[j] * (expf(to_float(x[t * 2 + j]) - lse[j]) - (t == target[j] ? 1.f : 0.f));
      dx[t * 2 + j] = from_float<T>(g);
    }
}

template <typename T>
void launch_span(float* losses, T* dlogits, const T* logits, const int32_t* cu_seqlens, const int32_t* positions,
                 int64_t B, int64_t max_seqlen, float scale_start, float scale_end, cudaStream_t stream) {
  // One thread per token up to 256; longer sequences loop.
  const int threads = int(std::min<int64_t>(256, std::max<int64_t>(1, ceil_div(max_seqlen, kWarp)) * kWarp));
  launch<span_cross_entropy_kernel<T>>(unsigned(B), threads, 0, stream, losses, dlogits, logits, cu_seqlens,
                                       positions, scale_start, scale_end);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void span_cross_entropy(DType act, float* losses, void* dlogits, const void* logits, const int32_t* cu_seqlens,
                        const int32_t* positions, int64_t B, int64_t max_seqlen, float scale_start, float scale_end,
                        cudaStream_t stream) {
  if (B == 0) return;
  ENGINE_CHECK(B <= 0x7FFFFFFF, "span_cross_entropy: ", B, " sequences");
  using bf16 = __nv_bfloat16;
  if (act == DType::bf16)
    launch_span(losses, static_cast<bf16*>(dlogits), static_cast<const bf16*>(logits), cu_seqlens, positions, B,
                max_seqlen, scale_start, scale_end, stream);
  else
    launch_span(losses, static_cast<float*>(dlogits), static_cast<const float*>(logits), cu_seqlens, positions, B,
                max_seqlen, scale_start, scale_end, stream);
}

}  // namespace engine::cuda
