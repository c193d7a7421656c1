// The optimizer over the flat f32 parameter buffer: global gradient norm and AdamW.
// global_norm: norm[0] = sqrt(sum_i g_i^2). Two passes with a grid fixed at kNormBlocks blocks (not
//   the device's SM count): each thread sums its grid-stride elements in double, each block
//   reduces in a fixed tree, one last block adds the block sums in a fixed tree. Same input, same
//   bits, on any run.
// adamw (torch.optim.AdamW semantics, as engine/cpu/adamw.cpp):
//   g *= min(1, max_grad_norm / (norm + 1e-6))    (norm read from device memory: no host round trip)
//   p *= 1 - lr wd   for i < decay_end;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps);  working[i] = p cast to its dtype
// Layout: params, grads, m, v f32 [n]; working f32/bf16/f16 [n] or absent. Precision: f32 per element
// (bias corrections computed on the host in double). Four elements per thread, 16-byte loads.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

constexpr int kNormBlocks = 1024;
constexpr int kNormThreads = 256;
constexpr int kThreads = 256;

__global__ void __launch_bounds__(kNormThreads) sum_squares_kernel(double* partials, const float* g, int64_t n,
                                                                    bool aligned) {
  __shared__ double scratch[kWarp];
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  double acc = 0.0;
  const int64_t groups = aligned ? n / 4 : 0;
  for (int64_t i = tid; i < groups; i += stride) {
    const float4 v = reinterpret_cast<const float4*>(g)[i];
    acc += double(v.x) * v.x + double(v.y) * v.y + double(v.z) * v.z + double(v.w) * v.w;
  }
  for (int64_t i = groups * 4 + tid; i < n; i += stride) acc += double(g[i]) * g[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(kNormBlocks) finish_norm_kernel(float* norm, const double* partials) {
  __shared__ double scratch[kWarp];
  const double total = block_sum(partials[threadIdx.x], scratch);
  if (threadIdx.x == 0) norm[0] = float(sqrt(total));
}

__device__ __forceinline__ void store_working(float* w, int64_t i, float p) { w[i] = p; }
__device__ __forceinline__ void store_working(__nv_bfloat16* w, int64_t i, float p) { w[i] = __float2bfloat16_rn(p); }
__device__ __forceinline__ void store_working(__half* w, int64_t i, float p) { w[i] = __float2half_rn(p); }

struct AdamWConsts {
  float lr, beta1, beta2, eps, one_minus_b1, one_minus_b2, decay, inv_bias1, inv_sqrt_bias2, max_grad_norm;
  int64_t decay_end;
};

__device__ __forceinline__ float adamw_element(float& p, float g, float& m, float& v, int64_t i, float clip,
                                               const AdamWConsts& c) {
  g *= clip;
  if (i < c.decay_end) p *= c.decay;
  m = c.beta1 * m + c.one_minus_b1 * g;
  v = c.beta2 * v + c.one_minus_b2 * g * g;
  p -= c.lr * (m * c.inv_bias1) / (sqrtf(v) * c.inv_sqrt_bias2 + c.eps);
  return p;
}

// W = void: no working copy.
template <typename W>
__global__ void __launch_bounds__(kThreads) adamw_kernel(float* params, const float* grads, float* m, float* v,
                                                         W* working, const float* norm, int64_t n, AdamWConsts c,
                                                         bool aligned) {
  float clip = 1.f;
  if (c.max_grad_norm > 0.f) clip = fminf(1.f, c.max_grad_norm / (norm[0] + 1e-6f));
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t groups = aligned ? n / 4 : 0;
  for (int64_t q = tid; q < groups; q += stride) {
    float4 p = reinterpret_cast<float4*>(params)[q];
    const float4 g = reinterpret_cast<const float4*>(grads)[q];
    float4 m1 = reinterpret_cast<float4*>(m)[q];
    float4 m2 = reinterpret_cast<float4*>(v)[q];
    const int64_t i = q * 4;
    adamw_element(p.x, g.x, m1.x, m2.x, i, clip, c);
    adamw_element(p.y, g.y, m1.y, m2.y, i + 1, clip, c);
    adamw_element(p.z, g.z, m1.z, m2.z, i + 2, clip, c);
    adamw_element(p.w, g.w, m1.w, m2.w, i + 3, clip, c);
    reinterpret_cast<float4*>(params)[q] = p;
    reinterpret_cast<float4*>(m)[q] = m1;
    reinterpret_cast<float4*>(v)[q] = m2;
    if constexpr (!std::is_void_v<W>) {
      Pack<W, 4> out;
      store_working(out.v, 0, p.x);
      store_working(out.v, 1, p.y);
      store_working(out.v, 2, p.z);
      store_working(out.v, 3, p.w);
      reinterpret_cast<Pack<W, 4>*>(working)[q] = out;
    }
  }
  for (int64_t i = groups * 4 + tid; i < n; i += stride) {
    float p = params[i], m1 = m[i], m2 = v[i];
    adamw_element(p, grads[i], m1, m2, i, clip, c);
    params[i] = p;
    m[i] = m1;
    v[i] = m2;
    if constexpr (!std::is_void_v<W>) store_working(working, i, p);
  }
}

template <typename W>
void launch_adamw(float* params, const float* grads, float* m, float* v, W* working, const float* norm, int64_t n,
                  const AdamWConsts& c, cudaStream_t stream) {
  bool aligned = aligned_to(params, 16) && aligned_to(grads, 16) && aligned_to(m, 16) && aligned_to(v, 16);
  if constexpr (!std::is_void_v<W>) aligned = aligned && aligned_to(working, 4 * sizeof(W));
  int64_t blocks = ceil_div(ceil_div(n, 4), kThreads);
  blocks = blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks);
  launch<adamw_kernel<W>>(unsigned(blocks), kThreads, 0, stream, params, grads, m, v, working, norm, n, c, aligned);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t global_norm_scratch_bytes() { return kNormBlocks * sizeof(double); }

void global_norm(float* norm, const float* grads, int64_t n, void* scratch, cudaStream_t stream) {
  double* partials = static_cast<double*>(scratch);
  launch<sum_squares_kernel>(kNormBlocks, kNormThreads, 0, stream, partials, grads, n, aligned_to(grads, 16));
  CUDA_CHECK_LAUNCH();
  launch<finish_norm_kernel>(1, kNormBlocks, 0, stream, norm, partials);
  CUDA_CHECK_LAUNCH();
}

void adamw(float* params, const float* grads, float* m, float* v, void* working, DType working_dtype,
           const float* norm, int64_t n, const AdamWLaunch& a, cudaStream_t stream) {
  if (n == 0) return;
  AdamWConsts c{a.lr,
                a.beta1,
                a.beta2,
                a.eps,
                float(1.0 - double(a.beta1)),
                float(1.0 - double(a.beta2)),
                float(1.0 - double(a.lr) * double(a.weight_decay)),
                a.inv_bias1,
                a.inv_sqrt_bias2,
                a.max_grad_norm,
                a.decay_end};
  if (!working) return launch_adamw<void>(params, grads, m, v, nullptr, norm, n, c, stream);
  switch (working_dtype) {
    case DType::f32: return launch_adamw(params, grads, m, v, static_cast<float*>(working), norm, n, c, stream);
    case DType::bf16:
      return launch_adamw(params, grads, m, v, static_cast<__nv_bfloat16*>(working), norm, n, c, stream);
    case DType::f16: return launch_adamw(params, grads, m, v, static_cast<__half*>(working), norm, n, c, stream);
    case DType::i32: fail("adamw: working copy cannot be i32");
  }
}

}  // namespace engine::cuda
