// Fused attention ("flash", cuda/attention_flash.cu, and "cudnn", cuda/attention_cudnn.cpp) against
// the CPU reference (engine/cpu/attention.cpp) on fresh random inputs.
//
// Inputs are drawn in f32, rounded to bf16, and the same rounded values go to both sides, so the only
// differences are the kernel's bf16 operands (P, dS) and outputs. Every GPU output is poisoned with
// NaN before the run and any non-finite value fails the check. Errors are measured as
// max |gpu - ref| / max |ref| per tensor: 1e-2 for the forward (out) and lse, 2e-2 for dQ, dK, dV
// (two bf16 roundings of operands on the way: P and dS), fixed before any run.
// Buffers are allocated with exactly T rows, so a read of a row that does not exist is an
// out-of-bounds access that `compute-sanitizer --tool memcheck` reports.
// The seed is printed; ENGINE_TEST_SEED=<n> replays a run. Everything skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cuda/attention.h"
#include "engine/backend.h"
#include "engine/bf16.h"
#include "gpu_or_sim.h"

namespace {

using engine::BatchShape;
using engine::Device;
using engine::DropoutRng;
using engine::DType;
using engine::Tensor;
namespace ec = engine::cuda;

#define CUDA_OK(x)                                                                     \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    ASSERT_EQ(e_, cudaSuccess) << #x << ": " << cudaGetErrorString(e_);                \
  } while (0)

uint64_t test_seed() {
  static uint64_t seed = [] {
    const char* env = std::getenv("ENGINE_TEST_SEED");
    uint64_t s = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
    std::printf("test_attention: seed %llu (ENGINE_TEST_SEED=%llu replays it)\n", (unsigned long long)s,
                (unsigned long long)s);
    return s;
  }();
  return seed;
}

// Device buffer of exactly `bytes` (nothing past it may be read), freed at scope exit.
struct DeviceBuffer {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) p = nullptr;
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

std::vector<uint16_t> to_bf16(const std::vector<float>& x) {
  std::vector<uint16_t> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = engine::float_to_bf16(x[i]);
  return y;
}
std::vector<float> from_bf16(const std::vector<uint16_t>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = engine::bf16_to_float(x[i]);
  return y;
}

// Normal(0, 1) values already rounded to bf16, so CPU and GPU see the same numbers.
std::vector<float> random_bf16_values(size_t n, std::mt19937_64& gen) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> x(n);
  for (auto& v : x) v = engine::bf16_to_float(engine::float_to_bf16(dist(gen)));
  return x;
}

// max |got - ref| over [begin, end) columns of each row of width `width`, divided by
// max(max |ref|, floor). Any non-finite got value gives +inf (NaN never passes).
// The floor matters where the reference is zero in exact arithmetic: a length-1 sequence has
// dQ = dK = 0 (softmax over one key), which the CPU gets as ~1e-8 and the GPU as ~1e-6 (its D =
// rowsum(dO * O) and dP are summed in different orders), a relative error of ~100 without it.
double rel_error(const std::vector<float>& got, const std::vector<float>& ref, int64_t rows, int64_t width,
                 int64_t col0, int64_t cols, int64_t* bad = nullptr, double floor = 1e-20) {
  double max_ref = 0, max_err = 0;
  int64_t nonfinite = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = col0; c < col0 + cols; ++c) {
      const float g = got[r * width + c], f = ref[r * width + c];
      if (!std::isfinite(g)) {
        ++nonfinite;
        continue;
      }
      max_ref = std::max(max_ref, std::fabs(double(f)));
      max_err = std::max(max_err, std::fabs(double(g) - double(f)));
    }
  if (bad) *bad = nonfinite;
  if (nonfinite) return std::numeric_limits<double>::infinity();
  return max_err / std::max(max_ref, floor);
}

struct Problem {
  std::vector<int> lengths;
  int heads = 3, d = 64;
  float p = 0.f;

  std::vector<int32_t> cu;
  int64_t T = 0, H = 0;
  int max_len = 0;
  std::vector<float> qkv, dout;  // bf16-exact values
  DropoutRng rng;

