// CudaBackend (cuda_backend.h): argument checks, dispatch to the kernel launchers (kernels.h),
// cuBLASLt (matmul_cublaslt.h) and attention (attention.h), the scratch workspace, NVTX ranges,
// and the factory functions backend_factory.cpp calls.
// Arguments are checked by the shared op contract (engine/op_checks.h), the same functions the CPU
// backend calls, plus the limits of these kernels (the row kernels' largest hidden size). Nothing
// here reads device memory: indices and labels out of range become NaN outputs instead of errors,
// because checking them would need a host round trip inside the step.
#include "cuda/cuda_backend.h"

#include <nvtx3/nvToolsExt.h>

#include <cmath>

#include "cuda/attention.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/matmul_cublaslt.h"
#include "engine/op_checks.h"

namespace engine {

namespace {

// The register-resident row kernels (layernorm_row.cuh) hold one row per warp: a limit of this
// backend, not of the op contract.
void check_layernorm_hidden(const OpCheck& c, const LayerNormShape& k) {
  const int64_t max = cuda::layernorm_max_hidden(k.act);
  c.that(k.H <= max, "hidden size ", k.H, " > ", max);
}

// NVTX range around one op: the timeline shows each op under the layer range the model pushed.
struct OpRange {
  explicit OpRange(const char* name) { nvtxRangePushA(name); }
  ~OpRange() { nvtxRangePop(); }
};

}  // namespace

CudaBackend::CudaBackend(const BackendOptions& options) : device_(options.device), attention_(options.attention) {
  ENGINE_CHECK(attention_ == "auto" || attention_ == "flash" || attention_ == "cudnn" || attention_ == "simple",
               "cuda backend: attention '", attention_, "' is not one of auto, flash, cudnn, simple");
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  ENGINE_CHECK(device_ >= 0 && device_ < count, "cuda backend: device ", device_, " does not exist (", count,
               " visible)");
  CUDA_CHECK(cudaSetDevice(device_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  blas_ = std::make_unique<cuda::CublasLt>();
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  blas_.reset();
  if (workspace_) cudaFree(workspace_);
  if (stream_) cudaStreamDestroy(stream_);
}

void* CudaBackend::scratch(size_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  ENGINE_CHECK(!capturing_, "cuda backend: the workspace must grow to ", bytes,
               " bytes inside a CUDA graph capture; run a warm-up step of this shape before capturing");
  // Growth happens in the warm-up step only; wait for work that may still use the old buffer.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (workspace_) CUDA_CHECK(cudaFree(workspace_));
  workspace_ = nullptr;
  const size_t rounded = (bytes + (size_t(1) << 20) - 1) / (size_t(1) << 20) * (size_t(1) << 20);
  CUDA_CHECK(cudaMalloc(&workspace_, rounded));
  workspace_bytes_ = rounded;
  ++workspace_growths_;
  return workspace_;
}

// ---- memory ----

void* CudaBackend::allocate(size_t bytes) {
  ENGINE_CHECK(!capturing_, "cuda backend: allocate() inside a CUDA graph capture");
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 256));
  return p;
}

void CudaBackend::release(void* p) {
  if (!p) return;
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  CUDA_CHECK(cudaFree(p));
}

void CudaBackend::copy_from_host(Tensor dst, const void* src) {
  ENGINE_CHECK(!capturing_, "cuda backend: copy_from_host() inside a CUDA graph capture (upload before capturing)");
  check_copy_from_host(OpCheck("copy_from_host", *this), dst, src);
  if (dst.bytes()) CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::copy_to_host(void* dst, Tensor src) {
  ENGINE_CHECK(!capturing_, "cuda backend: copy_to_host() inside a CUDA graph capture (a host sync)");
  check_copy_to_host(OpCheck("copy_to_host", *this), dst, src);
  if (src.bytes()) CUDA_CHECK(cudaMemcpyAsync(dst, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy(Tensor dst, Tensor src) {
  check_copy(OpCheck("copy", *this), dst, src);
  if (dst.bytes() && dst.data != src.data)
    CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.bytes(), cudaMemcpyDeviceToDevice, stream_));
}

void CudaBackend::synchronize() {
  ENGINE_CHECK(!capturing_, "cuda backend: synchronize() inside a CUDA graph capture");
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::range_push(const char* name) { nvtxRangePushA(name); }
void CudaBackend::range_pop() { nvtxRangePop(); }

// ---- elementwise helpers ----

void CudaBackend::fill(Tensor x, float value) {
  OpRange r("fill");
  check_fill(OpCheck("fill", *this), x);
  cuda::fill(x.data, x.dtype, x.numel(), value, stream_);
}

void CudaBackend::cast(Tensor dst, Tensor src) {
  OpRange r("cast");
  check_cast(OpCheck("cast", *this), dst, src);
  cuda::cast(dst.data, dst.dtype, src.data, src.dtype, src.numel(), stream_);
}

// ---- embeddings ----

void CudaBackend::embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids,
                                     Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma,
                                     Tensor beta, float eps) {
  OpRange r("embeddings_forward");
  const OpCheck c("embeddings_forward", *this);
  const LayerNormShape k =
      check_embeddings_forward(c, y, s, mean, rstd, ids, pos_ids, type_ids, word, pos, type, gamma, beta, eps);
  check_layernorm_hidden(c, k);
  const auto [act, T, H] = k;
  cuda::embeddings_forward(act, y.data, s.data, mean.as<float>(), rstd.as<float>(), ids.as<const int32_t>(),
                           pos_ids.as<const int32_t>(), type_ids.as<const int32_t>(), word.data, word.dim(0),
                           pos.data, pos.dim(0), type.data, type.dim(0), gamma.data, beta.data, T, H, eps, stream_);
}

void CudaBackend::embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta,
                                      Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids,
                                      Tensor pos_ids, Tensor type_ids) {
  OpRange r("embeddings_backward");
  const OpCheck c("embeddings_backward", *this);
  const LayerNormShape k = check_embeddings_backward(c, dword, dpos, dtype, dgamma, dbeta, dy, s, mean, rstd, gamma,
                                                     ids, pos_ids, type_ids);
  check_layernorm_hidden(c, k);
  const auto [act, T, H] = k;
  if (T == 0) return;
  const size_t bytes = cuda::embeddings_backward_scratch_bytes(T, H, dword.dim(0), dpos.dim(0), dtype.dim(0));
  void* ws = scratch(bytes);
  cuda::embeddings_backward(act, dword.as<float>(), dword.dim(0), dpos.as<float>(), dpos.dim(0), dtype.as<float>(),
                            dtype.dim(0), dgamma.as<float>(), dbeta.as<float>(), dy.data, s.data, mean.as<float>(),
                            rstd.as<float>(), gamma.data, ids.as<const int32_t>(), pos_ids.as<const int32_t>(),
                            type_ids.as<const int32_t>(), T, H, ws, bytes, stream_);
}

// ---- residual + dropout + layernorm ----

void CudaBackend::add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch,
                                                Tensor residual, Tensor gamma, Tensor beta, float eps, float p,
                                                DropoutRng rng) {
  OpRange r("add_dropout_layernorm_forward");
  const OpCheck c("add_dropout_layernorm_forward", *this);
  const LayerNormShape k =
      check_add_dropout_layernorm_forward(c, y, s, mean, rstd, branch, residual, gamma, beta, eps, p);
  check_layernorm_hidden(c, k);
  const auto [act, T, H] = k;
  cuda::add_dropout_layernorm_forward(act, y.data, s.data, mean.as<float>(), rstd.as<float>(), branch.data,
                                      residual.data, gamma.data, beta.data, T, H, eps, p, rng, stream_);
}

void CudaBackend::add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta,
                                                 Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma,
                                                 float p, DropoutRng rng) {
  OpRange r("add_dropout_layernorm_backward");
  const OpCheck c("add_dropout_layernorm_backward", *this);
  const LayerNormShape k =
      check_add_dropout_layernorm_backward(c, d_branch, d_residual, dgamma, dbeta, dy, s, mean, rstd, gamma, p);
  check_layernorm_hidden(c, k);
  const auto [act, T, H] = k;
  if (T == 0) return;
  void* ws = scratch(cuda::layernorm_backward_scratch_bytes(T, H));
  cuda::add_dropout_layernorm_backward(act, d_branch.data, d_residual.data, dgamma.as<float>(), dbeta.as<float>(),
                                       dy.data, s.data, mean.as<float>(), rstd.as<float>(), gamma.data, T, H, p, rng,
                                       ws, stream_);
}

