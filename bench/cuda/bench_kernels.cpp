// Kernel benches for the CUDA backend at BERT-base (H 768, I 3072, 12 heads) and BERT-large
// (H 1024, I 4096, 16 heads) shapes, 4096 and 16384 tokens. Each op is timed with CUDA events on
// the backend's stream after three warm-up runs (manual time), and reports its achieved rate next
// to this machine's measured ceilings:
//   memory-bound kernels: GB/s (bytes each op must move at least) and % of the measured copy
//                         bandwidth (BM_Ceiling_CopyBandwidth: cudaMemcpy device to device, 1 GiB);
//   matrix products:      TFLOP/s and % of the measured large bf16 GEMM (BM_Ceiling_GemmBf16,
//                         8192^3 through the same cuBLASLt wrapper).
// Targets (issue 4): memory-bound kernels >= 80% of copy bandwidth, linear layers >= 70% of the
// GEMM ceiling at BERT-base shapes. Run with --benchmark_format=json (tools/gpu-check does).
// With no GPU every benchmark reports an error and the binary exits 0.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/kernels.h"
#include "cuda/matmul_cublaslt.h"
#include "engine/backend.h"
#include "engine/bf16.h"

namespace engine {
namespace {

double g_copy_gbs = 0;     // measured ceilings, filled by the ceiling benches (registered first)
double g_gemm_tflops = 0;

struct Gpu {
  std::unique_ptr<Backend> backend;
  CudaBackend* cuda = nullptr;
  cudaEvent_t start{}, stop{};
};

Gpu* gpu() {
  static Gpu* g = [] {
    if (!cuda_available()) return static_cast<Gpu*>(nullptr);
    auto* x = new Gpu;
    x->backend = make_backend("cuda");
    x->cuda = dynamic_cast<CudaBackend*>(x->backend.get());
    cudaEventCreate(&x->start);
    cudaEventCreate(&x->stop);
    return x;
  }();
  return g;
}

// Device buffers for one benchmark, freed when it ends.
class Buffers {
 public:
  explicit Buffers(Backend& b) : b_(b) {}
  ~Buffers() {
    b_.synchronize();
    for (void* p : ptrs_) b_.release(p);
  }
  Tensor make(DType t, std::initializer_list<int64_t> dims, bool random = true) {
    Tensor x(nullptr, t, Device::cuda, dims);
    x.data = b_.allocate(x.bytes());
    ptrs_.push_back(x.data);
    if (random && t != DType::i32) fill_random(x);
    else b_.fill(x, 0.f);
    return x;
  }
  Tensor ids(int64_t n, int32_t limit) {
    Tensor x = make(DType::i32, {n}, false);
    std::vector<int32_t> v(static_cast<size_t>(n));
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (int32_t& i : v) s = s * 6364136223846793005ull + 1442695040888963407ull, i = int32_t((s >> 33) % uint64_t(limit));
    b_.copy_from_host(x, v.data());
    return x;
  }

