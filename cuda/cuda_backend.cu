// CudaBackend (cuda_backend.h): argument checks, dispatch to the kernel launchers (kernels.h),
// cuBLASLt (matmul_cublaslt.h) and attention (attention.h), the scratch workspace, NVTX ranges,
// and the factory functions backend_factory.cpp calls.
// Checks mirror the CPU backend's messages ("linear_forward: w is bf16[3,4]@cuda, expected ...")
// but never read device memory: indices and labels out of range become NaN outputs instead of
// errors, because checking them would need a host round trip inside the step.
#include "cuda/cuda_backend.h"

#include <nvtx3/nvToolsExt.h>

#include <cmath>
#include <initializer_list>

#include "cuda/attention.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/matmul_cublaslt.h"

namespace engine {

namespace {

// Argument validation for one op, messages prefixed with the op's name.
class Check {
 public:
  explicit Check(const char* op) : op_(op) {}
  template <typename... Parts>
  void that(bool cond, const Parts&... parts) const {
    if (!cond) fail(op_, ": ", parts...);
  }
  void on_gpu(const char* name, const Tensor& t) const {
    that(t.device == Device::cuda, name, " is on ", device_name(t.device), " but this is the CUDA backend");
    that(t.data != nullptr || t.numel() == 0, name, " is empty (null data) but required");
  }
  // An activation of the op's activation dtype.
  void act(const char* name, const Tensor& t, DType act) const {
    on_gpu(name, t);
    that(t.dtype == act, name, " is ", t.str(), ", expected activation dtype ", dtype_name(act));
  }
  void dtype(const char* name, const Tensor& t, DType want) const {
    on_gpu(name, t);
    that(t.dtype == want, name, " is ", t.str(), ", expected dtype ", dtype_name(want));
  }
  void shape(const char* name, const Tensor& t, std::initializer_list<int64_t> dims) const {
    bool same = t.ndim == int(dims.size());
    int i = 0;
    for (int64_t d : dims) same = same && t.shape[i++] == d;
    std::string want = "[";
    for (int64_t d : dims) want += (want.size() > 1 ? "," : "") + std::to_string(d);
    that(same, name, " is ", t.str(), ", expected shape ", want, "]");
  }
  void numel(const char* name, const Tensor& t, int64_t n) const {
    that(t.numel() == n, name, " is ", t.str(), " with ", t.numel(), " elements, expected ", n);
  }
  void matrix(const char* name, const Tensor& t) const {
    that(t.ndim == 2, name, " is ", t.str(), ", expected a 2-D tensor");
  }
  void probability(float p) const {
    that(std::isfinite(p) && p >= 0.f && p < 1.f, "dropout probability ", p, " is outside [0, 1)");
  }
  // The activation dtype, taken from the op's main input; must be one this backend runs.
  DType act_of(const char* name, const Tensor& t) const {
    on_gpu(name, t);
    that(t.dtype == DType::f32 || t.dtype == DType::bf16, name, " is ", t.str(),
         ": the CUDA backend runs activations in f32 or bf16");
    return t.dtype;
  }