// ---- dropout ----

void CudaBackend::dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) {
  OpRange r("dropout_forward");
  const DType act = check_dropout_forward(OpCheck("dropout_forward", *this), y, x, p);
  cuda::dropout(act, y.data, x.data, x.numel(), p, rng, stream_);
}

void CudaBackend::dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) {
  OpRange r("dropout_backward");
  const DType act = check_dropout_backward(OpCheck("dropout_backward", *this), dx, dy, p);
  cuda::dropout(act, dx.data, dy.data, dy.numel(), p, rng, stream_);
}

// ---- linear layers ----

void CudaBackend::linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act_fn, Tensor pre) {
  OpRange r("linear_forward");
  const auto [act, N, in, out] = check_linear_forward(OpCheck("linear_forward", *this), y, x, w, b, act_fn, pre);
  if (N == 0) return;
  const cuda::Epilogue bias_epilogue = b.empty() ? cuda::Epilogue::none : cuda::Epilogue::bias;
  if (act_fn == Activation::none) {
    cuda::linear_forward(*blas_, act, y.data, x.data, w.data, b.data, N, in, out, bias_epilogue, nullptr, stream_);
    return;
  }
  if (gelu_epilogue_ && !b.empty()) {
    cuda::linear_forward(*blas_, act, y.data, x.data, w.data, b.data, N, in, out, cuda::Epilogue::gelu_aux_bias,
                         pre.data, stream_);
    return;
  }
  cuda::linear_forward(*blas_, act, pre.data, x.data, w.data, b.data, N, in, out, bias_epilogue, nullptr, stream_);
  op_piece("gelu");
  cuda::gelu_forward(act, y.data, pre.data, N * out, stream_);
}