 private:
  // Small random values (a GEMM on zeros runs at a different clock), 16M elements per upload.
  void fill_random(Tensor x) {
    const int64_t n = x.numel(), chunk = int64_t(1) << 24;
    Tensor flat = x.view({n});
    std::vector<float> f;
    std::vector<uint16_t> h;
    uint64_t s = uint64_t(n) * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t begin = 0; begin < n; begin += chunk) {
      const int64_t len = std::min(chunk, n - begin);
      f.resize(size_t(len));
      for (float& v : f) s ^= s << 13, s ^= s >> 7, s ^= s << 17, v = float(int64_t(s % 2001) - 1000) * 1e-3f;
      Tensor part = flat.slice_rows(begin, len);
      if (x.dtype == DType::f32) {
        b_.copy_from_host(part, f.data());
      } else {
        h.resize(f.size());
        for (size_t i = 0; i < f.size(); ++i) h[i] = float_to_bf16(f[i]);
        b_.copy_from_host(part, h.data());
      }
    }
    b_.synchronize();
  }
  Backend& b_;
  std::vector<void*> ptrs_;
};

// Times `op` with CUDA events; bytes / flops per run give the rates.
void time_op(benchmark::State& state, const std::function<void()>& op, double bytes, double flops) {
  Gpu& g = *gpu();
  cudaStream_t stream = g.cuda->stream();
  for (int i = 0; i < 3; ++i) op();
  g.backend->synchronize();
  double total_s = 0;
  for (auto _ : state) {
    cudaEventRecord(g.start, stream);
    op();
    cudaEventRecord(g.stop, stream);
    cudaEventSynchronize(g.stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, g.start, g.stop);
    state.SetIterationTime(ms * 1e-3);
    total_s += ms * 1e-3;
  }
  const double per_run = total_s / double(state.iterations());
  if (bytes > 0) {
    const double gbs = bytes / per_run / 1e9;
    state.counters["GB/s"] = gbs;
    if (g_copy_gbs > 0) state.counters["pct_copy_bw"] = 100.0 * gbs / g_copy_gbs;
  }
  if (flops > 0) {
    const double tf = flops / per_run / 1e12;
    state.counters["TFLOP/s"] = tf;
    if (g_gemm_tflops > 0) state.counters["pct_gemm_peak"] = 100.0 * tf / g_gemm_tflops;
  }
}

#define NEED_GPU(state)                              \
  if (!gpu()) {                                      \
    state.SkipWithError("no CUDA GPU visible");      \
    return;                                          \
  }

int64_t intermediate(int64_t H) { return 4 * H; }
constexpr DType kAct = DType::bf16;

// ---- ceilings ----

void BM_Ceiling_CopyBandwidth(benchmark::State& state) {
  NEED_GPU(state);
  Buffers buf(*gpu()->backend);
  const int64_t n = int64_t(1) << 28;  // 1 GiB of f32
  Tensor a = buf.make(DType::f32, {n}, false), b = buf.make(DType::f32, {n}, false);
  time_op(state, [&] { gpu()->backend->copy(b, a); }, 2.0 * double(a.bytes()), 0);
  g_copy_gbs = state.counters["GB/s"];
}

void BM_Ceiling_GemmBf16(benchmark::State& state) {
  NEED_GPU(state);
  Buffers buf(*gpu()->backend);
  const int64_t n = 8192;
  Tensor a = buf.make(kAct, {n, n}), b = buf.make(kAct, {n, n}), c = buf.make(kAct, {n, n}, false);
  time_op(state, [&] { gpu()->backend->linear_forward(c, a, b, Tensor{}, Activation::none, Tensor{}); }, 0,
          2.0 * double(n) * n * n);
  g_gemm_tflops = state.counters["TFLOP/s"];
}

// ---- memory-bound kernels; args: tokens, hidden ----

void BM_LayernormForward(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t T = state.range(0), H = state.range(1);
  Buffers buf(*gpu()->backend);
  Tensor branch = buf.make(kAct, {T, H}), residual = buf.make(kAct, {T, H}), y = buf.make(kAct, {T, H}, false);
  Tensor s = buf.make(kAct, {T, H}, false), gamma = buf.make(kAct, {H}), beta = buf.make(kAct, {H});
  Tensor mean = buf.make(DType::f32, {T}, false), rstd = buf.make(DType::f32, {T}, false);
  time_op(state, [&] {
    gpu()->backend->add_dropout_layernorm_forward(y, s, mean, rstd, branch, residual, gamma, beta, 1e-12f, 0.1f,
                                                  DropoutRng{1, 2});
  }, 4.0 * T * H * 2 + 8.0 * T, 0);
}

void BM_LayernormBackward(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t T = state.range(0), H = state.range(1);
  Buffers buf(*gpu()->backend);
  Tensor dy = buf.make(kAct, {T, H}), s = buf.make(kAct, {T, H}), gamma = buf.make(kAct, {H});
  Tensor d_branch = buf.make(kAct, {T, H}, false), d_res = buf.make(kAct, {T, H}, false);
  Tensor mean = buf.make(DType::f32, {T}), rstd = buf.make(DType::f32, {T});
  Tensor dgamma = buf.make(DType::f32, {H}, false), dbeta = buf.make(DType::f32, {H}, false);
  time_op(state, [&] {
    gpu()->backend->add_dropout_layernorm_backward(d_branch, d_res, dgamma, dbeta, dy, s, mean, rstd, gamma, 0.1f,
                                                   DropoutRng{1, 2});
  }, 4.0 * T * H * 2 + 8.0 * T, 0);
}

void BM_EmbeddingsForward(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t T = state.range(0), H = state.range(1), vocab = 30522;
  Buffers buf(*gpu()->backend);
  Tensor word = buf.make(kAct, {vocab, H}), pos = buf.make(kAct, {512, H}), type = buf.make(kAct, {2, H});
  Tensor gamma = buf.make(kAct, {H}), beta = buf.make(kAct, {H});
  Tensor ids = buf.ids(T, int32_t(vocab)), pos_ids = buf.ids(T, 512), type_ids = buf.ids(T, 2);
  Tensor y = buf.make(kAct, {T, H}, false), s = buf.make(kAct, {T, H}, false);
  Tensor mean = buf.make(DType::f32, {T}, false), rstd = buf.make(DType::f32, {T}, false);
  time_op(state, [&] {
    gpu()->backend->embeddings_forward(y, s, mean, rstd, ids, pos_ids, type_ids, word, pos, type, gamma, beta, 1e-12f);
  }, 5.0 * T * H * 2 + 20.0 * T, 0);  // three gathered rows read, s and y written
}

void BM_EmbeddingsBackward(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t T = state.range(0), H = state.range(1), vocab = 30522;
  Buffers buf(*gpu()->backend);
  Tensor dword = buf.make(DType::f32, {vocab, H}, false), dpos = buf.make(DType::f32, {512, H}, false);
  Tensor dtype = buf.make(DType::f32, {2, H}, false);
  Tensor dgamma = buf.make(DType::f32, {H}, false), dbeta = buf.make(DType::f32, {H}, false);
  Tensor dy = buf.make(kAct, {T, H}), s = buf.make(kAct, {T, H}), gamma = buf.make(kAct, {H});
  Tensor mean = buf.make(DType::f32, {T}), rstd = buf.make(DType::f32, {T});
  Tensor ids = buf.ids(T, int32_t(vocab)), pos_ids = buf.ids(T, 512), type_ids = buf.ids(T, 2);
  // dy, s read; ds (f32) written once and read once per table; touched table rows read+written.
  time_op(state, [&] {
    gpu()->backend->embeddings_backward(dword, dpos, dtype, dgamma, dbeta, dy, s, mean, rstd, gamma, ids, pos_ids,
                                        type_ids);
  }, 2.0 * T * H * 2 + 4.0 * T * H * 4, 0);
}

void BM_GeluForward(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t T = state.range(0), I = intermediate(state.range(1));
  Buffers buf(*gpu()->backend);
  Tensor pre = buf.make(kAct, {T, I}), y = buf.make(kAct, {T, I}, false);
  time_op(state, [&] { cuda::gelu_forward(kAct, y.data, pre.data, T * I, gpu()->cuda->stream()); }, 2.0 * T * I * 2, 0);
}

void BM_GeluBackward(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t T = state.range(0), I = intermediate(state.range(1));
  Buffers buf(*gpu()->backend);
  Tensor pre = buf.make(kAct, {T, I}), dx = buf.make(kAct, {T, I});
  time_op(state, [&] { cuda::gelu_backward_inplace(kAct, dx.data, pre.data, T * I, gpu()->cuda->stream()); },
          3.0 * T * I * 2, 0);
}

void BM_Dropout(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t T = state.range(0), H = state.range(1);
  Buffers buf(*gpu()->backend);
  Tensor x = buf.make(kAct, {T, H}), y = buf.make(kAct, {T, H}, false);
  time_op(state, [&] { gpu()->backend->dropout_forward(y, x, 0.1f, DropoutRng{3, 4}); }, 2.0 * T * H * 2, 0);
}

// Softmax cross-entropy over a vocabulary-sized row (30528 = 30522 padded to a multiple of 64),
// the shape where the kernel is memory-bound; classification heads have 2..10 classes.
void BM_CrossEntropy(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t N = state.range(0), C = 30528;
  Buffers buf(*gpu()->backend);
  Tensor logits = buf.make(kAct, {N, C}), dlogits = buf.make(kAct, {N, C}, false);
  Tensor labels = buf.ids(N, int32_t(C)), losses = buf.make(DType::f32, {N}, false);
  time_op(state, [&] { gpu()->backend->cross_entropy(losses, dlogits, logits, labels, 1.f / float(N)); },
          2.0 * N * C * 2, 0);
}

// AdamW over the whole flat parameter buffer (BERT-base ~110M, BERT-large ~335M parameters):
// params, m, v read and written, grads read, bf16 working copy written.
int64_t model_params(int64_t H) { return H == 768 ? 110'000'000 : 335'000'000; }

void BM_AdamW(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t n = model_params(state.range(0));
  Buffers buf(*gpu()->backend);
  Tensor p = buf.make(DType::f32, {n}), g = buf.make(DType::f32, {n}), m = buf.make(DType::f32, {n}, false);
  Tensor v = buf.make(DType::f32, {n}, false), w = buf.make(kAct, {n}, false), norm = buf.make(DType::f32, {1}, false);
  gpu()->backend->global_norm(norm, g);
  AdamWArgs args;
  args.lr = 1e-5f;
  args.weight_decay = 0.01f;
  args.decay_end = n / 2;
  args.max_grad_norm = 1.f;
  time_op(state, [&] { gpu()->backend->adamw(p, g, m, v, w, norm, args); }, double(n) * (8 + 4 + 8 + 8 + 2), 0);
}

void BM_GlobalNorm(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t n = model_params(state.range(0));
  Buffers buf(*gpu()->backend);
  Tensor g = buf.make(DType::f32, {n}), norm = buf.make(DType::f32, {1}, false);
  time_op(state, [&] { gpu()->backend->global_norm(norm, g); }, double(n) * 4, 0);
}

// ---- linear layers; args: tokens, hidden, which (0 QKV, 1 attention output, 2 FFN up, 3 FFN down) ----

struct Layer {
  int64_t in, out;
};
Layer layer_of(int64_t H, int64_t which) {
  switch (which) {
    case 0: return {H, 3 * H};
    case 1: return {H, H};
    case 2: return {H, intermediate(H)};
    default: return {intermediate(H), H};
  }
}
const char* layer_name(int64_t which) {
  static const char* names[] = {"qkv", "attn_out", "ffn_up", "ffn_down"};
  return names[which];
}

void BM_LinearForward(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t N = state.range(0), H = state.range(1);
  const Layer l = layer_of(H, state.range(2));
  state.SetLabel(layer_name(state.range(2)));
  Buffers buf(*gpu()->backend);
  Tensor x = buf.make(kAct, {N, l.in}), w = buf.make(kAct, {l.out, l.in}), b = buf.make(kAct, {l.out});
  Tensor y = buf.make(kAct, {N, l.out}, false);
  time_op(state, [&] { gpu()->backend->linear_forward(y, x, w, b, Activation::none, Tensor{}); }, 0,
          2.0 * N * l.in * l.out);
}

void BM_LinearBackwardDx(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t N = state.range(0), H = state.range(1);
  const Layer l = layer_of(H, state.range(2));
  state.SetLabel(layer_name(state.range(2)));
  Buffers buf(*gpu()->backend);
  Tensor dy = buf.make(kAct, {N, l.out}), w = buf.make(kAct, {l.out, l.in}), dx = buf.make(kAct, {N, l.in}, false);
  time_op(state, [&] { gpu()->backend->linear_backward_dx(dx, dy, w, false, Activation::none, Tensor{}); }, 0,
          2.0 * N * l.in * l.out);
}

void BM_LinearBackwardDw(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t N = state.range(0), H = state.range(1);
  const Layer l = layer_of(H, state.range(2));
  state.SetLabel(layer_name(state.range(2)));
  Buffers buf(*gpu()->backend);
  Tensor dy = buf.make(kAct, {N, l.out}), x = buf.make(kAct, {N, l.in});
  Tensor dw = buf.make(DType::f32, {l.out, l.in}, false), db = buf.make(DType::f32, {l.out}, false);
  time_op(state, [&] { gpu()->backend->linear_backward_dw(dw, db, dy, x); }, 0, 2.0 * N * l.in * l.out);
}

// ---- GELU and bias-gradient: cuBLASLt epilogue vs separate kernel (FFN up / down at each shape) ----
// variant 0: BIAS epilogue + exact-erf GELU kernel (the default); 1: GELU_AUX_BIAS epilogue.
void BM_FfnUpGelu(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t N = state.range(0), H = state.range(1), I = intermediate(H);
  const bool epilogue = state.range(2) == 1;
  state.SetLabel(epilogue ? "cublasLt GELU_AUX_BIAS epilogue" : "BIAS epilogue + erf GELU kernel");
  Buffers buf(*gpu()->backend);
  Tensor x = buf.make(kAct, {N, H}), w = buf.make(kAct, {I, H}), b = buf.make(kAct, {I});
  Tensor y = buf.make(kAct, {N, I}, false), pre = buf.make(kAct, {N, I}, false);
  gpu()->cuda->set_gelu_epilogue(epilogue);
  if (epilogue && !gpu()->cuda->blas().supported(cuda::linear_forward_gemm(kAct, y.data, x.data, w.data, b.data, N,
                                                                            H, I, cuda::Epilogue::gelu_aux_bias,
                                                                            pre.data))) {
    gpu()->cuda->set_gelu_epilogue(false);
    state.SkipWithError("cuBLASLt offers no GELU_AUX_BIAS algorithm here");
    return;
  }
  time_op(state, [&] { gpu()->backend->linear_forward(y, x, w, b, Activation::gelu, pre); }, 0, 2.0 * N * H * I);
  gpu()->cuda->set_gelu_epilogue(false);
}

// variant 0: plain dX product + dGELU kernel (the default); 1: DGELU epilogue.
void BM_FfnDownDxDgelu(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t N = state.range(0), H = state.range(1), I = intermediate(H);
  const bool epilogue = state.range(2) == 1;
  state.SetLabel(epilogue ? "cublasLt DGELU epilogue" : "dX product + dGELU kernel");
  Buffers buf(*gpu()->backend);
  Tensor dy = buf.make(kAct, {N, H}), w = buf.make(kAct, {H, I}), pre = buf.make(kAct, {N, I});
  Tensor dx = buf.make(kAct, {N, I}, false);
  gpu()->cuda->set_gelu_epilogue(epilogue);
  if (epilogue &&
      !gpu()->cuda->blas().supported(cuda::linear_dx_gemm(kAct, dx.data, dy.data, w.data, N, I, H, false, pre.data))) {
    gpu()->cuda->set_gelu_epilogue(false);
    state.SkipWithError("cuBLASLt offers no DGELU algorithm here");
    return;
  }
  time_op(state, [&] { gpu()->backend->linear_backward_dx(dx, dy, w, false, Activation::gelu, pre); }, 0,
          2.0 * N * H * I);
  gpu()->cuda->set_gelu_epilogue(false);
}

// variant 0: dW product + deterministic column-sum kernel for db (the default); 1: BGRADB epilogue
// writing db (the add of its result into the accumulated gradient is not included).
void BM_FfnDownDwBias(benchmark::State& state) {
  NEED_GPU(state);
  const int64_t N = state.range(0), H = state.range(1), I = intermediate(H);
  const bool epilogue = state.range(2) == 1;
  state.SetLabel(epilogue ? "cublasLt BGRADB epilogue" : "dW product + column-sum kernel");
  Buffers buf(*gpu()->backend);
  Tensor dy = buf.make(kAct, {N, H}), x = buf.make(kAct, {N, I});
  Tensor dw = buf.make(DType::f32, {H, I}, false), db = buf.make(DType::f32, {H}, false);
  if (epilogue) {
    const cuda::Gemm g = cuda::linear_dw_gemm(kAct, dw.as<float>(), dy.data, x.data, N, I, H, db.as<float>());
    if (!gpu()->cuda->blas().supported(g)) {
      state.SkipWithError("cuBLASLt offers no BGRADB algorithm for bf16 -> f32 here");
      return;
    }
    time_op(state, [&] { gpu()->cuda->blas().run(g, gpu()->cuda->stream()); }, 0, 2.0 * N * H * I);
    return;
  }
  time_op(state, [&] { gpu()->backend->linear_backward_dw(dw, db, dy, x); }, 0, 2.0 * N * H * I);
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int64_t H : {768, 1024})
    for (int64_t T : {4096, 16384}) b->Args({T, H});
}
void linear_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t H : {768, 1024})
    for (int64_t T : {4096, 16384})
      for (int64_t which = 0; which < 4; ++which) b->Args({T, H, which});
}
void variant_shapes(benchmark::internal::Benchmark* b) {
  for (int64_t H : {768, 1024})
    for (int64_t T : {4096, 16384})
      for (int64_t v = 0; v < 2; ++v) b->Args({T, H, v});
}