 private:
  const char* op_;
};

// NVTX range around one op: the timeline shows each op under the layer range the model pushed.
struct OpRange {
  explicit OpRange(const char* name) { nvtxRangePushA(name); }
  ~OpRange() { nvtxRangePop(); }
};

}  // namespace

CudaBackend::CudaBackend(const BackendOptions& options) : device_(options.device), attention_(options.attention) {
  ENGINE_CHECK(attention_ == "flash" || attention_ == "cudnn" || attention_ == "simple", "cuda backend: attention '",
               attention_, "' is not one of flash, cudnn, simple");
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
  Check("copy_from_host").on_gpu("dst", dst);
  ENGINE_CHECK(src || dst.bytes() == 0, "copy_from_host: null source");
  if (dst.bytes()) CUDA_CHECK(cudaMemcpyAsync(dst.data, src, dst.bytes(), cudaMemcpyHostToDevice, stream_));
}

void CudaBackend::copy_to_host(void* dst, Tensor src) {
  ENGINE_CHECK(!capturing_, "cuda backend: copy_to_host() inside a CUDA graph capture (a host sync)");
  Check("copy_to_host").on_gpu("src", src);
  ENGINE_CHECK(dst || src.bytes() == 0, "copy_to_host: null destination");
  if (src.bytes()) CUDA_CHECK(cudaMemcpyAsync(dst, src.data, src.bytes(), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::copy(Tensor dst, Tensor src) {
  Check c("copy");
  c.on_gpu("dst", dst);
  c.on_gpu("src", src);
  c.that(dst.dtype == src.dtype, "dst is ", dst.str(), " but src is ", src.str(), " (use cast to change dtype)");
  c.numel("dst", dst, src.numel());
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
  Check("fill").on_gpu("x", x);
  cuda::fill(x.data, x.dtype, x.numel(), value, stream_);
}

void CudaBackend::cast(Tensor dst, Tensor src) {
  OpRange r("cast");
  Check c("cast");
  c.on_gpu("dst", dst);
  c.on_gpu("src", src);
  c.numel("dst", dst, src.numel());
  if (dst.dtype != src.dtype) {
    c.that(dst.dtype != DType::i32 && src.dtype != DType::i32, "cannot cast ", src.str(), " to ", dst.str(),
           " (casts are between f32, bf16 and f16)");
    c.that(dst.data != src.data || dst.numel() == 0, "dst and src share memory (in-place cast between dtypes)");
  }
  cuda::cast(dst.data, dst.dtype, src.data, src.dtype, src.numel(), stream_);
}

// ---- embeddings ----

void CudaBackend::embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids,
                                     Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma,
                                     Tensor beta, float eps) {
  OpRange r("embeddings_forward");
  Check c("embeddings_forward");
  const DType act = c.act_of("word", word);
  c.matrix("word", word);
  const int64_t H = word.dim(1);
  c.matrix("y", y);
  const int64_t T = y.dim(0);
  for (auto [name, t] : {std::pair{"y", y}, {"s", s}}) {
    c.act(name, t, act);
    c.shape(name, t, {T, H});
  }
  for (auto [name, t] : {std::pair{"pos", pos}, {"type", type}}) {
    c.act(name, t, act);
    c.matrix(name, t);
    c.that(t.dim(1) == H, name, " is ", t.str(), " but word has ", H, " columns");
  }
  for (auto [name, t] : {std::pair{"gamma", gamma}, {"beta", beta}}) {
    c.act(name, t, act);
    c.shape(name, t, {H});
  }
  for (auto [name, t] : {std::pair{"mean", mean}, {"rstd", rstd}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {T});
  }
  for (auto [name, t] : {std::pair{"ids", ids}, {"pos_ids", pos_ids}, {"type_ids", type_ids}}) {
    c.dtype(name, t, DType::i32);
    c.shape(name, t, {T});
  }
  c.that(H <= cuda::layernorm_max_hidden(act), "hidden size ", H, " > ", cuda::layernorm_max_hidden(act));
  cuda::embeddings_forward(act, y.data, s.data, mean.as<float>(), rstd.as<float>(), ids.as<const int32_t>(),
                           pos_ids.as<const int32_t>(), type_ids.as<const int32_t>(), word.data, word.dim(0),
                           pos.data, pos.dim(0), type.data, type.dim(0), gamma.data, beta.data, T, H, eps, stream_);
}

void CudaBackend::embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta,
                                      Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids,
                                      Tensor pos_ids, Tensor type_ids) {
  OpRange r("embeddings_backward");
  Check c("embeddings_backward");
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  const int64_t T = dy.dim(0), H = dy.dim(1);
  c.act("s", s, act);
  c.shape("s", s, {T, H});
  c.act("gamma", gamma, act);
  c.shape("gamma", gamma, {H});
  for (auto [name, t] : {std::pair{"dword", dword}, {"dpos", dpos}, {"dtype", dtype}}) {
    c.dtype(name, t, DType::f32);
    c.matrix(name, t);
    c.that(t.dim(1) == H, name, " is ", t.str(), " but dy has ", H, " columns");
  }
  for (auto [name, t] : {std::pair{"dgamma", dgamma}, {"dbeta", dbeta}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {H});
  }
  for (auto [name, t] : {std::pair{"mean", mean}, {"rstd", rstd}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {T});
  }
  for (auto [name, t] : {std::pair{"ids", ids}, {"pos_ids", pos_ids}, {"type_ids", type_ids}}) {
    c.dtype(name, t, DType::i32);
    c.shape(name, t, {T});
  }
  c.that(H <= cuda::layernorm_max_hidden(act), "hidden size ", H, " > ", cuda::layernorm_max_hidden(act));
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
  Check c("add_dropout_layernorm_forward");
  const DType act = c.act_of("branch", branch);
  c.matrix("branch", branch);
  const int64_t T = branch.dim(0), H = branch.dim(1);
  for (auto [name, t] : {std::pair{"y", y}, {"s", s}, {"residual", residual}}) {
    c.act(name, t, act);
    c.shape(name, t, {T, H});
  }
  for (auto [name, t] : {std::pair{"gamma", gamma}, {"beta", beta}}) {
    c.act(name, t, act);
    c.shape(name, t, {H});
  }
  for (auto [name, t] : {std::pair{"mean", mean}, {"rstd", rstd}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {T});
  }
  c.probability(p);
  c.that(H <= cuda::layernorm_max_hidden(act), "hidden size ", H, " > ", cuda::layernorm_max_hidden(act));
  cuda::add_dropout_layernorm_forward(act, y.data, s.data, mean.as<float>(), rstd.as<float>(), branch.data,
                                      residual.data, gamma.data, beta.data, T, H, eps, p, rng, stream_);
}

void CudaBackend::add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta,
                                                 Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma,
                                                 float p, DropoutRng rng) {
  OpRange r("add_dropout_layernorm_backward");
  Check c("add_dropout_layernorm_backward");
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  const int64_t T = dy.dim(0), H = dy.dim(1);
  for (auto [name, t] : {std::pair{"d_branch", d_branch}, {"d_residual", d_residual}, {"s", s}}) {
    c.act(name, t, act);
    c.shape(name, t, {T, H});
  }
  c.act("gamma", gamma, act);
  c.shape("gamma", gamma, {H});
  for (auto [name, t] : {std::pair{"dgamma", dgamma}, {"dbeta", dbeta}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {H});
  }
  for (auto [name, t] : {std::pair{"mean", mean}, {"rstd", rstd}}) {
    c.dtype(name, t, DType::f32);
    c.shape(name, t, {T});
  }
  c.probability(p);
  c.that(H <= cuda::layernorm_max_hidden(act), "hidden size ", H, " > ", cuda::layernorm_max_hidden(act));
  if (T == 0) return;
  void* ws = scratch(cuda::layernorm_backward_scratch_bytes(T, H));
  cuda::add_dropout_layernorm_backward(act, d_branch.data, d_residual.data, dgamma.as<float>(), dbeta.as<float>(),
                                       dy.data, s.data, mean.as<float>(), rstd.as<float>(), gamma.data, T, H, p, rng,
                                       ws, stream_);
}

// ---- dropout ----

void CudaBackend::dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) {
  OpRange r("dropout_forward");
  Check c("dropout_forward");
  const DType act = c.act_of("x", x);
  c.act("y", y, act);
  c.numel("y", y, x.numel());
  c.probability(p);
  cuda::dropout(act, y.data, x.data, x.numel(), p, rng, stream_);
}