void CudaBackend::linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x,
                                     Tensor pre_of_x) {
  OpRange r("linear_backward_dx");
  const auto [act, N, in, out] =
      check_linear_backward_dx(OpCheck("linear_backward_dx", *this), dx, dy, w, accumulate, act_of_x, pre_of_x);
  if (N == 0) return;
  const bool gelu = act_of_x == Activation::gelu;
  if (gelu && gelu_epilogue_) {
    cuda::linear_backward_dx(*blas_, act, dx.data, dy.data, w.data, N, in, out, false, pre_of_x.data, stream_);
    return;
  }
  cuda::linear_backward_dx(*blas_, act, dx.data, dy.data, w.data, N, in, out, accumulate, nullptr, stream_);
  if (gelu) op_piece("gelu");
  if (gelu) cuda::gelu_backward_inplace(act, dx.data, pre_of_x.data, N * in, stream_);
}

void CudaBackend::linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) {
  OpRange r("linear_backward_dw");
  const auto [act, N, in, out] = check_linear_backward_dw(OpCheck("linear_backward_dw", *this), dw, db, dy, x);
  if (N == 0) return;
  cuda::linear_backward_dw(*blas_, act, dw.as<float>(), dy.data, x.data, N, in, out, nullptr, stream_);
  // The bias gradient by the deterministic column sum (reduce.cu) rather than cuBLASLt's BGRADB
  // epilogue, whose summation order is not documented; bench_kernels measures both.
  if (!db.empty()) {
    void* ws = scratch(cuda::column_sum_act_scratch_bytes(N, out));
    cuda::column_sum_act_accumulate(db.as<float>(), act, dy.data, N, out, ws, stream_);
  }
}

