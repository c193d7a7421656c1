// Exact GELU (Hugging Face "gelu", 0.5 x (1 + erf(x / sqrt 2))) forward and its derivative, as
// separate elementwise kernels after the matrix product: linear_forward writes pre = x W^T + b
// with cuBLASLt's BIAS epilogue and this kernel writes y = gelu(pre); linear_backward_dx writes
// dx = dy W and gelu_backward_inplace multiplies it by gelu'(pre) = Phi(pre) + pre phi(pre).
// (cuBLASLt's GELU_AUX_BIAS / DGELU epilogues fuse these into the product, but not with the erf
// form; bench_kernels measures both, see bench/NOTES.md.)
// Layout: flat n elements. Precision: act storage (f32 / bf16), f32 math with erff / expf.
// 16-byte vectors per thread when pointers allow, grid-stride loop.
#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

constexpr int kThreads = 256;
constexpr float kSqrtHalf = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;

__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.f + erff(x * kSqrtHalf)); }
__device__ __forceinline__ float gelu_grad(float x) {
  const float cdf = 0.5f * (1.f + erff(x * kSqrtHalf));
  return cdf + x * expf(-0.5f * x * x) * kInvSqrt2Pi;
}

template <typename T, bool BACKWARD>
__global__ void gelu_kernel(T* out, const T* pre, int64_t n, bool aligned) {
  constexpr int V = kVec16<T>;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t groups = aligned ? n / V : 0;
  for (int64_t g = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    float x[V], o[V];
    load_vec<V>(x, pre + g * V);
    if (BACKWARD) load_vec<V>(o, out + g * V);
#pragma unroll
    for (int k = 0; k < V; ++k) o[k] = BACKWARD ? o[k] * gelu_grad(x[k]) : gelu(x[k]);
    store_vec<V>(out + g * V, o);
  }
  for (int64_t i = groups * V + int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const float x = to_float(pre[i]);
    out[i] = from_float<T>(BACKWARD ? to_float(out[i]) * gelu_grad(x) : gelu(x));
  }
}

template <bool BACKWARD>
void run(DType act, void* out, const void* pre, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  const bool aligned = aligned_to(out, 16) && aligned_to(pre, 16);
  const int64_t per_thread = 16 / int64_t(dtype_size(act));
  int64_t blocks = ceil_div(ceil_div(n, per_thread), kThreads);
  blocks = blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks);
  if (act == DType::bf16)
    launch<gelu_kernel<__nv_bfloat16, BACKWARD>>(unsigned(blocks), kThreads, 0, stream,
        static_cast<__nv_bfloat16*>(out), static_cast<const __nv_bfloat16*>(pre), n, aligned);
  else
    launch<gelu_kernel<float, BACKWARD>>(unsigned(blocks), kThreads, 0, stream,
        static_cast<float*>(out), static_cast<const float*>(pre), n, aligned);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void gelu_forward(DType act, void* y, const void* pre, int64_t n, cudaStream_t stream) {
  run<false>(act, y, pre, n, stream);
}

void gelu_backward_inplace(DType act, void* dx, const void* pre, int64_t n, cudaStream_t stream) {
  run<true>(act, dx, pre, n, stream);
}

}  // namespace engine::cuda