void CudaBackend::dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) {
  OpRange r("dropout_backward");
  Check c("dropout_backward");
  const DType act = c.act_of("dy", dy);
  c.act("dx", dx, act);
  c.numel("dx", dx, dy.numel());
  c.probability(p);
  cuda::dropout(act, dx.data, dy.data, dy.numel(), p, rng, stream_);
}

// ---- linear layers ----

void CudaBackend::linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act_fn, Tensor pre) {
  OpRange r("linear_forward");
  Check c("linear_forward");
  const DType act = c.act_of("x", x);
  c.matrix("x", x);
  c.act("w", w, act);
  c.matrix("w", w);
  const int64_t N = x.dim(0), in = x.dim(1), out = w.dim(0);
  c.that(w.dim(1) == in, "w is ", w.str(), " but x is ", x.str(), " (w must be [out, ", in, "])");
  c.act("y", y, act);
  c.shape("y", y, {N, out});
  if (!b.empty()) {
    c.act("b", b, act);
    c.shape("b", b, {out});
  }
  c.that(y.data != x.data || N == 0, "y and x must be different buffers");
  if (N == 0) return;
  const cuda::Epilogue bias_epilogue = b.empty() ? cuda::Epilogue::none : cuda::Epilogue::bias;
  if (act_fn == Activation::none) {
    cuda::linear_forward(*blas_, act, y.data, x.data, w.data, b.data, N, in, out, bias_epilogue, nullptr, stream_);
    return;
  }
  c.that(act_fn == Activation::gelu, "unknown activation ", int(act_fn));
  c.act("pre", pre, act);
  c.shape("pre", pre, {N, out});
  c.that(pre.data != x.data, "pre and x must be different buffers");
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
  Check c("linear_backward_dx");
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  c.act("w", w, act);
  c.matrix("w", w);
  const int64_t N = dy.dim(0), out = dy.dim(1), in = w.dim(1);
  c.that(w.dim(0) == out, "w is ", w.str(), " but dy is ", dy.str(), " (w must be [", out, ", in])");
  c.act("dx", dx, act);
  c.shape("dx", dx, {N, in});
  c.that(dx.data != dy.data || N == 0, "dx and dy must be different buffers");
  if (act_of_x == Activation::gelu) {
    c.that(!accumulate, "accumulate together with a GELU on x is not supported (the GELU derivative would "
                        "multiply the gradient already in dx)");
    c.act("pre_of_x", pre_of_x, act);
    c.shape("pre_of_x", pre_of_x, {N, in});
    c.that(pre_of_x.data != dx.data || N == 0, "dx and pre_of_x must be different buffers");
  } else {
    c.that(act_of_x == Activation::none, "unknown activation ", int(act_of_x));
  }
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
  Check c("linear_backward_dw");
  const DType act = c.act_of("dy", dy);
  c.matrix("dy", dy);
  c.act("x", x, act);
  c.matrix("x", x);
  const int64_t N = dy.dim(0), out = dy.dim(1), in = x.dim(1);
  c.that(x.dim(0) == N, "x is ", x.str(), " but dy is ", dy.str(), " (same number of rows)");
  c.dtype("dw", dw, DType::f32);
  c.shape("dw", dw, {out, in});
  if (!db.empty()) {
    c.dtype("db", db, DType::f32);
    c.shape("db", db, {out});
  }
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

cuda::AttentionArgs attention_args(const Check& c, DType act, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                   int heads, float scale, float p, DropoutRng rng) {
  c.matrix("qkv", qkv);
  const int64_t T = qkv.dim(0);
  c.that(qkv.dim(1) % 3 == 0, "qkv is ", qkv.str(), ": its width must be 3 * hidden");
  const int64_t H = qkv.dim(1) / 3;
  c.that(heads > 0 && H % heads == 0, "hidden size ", H, " is not divisible by heads = ", heads);
  c.that(std::isfinite(scale), "scale ", scale, " is not finite");
  c.that(batch.tokens == T, "batch.tokens = ", batch.tokens, " but qkv has ", T, " rows");
  c.dtype("cu_seqlens", cu_seqlens, DType::i32);
  c.shape("cu_seqlens", cu_seqlens, {batch.sequences + 1});
  c.that(batch.max_seqlen >= 0 && batch.max_seqlen < 65536, "batch.max_seqlen = ", batch.max_seqlen,
         " (attention dropout indexes keys below 65536)");
  c.probability(p);
  cuda::AttentionArgs a;
  a.bf16 = act == DType::bf16;
  a.qkv = qkv.data;
  a.cu_seqlens = cu_seqlens.as<const int32_t>();
  a.tokens = T;
  a.sequences = int(batch.sequences);
  a.max_seqlen = int(batch.max_seqlen);
  a.heads = heads;
  a.head_dim = int(H / heads);
  a.scale = scale;
  a.dropout_p = p;
  a.rng = rng;
  return a;
}

}  // namespace

void CudaBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                    int heads, float scale, float p, DropoutRng rng) {
  OpRange r("attention_forward");
  Check c("attention_forward");
  const DType act = c.act_of("qkv", qkv);
  cuda::AttentionArgs a = attention_args(c, act, qkv, cu_seqlens, batch, heads, scale, p, rng);
  const int64_t T = a.tokens, H = int64_t(a.heads) * a.head_dim;
  c.act("out", out, act);
  c.shape("out", out, {T, H});
  c.dtype("lse", lse, DType::f32);
  c.shape("lse", lse, {T, int64_t(heads)});
  c.that(out.data != qkv.data || T == 0, "out and qkv must be different buffers");
  if (T == 0) return;
  a.out = out.data;
  a.lse = lse.as<float>();
  if (attention_ == "simple") {
    a.workspace_bytes = cuda::attention_simple_workspace_bytes(a);
    a.workspace = a.workspace_bytes ? scratch(a.workspace_bytes) : nullptr;
    cuda::attention_simple_forward(a, stream_);
  } else if (attention_ == "flash") {
    a.workspace_bytes = cuda::attention_flash_workspace_bytes(a);
    a.workspace = a.workspace_bytes ? scratch(a.workspace_bytes) : nullptr;
    cuda::attention_flash_forward(a, stream_);
  } else {
    a.workspace_bytes = cuda::attention_cudnn_workspace_bytes(a);
    a.workspace = a.workspace_bytes ? scratch(a.workspace_bytes) : nullptr;
    cuda::attention_cudnn_forward(a, stream_);
  }
}