// ---- attention ----

namespace {

// The launch arguments every attention implementation takes, from the checked shape.
cuda::AttentionArgs attention_args(const AttentionShape& k, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                   float scale, float p, DropoutRng rng) {
  cuda::AttentionArgs a;
  a.bf16 = k.act == DType::bf16;
  a.qkv = qkv.data;
  a.cu_seqlens = cu_seqlens.as<const int32_t>();
  a.tokens = k.T;
  a.sequences = int(k.B);
  a.max_seqlen = int(batch.max_seqlen);
  a.heads = k.heads;
  a.head_dim = int(k.head_dim);
  a.scale = scale;
  a.dropout_p = p;
  a.rng = rng;
  return a;
}

}  // namespace

// The attention implementation the options chose; "auto" is the fused kernel for bf16 and the
// simple one for f32 (the fused kernel runs bf16 only). The scratch it asks for comes from the
// backend workspace.
void CudaBackend::run_attention(cuda::AttentionArgs& a, bool backward) {
  using Fn = void (*)(const cuda::AttentionArgs&, cudaStream_t);
  using Bytes = size_t (*)(const cuda::AttentionArgs&);
  struct Impl {
    const char* name;
    Bytes workspace_bytes;
    Fn forward, backward;
  };
  static const Impl impls[] = {
      {"simple", cuda::attention_simple_workspace_bytes, cuda::attention_simple_forward,
       cuda::attention_simple_backward},
      {"flash", cuda::attention_flash_workspace_bytes, cuda::attention_flash_forward, cuda::attention_flash_backward},
      {"cudnn", cuda::attention_cudnn_workspace_bytes, cuda::attention_cudnn_forward, cuda::attention_cudnn_backward},
  };
  const std::string name = attention_ == "auto" ? (a.bf16 ? "flash" : "simple") : attention_;
  for (const Impl& impl : impls) {
    if (name != impl.name) continue;
    a.workspace_bytes = impl.workspace_bytes(a);
    a.workspace = a.workspace_bytes ? scratch(a.workspace_bytes) : nullptr;
    (backward ? impl.backward : impl.forward)(a, stream_);
    return;
  }
  fail("cuda backend: unknown attention '", name, "'");
}

void CudaBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                    int heads, float scale, float p, DropoutRng rng) {
  OpRange r("attention_forward");
  const AttentionShape k = check_attention_forward(OpCheck("attention_forward", *this), out, lse, qkv, cu_seqlens,
                                                   batch, heads, scale, p);
  if (k.T == 0) return;
  cuda::AttentionArgs a = attention_args(k, qkv, cu_seqlens, batch, scale, p, rng);
  a.out = out.data;
  a.lse = lse.as<float>();
  run_attention(a, false);
}

void CudaBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor cu_seqlens,
                                     const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) {
  OpRange r("attention_backward");
  const AttentionShape k = check_attention_backward(OpCheck("attention_backward", *this), dqkv, dout, qkv, out, lse,
                                                    cu_seqlens, batch, heads, scale, p);
  if (k.T == 0) return;
  cuda::AttentionArgs a = attention_args(k, qkv, cu_seqlens, batch, scale, p, rng);
  a.out = out.data;
  a.lse = lse.as<float>();
  a.dout = dout.data;
  a.dqkv = dqkv.data;
  run_attention(a, true);
}

// ---- pooler pieces ----

void CudaBackend::gather_rows(Tensor out, Tensor x, Tensor rows) {
  OpRange r("gather_rows");
  const auto [act, B, C] = check_gather_rows(OpCheck("gather_rows", *this), out, x, rows);
  cuda::gather_rows(act, out.data, x.data, rows.as<const int32_t>(), B, C, x.dim(0), stream_);
}

