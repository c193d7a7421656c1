// The low-rank path of a LoRA-adapted linear layer on the GPU (Backend::lora_forward/backward):
// the thin products through cuBLASLt, with the scale in alpha and the accumulation in beta, and a
// column window [col, col + out) of the output read through the leading dimension (the fused QKV
// output is [N, 3H]; an adapter on value writes columns 2H..3H in place):
//   forward   u = dropout(x)                      (dropout kernel, only when p > 0)
//             z[N, r] = u A^T                      (gemm)
//             t[:, col:] += scale * z B^T          (gemm, alpha = scale, beta = 1; t = y or pre)
//             y = gelu(pre)                        (gelu kernel, the intermediate layer only)
//   backward  dz = scale * dy[:, col:] B           (gemm, alpha = scale)
//             dB += scale * dy^T z                 (gemm into f32, alpha = scale, beta = 1)
//             dA += dz^T u                         (gemm into f32, u regenerated when p > 0)
//             dx += dz A                           (gemm, beta = 1) when p == 0; otherwise
//             u = dz A, then dx += dropout(u)      (dropout_accumulate kernel below)
//             dx *= gelu'(pre_of_x)                (gelu backward kernel, the FFN output layer only)
// Precision: act (bf16 or f32) operands and z, f32 accumulation, f32 dA and dB.
#include "cuda/cuda_backend.h"

#include <nvtx3/nvToolsExt.h>

#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/launch.cuh"
#include "cuda/matmul_cublaslt.h"
#include "engine/op_checks.h"

namespace engine {

namespace {

constexpr int kThreads = 256;

// The op's NVTX range, as cuda_backend.cu's ops have theirs.
struct LoraRange {
  explicit LoraRange(const char* name) { nvtxRangePushA(name); }
  ~LoraRange() { nvtxRangePop(); }
};

// dx[i] += g[i] * keep(i) / (1 - p): the dropout mask of the adapter's input applied to its
// gradient on the way into the layer's input gradient. Flat, one element per thread iteration.
template <typename T>
__global__ void dropout_accumulate_kernel(T* dx, const T* g, int64_t n, uint32_t threshold, float keep_scale,
                                          DropoutRng rng) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    float f[1];
    cuda::dropout_factors<1>(f, rng, uint64_t(i), threshold, keep_scale);
    dx[i] = cuda::from_float<T>(cuda::to_float(dx[i]) + cuda::to_float(g[i]) * f[0]);
  }
}

void dropout_accumulate(DType act, void* dx, const void* g, int64_t n, float p, DropoutRng rng, cudaStream_t stream) {
  if (n == 0) return;
  int64_t blocks = cuda::ceil_div(n, kThreads);
  blocks = blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks);
  const float keep_scale = float(1.0 / (1.0 - double(p)));  // as cpu::dropout_scale
  if (act == DType::bf16)
    cuda::launch<dropout_accumulate_kernel<__nv_bfloat16>>(
        unsigned(blocks), kThreads, 0, stream, static_cast<__nv_bfloat16*>(dx), static_cast<const __nv_bfloat16*>(g),
        n, dropout_threshold(p), keep_scale, rng);
  else
    cuda::launch<dropout_accumulate_kernel<float>>(unsigned(blocks), kThreads, 0, stream, static_cast<float*>(dx),
                                                   static_cast<const float*>(g), n, dropout_threshold(p), keep_scale,
                                                   rng);
  CUDA_CHECK_LAUNCH();
}

// Column `col` of a row-major act matrix.
void* column(void* p, DType act, int64_t col) { return static_cast<char*>(p) + size_t(col) * dtype_size(act); }
const void* column(const void* p, DType act, int64_t col) {
  return static_cast<const char*>(p) + size_t(col) * dtype_size(act);
}

}  // namespace

void CudaBackend::lora_forward(Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b, const LoraArgs& args,
                               Activation act_fn, Tensor pre) {
  LoraRange range("lora_forward");
  const LoraShape s = check_lora_forward(OpCheck("lora_forward", *this), y, z, u, x, a, b, args, act_fn, pre);
  if (s.N == 0) return;
  const void* input = x.data;
  if (args.p > 0.f) {
    cuda::dropout(s.act, u.data, x.data, s.N * s.in, args.p, args.rng, stream_);
    input = u.data;
  }
  blas_->run(cuda::linear_forward_gemm(s.act, z.data, input, a.data, nullptr, s.N, s.in, s.r, cuda::Epilogue::none,
                                       nullptr),
             stream_);
  Tensor t = act_fn == Activation::gelu ? pre : y;
  cuda::Gemm up = cuda::linear_forward_gemm(s.act, column(t.data, s.act, args.col), z.data, b.data, nullptr, s.N, s.r,
                                            s.out, cuda::Epilogue::none, nullptr);
  up.ldd = s.C;
  up.alpha = args.scale;
  up.beta = 1.f;
  blas_->run(up, stream_);
  if (act_fn == Activation::gelu) {
    op_piece("gelu");
    cuda::gelu_forward(s.act, y.data, pre.data, s.N * s.out, stream_);
  }
}

void CudaBackend::lora_backward(Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy, Tensor x, Tensor z,
                                Tensor a, Tensor b, const LoraArgs& args, Activation act_of_x, Tensor pre_of_x) {
  LoraRange range("lora_backward");
  const LoraShape s = check_lora_backward(OpCheck("lora_backward", *this), dx, da, db, dz, u, dy, x, z, a, b, args,
                                          act_of_x, pre_of_x);
  if (s.N == 0) return;
  const void* dy_window = column(dy.data, s.act, args.col);
  // dz[N, r] = scale * dy_window B: the dx product of a layer with weight B [out, r].
  cuda::Gemm gz = cuda::linear_dx_gemm(s.act, dz.data, dy_window, b.data, s.N, s.r, s.out, false, nullptr);
  gz.ldb = s.C;
  gz.alpha = args.scale;
  blas_->run(gz, stream_);
  // dB[out, r] += scale * dy_window^T z.
  cuda::Gemm gb = cuda::linear_dw_gemm(s.act, db.as<float>(), dy_window, z.data, s.N, s.r, s.out, nullptr);
  gb.ldb = s.C;
  gb.alpha = args.scale;
  blas_->run(gb, stream_);
  // dA[r, in] += dz^T dropout(x).
  const void* input = x.data;
  if (args.p > 0.f) {
    cuda::dropout(s.act, u.data, x.data, s.N * s.in, args.p, args.rng, stream_);
    input = u.data;
  }
  blas_->run(cuda::linear_dw_gemm(s.act, da.as<float>(), dz.data, input, s.N, s.in, s.r, nullptr), stream_);
  if (dx.empty()) return;
  if (args.p > 0.f) {
    blas_->run(cuda::linear_dx_gemm(s.act, u.data, dz.data, a.data, s.N, s.in, s.r, false, nullptr), stream_);
    dropout_accumulate(s.act, dx.data, u.data, s.N * s.in, args.p, args.rng, stream_);
  } else {
    blas_->run(cuda::linear_dx_gemm(s.act, dx.data, dz.data, a.data, s.N, s.in, s.r, true, nullptr), stream_);
  }
  if (act_of_x == Activation::gelu) {
    op_piece("gelu");
    cuda::gelu_backward_inplace(s.act, dx.data, pre_of_x.data, s.N * s.in, stream_);
  }
}

}  // namespace engine