#define GPU_BENCH(fn) BENCHMARK(fn)->UseManualTime()->Unit(benchmark::kMicrosecond)
GPU_BENCH(BM_Ceiling_CopyBandwidth)->Iterations(20);
GPU_BENCH(BM_Ceiling_GemmBf16)->Iterations(20);
GPU_BENCH(BM_LayernormForward)->Apply(shapes);
GPU_BENCH(BM_LayernormBackward)->Apply(shapes);
GPU_BENCH(BM_EmbeddingsForward)->Apply(shapes);
GPU_BENCH(BM_EmbeddingsBackward)->Apply(shapes);
GPU_BENCH(BM_GeluForward)->Apply(shapes);
GPU_BENCH(BM_GeluBackward)->Apply(shapes);
GPU_BENCH(BM_Dropout)->Apply(shapes);
GPU_BENCH(BM_CrossEntropy)->Arg(4096)->Arg(16384);
GPU_BENCH(BM_AdamW)->Arg(768)->Arg(1024);
GPU_BENCH(BM_GlobalNorm)->Arg(768)->Arg(1024);
GPU_BENCH(BM_LinearForward)->Apply(linear_shapes);
GPU_BENCH(BM_LinearBackwardDx)->Apply(linear_shapes);
GPU_BENCH(BM_LinearBackwardDw)->Apply(linear_shapes);
GPU_BENCH(BM_FfnUpGelu)->Apply(variant_shapes);
GPU_BENCH(BM_FfnDownDxDgelu)->Apply(variant_shapes);
GPU_BENCH(BM_FfnDownDwBias)->Apply(variant_shapes);

}  // namespace
}  // namespace engine

BENCHMARK_MAIN();