  void make(std::mt19937_64& gen) {
    cu.assign(1, 0);
    for (int l : lengths) cu.push_back(cu.back() + l);
    T = cu.back();
    H = int64_t(heads) * d;
    max_len = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
    qkv = random_bf16_values(size_t(T * 3 * H), gen);
    dout = random_bf16_values(size_t(T * H), gen);
    // offset: the batch's first query row in a data-parallel global batch (whole rows: a multiple of 4)
    rng = DropoutRng{gen(), uint32_t(gen()), engine::attention_dropout_index(int64_t(gen() % 5000), 0, heads, 0)};
  }
  float scale() const { return 1.f / std::sqrt(float(d)); }
  BatchShape shape() const { return BatchShape{T, int64_t(lengths.size()), max_len}; }
};

struct CpuResult {
  std::vector<float> out, lse, dqkv;
};

CpuResult run_cpu(const Problem& pr) {
  auto cpu = engine::make_backend("cpu-ref");
  CpuResult r;
  r.out.assign(size_t(pr.T * pr.H), 0.f);
  r.lse.assign(size_t(pr.T * pr.heads), 0.f);
  r.dqkv.assign(size_t(pr.T * 3 * pr.H), 0.f);
  std::vector<float> qkv = pr.qkv, dout = pr.dout;
  std::vector<int32_t> cu = pr.cu;
  Tensor tqkv(qkv.data(), DType::f32, Device::cpu, {pr.T, 3 * pr.H});
  Tensor tout(r.out.data(), DType::f32, Device::cpu, {pr.T, pr.H});
  Tensor tlse(r.lse.data(), DType::f32, Device::cpu, {pr.T, int64_t(pr.heads)});
  Tensor tcu(cu.data(), DType::i32, Device::cpu, {int64_t(cu.size())});
  Tensor tdout(dout.data(), DType::f32, Device::cpu, {pr.T, pr.H});
  Tensor tdqkv(r.dqkv.data(), DType::f32, Device::cpu, {pr.T, 3 * pr.H});
  cpu->attention_forward(tout, tlse, tqkv, tcu, pr.shape(), pr.heads, pr.scale(), pr.p, pr.rng);
  cpu->attention_backward(tdqkv, tdout, tqkv, tout, tlse, tcu, pr.shape(), pr.heads, pr.scale(), pr.p, pr.rng);
  return r;
}

// One GPU implementation's forward and backward on the problem, outputs poisoned before each call.
struct GpuResult {
  std::vector<float> out, lse, dqkv;
  std::vector<uint16_t> dqkv_bits;
};

enum class Impl { flash, cudnn };