void CudaBackend::attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor cu_seqlens,
                                     const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) {
  OpRange r("attention_backward");
  Check c("attention_backward");
  const DType act = c.act_of("qkv", qkv);
  cuda::AttentionArgs a = attention_args(c, act, qkv, cu_seqlens, batch, heads, scale, p, rng);
  const int64_t T = a.tokens, H = int64_t(a.heads) * a.head_dim;
  c.act("dqkv", dqkv, act);
  c.shape("dqkv", dqkv, {T, 3 * H});
  for (auto [name, t] : {std::pair{"dout", dout}, {"out", out}}) {
    c.act(name, t, act);
    c.shape(name, t, {T, H});
  }
  c.dtype("lse", lse, DType::f32);
  c.shape("lse", lse, {T, int64_t(heads)});
  c.that(dqkv.data != qkv.data || T == 0, "dqkv and qkv must be different buffers");
  if (T == 0) return;
  a.out = out.data;
  a.lse = lse.as<float>();
  a.dout = dout.data;
  a.dqkv = dqkv.data;
  if (attention_ == "simple") {
    a.workspace_bytes = cuda::attention_simple_workspace_bytes(a);
    a.workspace = a.workspace_bytes ? scratch(a.workspace_bytes) : nullptr;
    cuda::attention_simple_backward(a, stream_);
  } else if (attention_ == "flash") {
    a.workspace_bytes = cuda::attention_flash_workspace_bytes(a);
    a.workspace = a.workspace_bytes ? scratch(a.workspace_bytes) : nullptr;
    cuda::attention_flash_backward(a, stream_);
  } else {
    a.workspace_bytes = cuda::attention_cudnn_workspace_bytes(a);
    a.workspace = a.workspace_bytes ? scratch(a.workspace_bytes) : nullptr;
    cuda::attention_cudnn_backward(a, stream_);
  }
}

// ---- pooler pieces ----

void CudaBackend::gather_rows(Tensor out, Tensor x, Tensor rows) {
  OpRange r("gather_rows");
  Check c("gather_rows");
  const DType act = c.act_of("x", x);
  c.matrix("x", x);
  c.act("out", out, act);
  c.matrix("out", out);
  const int64_t B = out.dim(0), C = x.dim(1);
  c.that(out.dim(1) == C, "out is ", out.str(), " but x is ", x.str());
  c.dtype("rows", rows, DType::i32);
  c.shape("rows", rows, {B});
  cuda::gather_rows(act, out.data, x.data, rows.as<const int32_t>(), B, C, x.dim(0), stream_);
}

void CudaBackend::scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) {
  OpRange r("scatter_add_rows");
  Check c("scatter_add_rows");
  const DType act = c.act_of("dx", dx);
  c.matrix("dx", dx);
  c.act("dout", dout, act);
  c.matrix("dout", dout);
  const int64_t B = dout.dim(0), C = dx.dim(1);
  c.that(dout.dim(1) == C, "dout is ", dout.str(), " but dx is ", dx.str());
  c.dtype("rows", rows, DType::i32);
  c.shape("rows", rows, {B});
  cuda::scatter_add_rows(act, dx.data, dout.data, rows.as<const int32_t>(), B, C, dx.dim(0), stream_);
}