void CudaBackend::scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) {
  OpRange r("scatter_add_rows");
  const auto [act, B, C] = check_scatter_add_rows(OpCheck("scatter_add_rows", *this), dx, dout, rows);
  cuda::scatter_add_rows(act, dx.data, dout.data, rows.as<const int32_t>(), B, C, dx.dim(0), stream_);
}

void CudaBackend::tanh_forward(Tensor y, Tensor x) {
  OpRange r("tanh_forward");
  const DType act = check_tanh_forward(OpCheck("tanh_forward", *this), y, x);
  cuda::tanh_forward(act, y.data, x.data, x.numel(), stream_);
}

void CudaBackend::tanh_backward(Tensor dx, Tensor dy, Tensor y) {
  OpRange r("tanh_backward");
  const DType act = check_tanh_backward(OpCheck("tanh_backward", *this), dx, dy, y);
  cuda::tanh_backward(act, dx.data, dy.data, y.data, dy.numel(), stream_);
}

// ---- losses ----

void CudaBackend::cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) {
  OpRange r("cross_entropy");
  const auto [act, N, C] = check_cross_entropy(OpCheck("cross_entropy", *this), losses, dlogits, logits, labels);
  cuda::cross_entropy(act, losses.as<float>(), dlogits.data, logits.data, labels.as<const int32_t>(), N, C, scale,
                      stream_);
}

void CudaBackend::mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) {
  OpRange r("mse");
  const auto [act, N, C] = check_mse(OpCheck("mse", *this), losses, dpred, pred, target);
  cuda::mse(act, losses.as<float>(), dpred.data, pred.data, target.as<const float>(), N, scale, stream_);
}

void CudaBackend::span_cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor cu_seqlens, Tensor positions,
                                     const BatchShape& batch, float scale_start, float scale_end) {
  OpRange r("span_cross_entropy");
  const auto [act, T, B] = check_span_cross_entropy(OpCheck("span_cross_entropy", *this), losses, dlogits, logits,
                                                    cu_seqlens, positions, batch);
  (void)T;
  cuda::span_cross_entropy(act, losses.as<float>(), dlogits.data, logits.data, cu_seqlens.as<const int32_t>(),
                           positions.as<const int32_t>(), B, batch.max_seqlen, scale_start, scale_end, stream_);
}

// ---- optimizer ----

void CudaBackend::global_norm(Tensor norm, Tensor grads) {
  OpRange r("global_norm");
  check_global_norm(OpCheck("global_norm", *this), norm, grads);
  void* ws = scratch(cuda::global_norm_scratch_bytes());
  cuda::global_norm(norm.as<float>(), grads.as<const float>(), grads.numel(), ws, stream_);
}

void CudaBackend::adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                        const AdamWArgs& args) {
  OpRange r("adamw");
  const int64_t n = check_adamw(OpCheck("adamw", *this), params, grads, m, v, working, norm, args);
  cuda::AdamWLaunch a;
  a.lr = args.lr;
  a.beta1 = args.beta1;
  a.beta2 = args.beta2;
  a.eps = args.eps;
  a.weight_decay = args.weight_decay;
  a.inv_bias1 = float(1.0 / (1.0 - std::pow(double(args.beta1), double(args.step))));
  a.inv_sqrt_bias2 = float(1.0 / std::sqrt(1.0 - std::pow(double(args.beta2), double(args.step))));
  a.max_grad_norm = args.max_grad_norm;
  a.decay_end = args.decay_end;
  cuda::adamw(params.as<float>(), grads.as<const float>(), m.as<float>(), v.as<float>(),
              working.empty() ? nullptr : working.data, working.dtype,
              args.max_grad_norm > 0.f ? norm.as<const float>() : nullptr, n, a, stream_);
}

// ---- factory (declared in engine/backend_factory.cpp) ----

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

bool cuda_device_present() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return false;
  }
  return count > 0;
}

}  // namespace engine