void run_gpu(const Problem& pr, Impl impl, GpuResult* res, bool backward = true) {
  const size_t act = sizeof(uint16_t);
  DeviceBuffer qkv(size_t(pr.T * 3 * pr.H) * act), out(size_t(pr.T * pr.H) * act),
      lse(size_t(pr.T * pr.heads) * sizeof(float)), cu(pr.cu.size() * sizeof(int32_t)),
      dout(size_t(pr.T * pr.H) * act), dqkv(size_t(pr.T * 3 * pr.H) * act);
  ASSERT_TRUE(qkv.p && out.p && lse.p && cu.p && dout.p && dqkv.p) << "cudaMalloc failed";
  const auto qkv_h = to_bf16(pr.qkv), dout_h = to_bf16(pr.dout);
  CUDA_OK(cudaMemcpy(qkv.p, qkv_h.data(), qkv.bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dout.p, dout_h.data(), dout.bytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(cu.p, pr.cu.data(), cu.bytes, cudaMemcpyHostToDevice));
  // Poison: 0xFF bytes are NaN in bf16 and f32 alike.
  CUDA_OK(cudaMemset(out.p, 0xFF, out.bytes));
  CUDA_OK(cudaMemset(lse.p, 0xFF, lse.bytes));
  CUDA_OK(cudaMemset(dqkv.p, 0xFF, dqkv.bytes));

  ec::AttentionArgs a;
  a.bf16 = true;
  a.qkv = qkv.p;
  a.out = out.p;
  a.lse = static_cast<float*>(lse.p);
  a.cu_seqlens = static_cast<const int32_t*>(cu.p);
  a.cu_seqlens_host = pr.cu.data();
  a.tokens = pr.T;
  a.sequences = int(pr.lengths.size());
  a.max_seqlen = pr.max_len;
  a.heads = pr.heads;
  a.head_dim = pr.d;
  a.scale = pr.scale();
  a.dropout_p = pr.p;
  a.rng = pr.rng;
  a.dout = dout.p;
  a.dqkv = dqkv.p;
  const size_t ws_bytes = impl == Impl::flash ? ec::attention_flash_workspace_bytes(a)
                                              : ec::attention_cudnn_workspace_bytes(a);
  DeviceBuffer ws(ws_bytes);
  ASSERT_TRUE(ws.p) << "cudaMalloc of " << ws_bytes << " workspace bytes failed";
  a.workspace = ws.p;
  a.workspace_bytes = ws_bytes;

  if (impl == Impl::flash) ec::attention_flash_forward(a, nullptr);
  else ec::attention_cudnn_forward(a, nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  if (backward) {
    if (impl == Impl::flash) ec::attention_flash_backward(a, nullptr);
    else ec::attention_cudnn_backward(a, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
  }

  std::vector<uint16_t> out_h(size_t(pr.T * pr.H)), dqkv_h(size_t(pr.T * 3 * pr.H));
  res->lse.resize(size_t(pr.T * pr.heads));
  CUDA_OK(cudaMemcpy(out_h.data(), out.p, out.bytes, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(res->lse.data(), lse.p, lse.bytes, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(dqkv_h.data(), dqkv.p, dqkv.bytes, cudaMemcpyDeviceToHost));
  res->out = from_bf16(out_h);
  res->dqkv = from_bf16(dqkv_h);
  res->dqkv_bits = dqkv_h;
}

std::string describe(const Problem& pr) {
  std::string s = "lengths {";
  for (size_t i = 0; i < pr.lengths.size(); ++i) {
    if (i == 8) {
      s += ", ... (" + std::to_string(pr.lengths.size()) + " sequences)";
      break;
    }
    s += (i ? ", " : "") + std::to_string(pr.lengths[i]);
  }
  return s + "}, heads " + std::to_string(pr.heads) + ", d " + std::to_string(pr.d) + ", p " +
         std::to_string(pr.p);
}

// The most the bf16 rounding of O can move dQ (part 0) or dK (part 1). The kernel takes
// D = rowsum(dO * O) from the O it stored in bf16, where the reference sums P dP exactly, so D_i is off
// by up to 2^-9 sum_e |dO_ie O_ie| (half an ulp per element; doubled below for the f32 sums around
// it), dS = P (dP - D) by P_ij times that, dQ_i = scale sum_j dS_ij K_j by scale max|dD| max|K| (P sums
// to 1 over j) and dK_j = scale sum_i dS_ij Q_i by at most max_len times that with max|Q|. With
// dropout, a length-1 sequence's dQ and dK (zero: dS = 0 with one key) are this noise and nothing else;
// the sim found it, against a fixed floor of 1e-2 that held only without dropout (O = V exactly).
double d_rounding_bound(const Problem& pr, const CpuResult& c, int part) {
  double max_d_err = 0, max_other = 0;
  for (int64_t t = 0; t < pr.T; ++t)
    for (int h = 0; h < pr.heads; ++h) {
      double sum = 0;
      for (int e = 0; e < pr.d; ++e) {
        const int64_t i = t * pr.H + h * pr.d + e;
        sum += std::fabs(double(pr.dout[size_t(i)]) * double(c.out[size_t(i)]));
      }
      max_d_err = std::max(max_d_err, 2.0 * std::ldexp(sum, -9));
    }
  // dQ pairs with K (part 1 of qkv), dK with Q (part 0).
  const int64_t other = part == 0 ? pr.H : 0;
  for (int64_t t = 0; t < pr.T; ++t)
    for (int64_t e = 0; e < pr.H; ++e) max_other = std::max(max_other, std::fabs(double(pr.qkv[size_t(t * 3 * pr.H + other + e)])));
  const double rows = part == 0 ? 1.0 : double(std::max(pr.max_len, 1));
  return double(pr.scale()) * max_d_err * max_other * rows;
}

void expect_close(const GpuResult& g, const CpuResult& c, const Problem& pr, bool backward) {
  int64_t bad = 0;
  const double e_out = rel_error(g.out, c.out, pr.T, pr.H, 0, pr.H, &bad);
  EXPECT_LE(e_out, 1e-2) << describe(pr) << ": out, " << bad << " non-finite";
  const double e_lse = rel_error(g.lse, c.lse, pr.T, pr.heads, 0, pr.heads, &bad);
  EXPECT_LE(e_lse, 1e-2) << describe(pr) << ": lse, " << bad << " non-finite";
  if (!backward) return;
  const char* names[3] = {"dQ", "dK", "dV"};
  for (int part = 0; part < 3; ++part) {
    // Inputs are N(0, 1), so gradients of a real sequence are far above 1e-2 at their maximum. Where
    // dQ and dK vanish in exact arithmetic (a length-1 sequence), the bf16 rounding of O is what is
    // left: the tolerance never goes below its bound (d_rounding_bound).
    const double floor = part == 2 ? 1e-2 : std::max(1e-2, d_rounding_bound(pr, c, part) / 2e-2);
    const double e = rel_error(g.dqkv, c.dqkv, pr.T, 3 * pr.H, part * pr.H, pr.H, &bad, floor);
    EXPECT_LE(e, 2e-2) << describe(pr) << ": " << names[part] << ", " << bad << " non-finite";
  }
}

// ---- cases ----

struct Case {
  std::string name;
  std::vector<int> lengths;
  int d;
  float p;
};

std::vector<Case> all_cases() {
  // The sim stops at 257 (five key tiles, a partial last one): longer sequences only run the same
  // tile loop more times.
  const int longest = int(engine::test::gpu_or_sim(512, 257)), long2 = int(engine::test::gpu_or_sim(384, 200));
  const std::vector<int> singles = {1, 7, 64, 127, 128, 129, long2, longest};
  std::vector<Case> cases;
  for (int d : {32, 64, 128})
    for (float p : {0.f, 0.1f}) {
      const std::string tail = "_d" + std::to_string(d) + (p > 0 ? "_drop" : "_nodrop");
      for (int l : singles) cases.push_back({"len" + std::to_string(l) + tail, {l}, d, p});
      cases.push_back({"mixed" + tail, {129, 1, longest, 7, 64, long2, 127, 128, 1}, d, p});
      cases.push_back({"empty" + tail, {0, 65, 0, 3, 0}, d, p});  // zero-length sequences write nothing
    }
  return cases;
}

// Printed by gtest (and so in ctest test names): the case name, not the struct's bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class AttentionVsCpu : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionVsCpu, FlashForwardBackward) {
  if (!engine::cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  const Case& c = GetParam();
  std::mt19937_64 gen(test_seed() ^ std::hash<std::string>{}(c.name));
  Problem pr;
  pr.lengths = c.lengths;
  pr.d = c.d;
  pr.p = c.p;
  pr.make(gen);
  const CpuResult ref = run_cpu(pr);
  GpuResult g;
  run_gpu(pr, Impl::flash, &g);
  if (HasFatalFailure()) return;
  expect_close(g, ref, pr, true);
}

INSTANTIATE_TEST_SUITE_P(Cases, AttentionVsCpu, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Many short sequences of random length 8..128 (the fine-tuning case), BERT-base-like heads.
TEST(Attention, FlashRandomMixedBatch) {
  if (!engine::cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  std::mt19937_64 gen(test_seed() + 17);
  std::uniform_int_distribution<int> len(8, 128);
  for (float p : {0.f, 0.1f}) {
    Problem pr;
    pr.heads = 12;
    pr.d = 64;
    pr.p = p;
    for (int i = 0; i < 24; ++i) pr.lengths.push_back(len(gen));
    pr.make(gen);
    const CpuResult ref = run_cpu(pr);
    GpuResult g;
    run_gpu(pr, Impl::flash, &g);
    if (HasFatalFailure()) return;
    expect_close(g, ref, pr, true);
  }
}

// Same inputs twice: bitwise the same gradients (no atomics in a varying order).
TEST(Attention, FlashBackwardIsDeterministic) {
  if (!engine::cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  std::mt19937_64 gen(test_seed() + 23);
  Problem pr;
  pr.heads = 12;
  pr.d = 64;
  pr.p = 0.1f;
  pr.lengths = {int(engine::test::gpu_or_sim(512, 257)), int(engine::test::gpu_or_sim(300, 200)), 128, 77, 1};
  pr.make(gen);
  GpuResult a, b;
  run_gpu(pr, Impl::flash, &a);
  run_gpu(pr, Impl::flash, &b);
  if (HasFatalFailure()) return;
  EXPECT_EQ(a.dqkv_bits, b.dqkv_bits) << describe(pr);
}

// A sequence's results do not depend on its neighbours: sequence 1 alone equals sequence 1 in a batch.
TEST(Attention, FlashSequencesAreIsolated) {
  if (!engine::cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  std::mt19937_64 gen(test_seed() + 29);
  Problem batch;
  batch.heads = 2;
  batch.d = 64;
  batch.lengths = {100, 70, 200};
  batch.make(gen);
  Problem one = batch;
  one.lengths = {70};
  one.make(gen);  // new shapes and dout, then copy sequence 1's rows from the batch
  const int64_t row0 = batch.cu[1];
  std::copy(batch.qkv.begin() + row0 * 3 * batch.H, batch.qkv.begin() + (row0 + 70) * 3 * batch.H, one.qkv.begin());
  GpuResult gb, go;
  run_gpu(batch, Impl::flash, &gb, false);
  run_gpu(one, Impl::flash, &go, false);
  if (HasFatalFailure()) return;
  for (int64_t i = 0; i < 70 * one.H; ++i) {
    ASSERT_EQ(go.out[i], gb.out[row0 * batch.H + i]) << "element " << i;
  }
}

TEST(Attention, FlashRejectsFp32) {
  ec::AttentionArgs a;
  a.bf16 = false;
  a.head_dim = 64;
  a.heads = 1;
  EXPECT_THROW(ec::attention_flash_forward(a, nullptr), engine::Error);
}

// cuDNN's fused attention on the same inputs, dropout 0 (cuDNN draws its own dropout masks from its
// own Philox layout, so only p = 0 is comparable element by element), against the CPU reference.
class CudnnVsCpu : public ::testing::TestWithParam<int> {};

TEST_P(CudnnVsCpu, ForwardBackwardMatchesReference) {
  if (!engine::cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  if (engine::test::kSim) GTEST_SKIP() << "cuDNN is not emulated by the sim; this test runs on a GPU only";
  std::mt19937_64 gen(test_seed() + 31 + GetParam());
  Problem pr;
  pr.heads = 3;
  pr.d = GetParam();
  pr.lengths = {129, 1, 512, 7, 64, 384, 127, 128};
  pr.make(gen);
  const CpuResult ref = run_cpu(pr);
  GpuResult c, f;
  run_gpu(pr, Impl::cudnn, &c);
  run_gpu(pr, Impl::flash, &f);
  if (HasFatalFailure()) return;
  expect_close(c, ref, pr, true);
  // Flash vs cuDNN directly: both bf16, so allow the sum of their reference tolerances.
  int64_t bad = 0;
  EXPECT_LE(rel_error(f.out, c.out, pr.T, pr.H, 0, pr.H, &bad), 2e-2) << "flash vs cudnn out";
  EXPECT_LE(rel_error(f.dqkv, c.dqkv, pr.T, 3 * pr.H, 0, 3 * pr.H, &bad), 4e-2) << "flash vs cudnn dqkv";
}

INSTANTIATE_TEST_SUITE_P(HeadDims, CudnnVsCpu, ::testing::Values(64, 128, 32));

}  // namespace