void CudaBackend::tanh_forward(Tensor y, Tensor x) {
  OpRange r("tanh_forward");
  Check c("tanh_forward");
  const DType act = c.act_of("x", x);
  c.act("y", y, act);
  c.numel("y", y, x.numel());
  cuda::tanh_forward(act, y.data, x.data, x.numel(), stream_);
}

void CudaBackend::tanh_backward(Tensor dx, Tensor dy, Tensor y) {
  OpRange r("tanh_backward");
  Check c("tanh_backward");
  const DType act = c.act_of("dy", dy);
  c.act("y", y, act);
  c.act("dx", dx, act);
  c.numel("y", y, dy.numel());
  c.numel("dx", dx, dy.numel());
  cuda::tanh_backward(act, dx.data, dy.data, y.data, dy.numel(), stream_);
}

// ---- losses ----

void CudaBackend::cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) {
  OpRange r("cross_entropy");
  Check c("cross_entropy");
  const DType act = c.act_of("logits", logits);
  c.matrix("logits", logits);
  const int64_t N = logits.dim(0), C = logits.dim(1);
  c.that(C > 0, "logits is ", logits.str(), ": no classes");
  c.dtype("labels", labels, DType::i32);
  c.shape("labels", labels, {N});
  c.dtype("losses", losses, DType::f32);
  c.shape("losses", losses, {N});
  if (!dlogits.empty()) {
    c.act("dlogits", dlogits, act);
    c.shape("dlogits", dlogits, {N, C});
  }
  cuda::cross_entropy(act, losses.as<float>(), dlogits.data, logits.data, labels.as<const int32_t>(), N, C, scale,
                      stream_);
}

void CudaBackend::mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) {
  OpRange r("mse");
  Check c("mse");
  const DType act = c.act_of("pred", pred);
  const int64_t N = pred.ndim >= 1 ? pred.dim(0) : 0;
  c.shape("pred", pred, {N, 1});
  c.dtype("target", target, DType::f32);
  c.shape("target", target, {N});
  c.dtype("losses", losses, DType::f32);
  c.shape("losses", losses, {N});
  if (!dpred.empty()) {
    c.act("dpred", dpred, act);
    c.shape("dpred", dpred, {N, 1});
  }
  cuda::mse(act, losses.as<float>(), dpred.data, pred.data, target.as<const float>(), N, scale, stream_);
}

// ---- optimizer ----

void CudaBackend::global_norm(Tensor norm, Tensor grads) {
  OpRange r("global_norm");
  Check c("global_norm");
  c.dtype("grads", grads, DType::f32);
  c.dtype("norm", norm, DType::f32);
  c.numel("norm", norm, 1);
  void* ws = scratch(cuda::global_norm_scratch_bytes());
  cuda::global_norm(norm.as<float>(), grads.as<const float>(), grads.numel(), ws, stream_);
}

void CudaBackend::adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                        const AdamWArgs& args) {
  OpRange r("adamw");
  Check c("adamw");
  const int64_t n = params.numel();
  for (auto [name, t] : {std::pair{"params", params}, {"grads", grads}, {"m", m}, {"v", v}}) {
    c.dtype(name, t, DType::f32);
    c.numel(name, t, n);
  }
  if (!working.empty()) {
    c.on_gpu("working", working);
    c.that(working.dtype != DType::i32, "working is ", working.str(), ", expected f32, bf16 or f16");
    c.numel("working", working, n);
  }
  c.that(args.step >= 1, "step ", args.step, " must be >= 1 (bias correction is 1-based)");
  c.that(args.decay_end >= 0 && args.decay_end <= n, "decay_end ", args.decay_end, " is outside [0, ", n, "]");
  c.that(std::isfinite(args.lr) && std::isfinite(args.eps) && std::isfinite(args.weight_decay),
         "lr, eps and weight_decay must be finite");
  c.that(args.beta1 >= 0.f && args.beta1 < 1.f && args.beta2 >= 0.f && args.beta2 < 1.f, "betas (", args.beta1,
         ", ", args.beta2, ") must lie in [0, 1)");
  if (args.max_grad_norm > 0.f) {
    c.dtype("norm", norm, DType::f32);
    c.numel("norm", norm, 1);
  }
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
