// Fused attention benches: the hand-written "flash" kernel vs the "cudnn" path on BERT shapes.
// BERT-base heads (12 x 64) and BERT-large heads (16 x 64); fixed lengths 128 and 512 and a mixed
// batch of lengths drawn uniformly from 8..128 (seed 1234); every batch fills 16384 tokens. bf16,
// scale 1/8, dropout 0 (the cuDNN path has no matching dropout; flash with p = 0.1 is a separate row).
// Timing: CUDA events around the launches on one stream, Google Benchmark manual time.
// TFLOP/s counts only the non-padded work, the FlashAttention convention:
//   forward            = 4 * sum_i(len_i^2) * d * heads   (Q K^T and P V, 2 flops per multiply-add)
//   forward + backward = 3.5 x forward                    (backward = 2.5 x: five products)
// so padded baselines (PyTorch SDPA, bench/pytorch_sdpa_baseline.py) get no credit for padding.
// Counters: TFLOPs (non-padded), tokens. Skips with an error when no GPU is visible.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "cuda/attention.h"
#include "engine/backend.h"

namespace {

namespace ec = engine::cuda;
constexpr int64_t kTokens = 16384;

std::vector<int> batch_lengths(int len) {  // len 0: mixed 8..128
  std::vector<int> l;
  if (len > 0) {
    l.assign(size_t(kTokens / len), len);
    return l;
  }
  std::mt19937 gen(1234);
  std::uniform_int_distribution<int> dist(8, 128);
  int64_t t = 0;
  while (true) {
    const int x = dist(gen);
    if (t + x > kTokens) break;
    l.push_back(x);
    t += x;
  }
  return l;
}

struct Buffers {
  void *qkv = nullptr, *out = nullptr, *dout = nullptr, *dqkv = nullptr, *ws = nullptr;
  float* lse = nullptr;
  int32_t* cu = nullptr;
  ~Buffers() {
    for (void* p : {qkv, out, dout, dqkv, ws, static_cast<void*>(lse), static_cast<void*>(cu)}) cudaFree(p);
  }
};

// Fills bf16 buffer with values in about [-2, 2] (random bits in mantissa, small exponent).
void fill_random(void* p, size_t elements, uint32_t seed) {
  std::vector<uint16_t> h(elements);
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  for (auto& v : h) {
    float f = dist(gen);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    v = uint16_t(u >> 16);
  }
  cudaMemcpy(p, h.data(), elements * 2, cudaMemcpyHostToDevice);
}

// args: heads, len (0 = mixed), impl (0 flash, 1 cudnn), backward (0/1), dropout x100
void BM_Attention(benchmark::State& state) {
  if (!engine::cuda_available()) {
    state.SkipWithError("no CUDA GPU visible");
    return;
  }
  const int heads = int(state.range(0)), len = int(state.range(1)), impl = int(state.range(2));
  const bool backward = state.range(3) != 0;
  const float p = float(state.range(4)) / 100.f;
  const int d = 64;
  const std::vector<int> lengths = batch_lengths(len);
  std::vector<int32_t> cu(1, 0);
  double sum_sq = 0;
  int max_len = 0;
  for (int l : lengths) {
    cu.push_back(cu.back() + l);
    sum_sq += double(l) * l;
    max_len = std::max(max_len, l);
  }
  const int64_t T = cu.back(), H = int64_t(heads) * d;

  Buffers b;
  cudaMalloc(&b.qkv, size_t(T * 3 * H) * 2);
  cudaMalloc(&b.out, size_t(T * H) * 2);
  cudaMalloc(&b.dout, size_t(T * H) * 2);
  cudaMalloc(&b.dqkv, size_t(T * 3 * H) * 2);
  cudaMalloc(reinterpret_cast<void**>(&b.lse), size_t(T * heads) * 4);
  cudaMalloc(reinterpret_cast<void**>(&b.cu), cu.size() * 4);
  fill_random(b.qkv, size_t(T * 3 * H), 1);
  fill_random(b.dout, size_t(T * H), 2);
  cudaMemcpy(b.cu, cu.data(), cu.size() * 4, cudaMemcpyHostToDevice);

  ec::AttentionArgs a;
  a.qkv = b.qkv;
  a.out = b.out;
  a.lse = b.lse;
  a.cu_seqlens = b.cu;
  a.cu_seqlens_host = cu.data();
  a.tokens = T;
  a.sequences = int(lengths.size());
  a.max_seqlen = max_len;
  a.heads = heads;
  a.head_dim = d;
  a.scale = 1.f / std::sqrt(float(d));
  a.dropout_p = p;
  a.rng = engine::DropoutRng{42, 7};
  a.dout = b.dout;
  a.dqkv = b.dqkv;
  try {
    a.workspace_bytes = impl == 0 ? ec::attention_flash_workspace_bytes(a) : ec::attention_cudnn_workspace_bytes(a);
    cudaMalloc(&b.ws, a.workspace_bytes ? a.workspace_bytes : 1);
    a.workspace = b.ws;
    auto run = [&] {
      if (impl == 0) {
        ec::attention_flash_forward(a, nullptr);
        if (backward) ec::attention_flash_backward(a, nullptr);
      } else {
        ec::attention_cudnn_forward(a, nullptr);
        if (backward) ec::attention_cudnn_backward(a, nullptr);
      }
    };
    run();  // warm up (and build cuDNN plans)
    if (cudaDeviceSynchronize() != cudaSuccess) {
      state.SkipWithError("kernel failed");
      return;
    }
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (auto _ : state) {
      cudaEventRecord(e0);
      run();
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      state.SetIterationTime(ms / 1e3);
    }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  } catch (const engine::Error& e) {
    state.SkipWithError(e.what());
    return;
  }
  const double flops = 4.0 * sum_sq * d * heads * (backward ? 3.5 : 1.0);
  state.counters["TFLOPs"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens"] = double(T);
  state.counters["seqs"] = double(lengths.size());
  state.SetLabel(std::string(impl == 0 ? "flash" : "cudnn") + (backward ? " fwd+bwd" : " fwd") + " heads=" +
                 std::to_string(heads) + " len=" + (len ? std::to_string(len) : std::string("mixed8-128")) +
                 " p=" + std::to_string(p));
}

void Args(benchmark::internal::Benchmark* b) {
  for (int heads : {12, 16})
    for (int len : {128, 512, 0})
      for (int bwd : {0, 1}) {
        for (int impl : {0, 1}) b->Args({heads, len, impl, bwd, 0});
        b->Args({heads, len, 0, bwd, 10});  // flash with dropout 0.1: the cost of the Philox masks
      }
}

BENCHMARK(BM_Attention)->Apply(Args)->UseManualTime()->Unit(benchmark::kMicrosecond)->MinTime(0.2);

}  // namespace

BENCHMARK_MAIN();
