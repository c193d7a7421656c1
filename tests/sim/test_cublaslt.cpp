// The sim's cuBLASLt subset (cuda/sim/cublaslt.cpp) and CUB radix sort (cuda/sim/include/cub/...)
// against references written here: a naive triple loop in double with its own tanh-GELU (and the
// GELU derivative by central differences), and, for the sort, the properties a stable sort by key
// bits must have. Fresh random inputs each run (the seed is printed; ENGINE_TEST_SEED replays it),
// every transpose, every epilogue, bf16 / fp16 / f32, leading dimensions above the rows, beta 0 and
// 1, sizes 1, 7 and 33. Outputs are poisoned with NaN first and NaN never passes; the padding rows
// below each leading dimension must keep their poison. Then every rejected case and its status.
#include <cub/device/device_radix_sort.cuh>
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../test_seed.h"
#include "engine/bf16.h"

namespace {

uint64_t fresh_seed() {
  const uint64_t seed = pick_seed();
  std::printf("[ seed ] ENGINE_TEST_SEED=%llu\n", (unsigned long long)seed);
  return seed;
}

// ---- host <-> "device" ----

size_t elem_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

float round_to(cudaDataType_t t, float v) {
  if (t == CUDA_R_16BF) return engine::bf16_to_float(engine::float_to_bf16(v));
  if (t == CUDA_R_16F) return engine::fp16_to_float(engine::float_to_fp16(v));
  return v;
}

std::vector<unsigned char> encode(cudaDataType_t t, const std::vector<float>& v) {
  std::vector<unsigned char> out(v.size() * elem_size(t));
  for (size_t i = 0; i < v.size(); ++i) {
    if (t == CUDA_R_32F) {
      std::memcpy(&out[i * 4], &v[i], 4);
    } else {
      const uint16_t h = t == CUDA_R_16BF ? engine::float_to_bf16(v[i]) : engine::float_to_fp16(v[i]);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

std::vector<float> decode(cudaDataType_t t, const std::vector<unsigned char>& b) {
  std::vector<float> out(b.size() / elem_size(t));
  for (size_t i = 0; i < out.size(); ++i) {
    if (t == CUDA_R_32F) {
      std::memcpy(&out[i], &b[i * 4], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &b[i * 2], 2);
      out[i] = t == CUDA_R_16BF ? engine::bf16_to_float(h) : engine::fp16_to_float(h);
    }
  }
  return out;
}

// A cudaMalloc'd array of `count` elements of type t (exactly sized, so the sim's range checks and
// AddressSanitizer see any overrun).
class Dev {
 public:
  Dev(cudaDataType_t t, size_t count) : type_(t), count_(count) {
    EXPECT_EQ(cudaMalloc(&ptr_, std::max<size_t>(1, count * elem_size(t))), cudaSuccess);
  }
  ~Dev() { cudaFree(ptr_); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  void* get() const { return ptr_; }
  void upload(const std::vector<float>& v) {
    ASSERT_EQ(v.size(), count_);
    const auto bytes = encode(type_, v);
    ASSERT_EQ(cudaMemcpy(ptr_, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<float> download() const {
    std::vector<unsigned char> bytes(count_ * elem_size(type_));
    EXPECT_EQ(cudaMemcpy(bytes.data(), ptr_, bytes.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    return decode(type_, bytes);
  }

 private:
  cudaDataType_t type_;
  size_t count_;
  void* ptr_ = nullptr;
};

// ---- the reference ----

constexpr double kPi = 3.14159265358979323846;
double gelu_ref(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / kPi) * (x + 0.044715 * x * x * x))); }
double gelu_grad_ref(double x) {
  const double h = 1e-4;
  return (gelu_ref(x + h) - gelu_ref(x - h)) / (2 * h);
}

struct Case {
  bool ta = false, tb = false;
  int64_t m = 1, n = 1, k = 1;
  int64_t lda = 1, ldb = 1, ldc = 1, ldd = 1, ld_aux = 8;
  cudaDataType_t ab = CUDA_R_32F, cd = CUDA_R_32F;
  float alpha = 1.f, beta = 0.f;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  bool c_is_d = true;  // in place, as the engine calls it (then ldc == ldd)
};

std::string describe(const Case& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "%s%s m=%lld n=%lld k=%lld lda=%lld ldb=%lld ldc=%lld ldd=%lld ldaux=%lld ab=%d cd=%d "
                "alpha=%g beta=%g epilogue=%d c_is_d=%d",
                c.ta ? "T" : "N", c.tb ? "T" : "N", (long long)c.m, (long long)c.n, (long long)c.k, (long long)c.lda,
                (long long)c.ldb, (long long)c.ldc, (long long)c.ldd, (long long)c.ld_aux, int(c.ab), int(c.cd),
                c.alpha, c.beta, int(c.epilogue), int(c.c_is_d));
  return buf;
}

bool adds_bias(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool applies_gelu(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU || e == CUBLASLT_EPILOGUE_GELU_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX ||
         e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool writes_aux(cublasLtEpilogue_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}
bool reads_aux(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_DGELU; }
bool bias_grad(cublasLtEpilogue_t e) { return e == CUBLASLT_EPILOGUE_BGRADB; }

// Stored shapes: A is m x k (k x m when transposed), B is k x n (n x k when transposed).
int64_t a_rows(const Case& c) { return c.ta ? c.k : c.m; }
int64_t a_cols(const Case& c) { return c.ta ? c.m : c.k; }
int64_t b_rows(const Case& c) { return c.tb ? c.n : c.k; }
int64_t b_cols(const Case& c) { return c.tb ? c.k : c.n; }

struct Inputs {
  std::vector<float> a, b, c, bias, aux;  // a, b, c column-major with their lds; values as stored
};

struct Expected {
  std::vector<double> d, d_mag;      // m x n (column-major, packed)
  std::vector<double> aux, aux_mag;  // m x n
  std::vector<double> bgrad, bgrad_mag;
};

double opa(const Case& c, const Inputs& in, int64_t i, int64_t q) {
  return c.ta ? in.a[size_t(q + i * c.lda)] : in.a[size_t(i + q * c.lda)];
}
double opb(const Case& c, const Inputs& in, int64_t q, int64_t j) {
  return c.tb ? in.b[size_t(j + q * c.ldb)] : in.b[size_t(q + j * c.ldb)];
}

// The naive triple loop, in double, with a magnitude per element for the tolerance.
Expected reference(const Case& c, const Inputs& in) {
  Expected e;
  const size_t mn = size_t(c.m * c.n);
  e.d.assign(mn, 0), e.d_mag.assign(mn, 0), e.aux.assign(mn, 0), e.aux_mag.assign(mn, 0);
  for (int64_t j = 0; j < c.n; ++j) {
    for (int64_t i = 0; i < c.m; ++i) {
      double s = 0, mag = 0;
      for (int64_t q = 0; q < c.k; ++q) {
        s += opa(c, in, i, q) * opb(c, in, q, j);
        mag += std::fabs(opa(c, in, i, q) * opb(c, in, q, j));
      }
      double x = double(c.alpha) * s;
      mag *= std::fabs(c.alpha);
      if (c.beta != 0.f) {
        const double cv = in.c[size_t(i + j * c.ldc)];
        x += double(c.beta) * cv;
        mag += std::fabs(double(c.beta) * cv);
      }
      if (adds_bias(c.epilogue)) x += in.bias[size_t(i)], mag += std::fabs(in.bias[size_t(i)]);
      const size_t o = size_t(i + j * c.m);
      e.aux[o] = x, e.aux_mag[o] = mag;
      if (applies_gelu(c.epilogue)) x = gelu_ref(x);
      if (reads_aux(c.epilogue)) {
        const double g = gelu_grad_ref(in.aux[size_t(i + j * c.ld_aux)]);
        // gelu' in fp32 cancels (1 + tanh and 1 - tanh^2 for negative inputs): an absolute error of
        // a few 1e-7, which dominates where gelu' is near zero. 0.05 * rtol covers it.
        x *= g, mag *= std::fabs(g) + 0.05;
      }
      e.d[o] = x, e.d_mag[o] = mag;
    }
  }
  if (bias_grad(c.epilogue)) {
    e.bgrad.assign(size_t(c.n), 0), e.bgrad_mag.assign(size_t(c.n), 0);
    for (int64_t j = 0; j < c.n; ++j)
      for (int64_t q = 0; q < c.k; ++q)
        e.bgrad[size_t(j)] += opb(c, in, q, j), e.bgrad_mag[size_t(j)] += std::fabs(opb(c, in, q, j));
  }
  return e;
}

// fp32 accumulation over k <= 33 terms is good to ~k ulps of the magnitude; 16-bit outputs add one
// rounding of their own (2^-8 relative for bf16).
double rtol(cudaDataType_t t) { return t == CUDA_R_32F ? 2e-5 : 1e-2; }
// fp16 results below 2^-14 are subnormal: their rounding is absolute, half of 2^-24.
double atol(cudaDataType_t t) { return t == CUDA_R_16F ? 3e-8 : 1e-30; }

// Compares the m x n logical region of a column-major array with leading dimension ld, and checks
// that the padding rows [m, ld) still hold NaN (nothing written past the rows).
void expect_matrix(const char* what, const std::vector<float>& got, int64_t m, int64_t n, int64_t ld,
                   const std::vector<double>& want, const std::vector<double>& mag, cudaDataType_t t) {
  int bad = 0;
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = 0; i < ld; ++i) {
      const float g = got[size_t(i + j * ld)];
      if (i >= m) {
        if (!std::isnan(g) && bad++ < 5) ADD_FAILURE() << what << ": padding (" << i << ", " << j << ") was written";
        continue;
      }
      const double w = want[size_t(i + j * m)], bound = rtol(t) * mag[size_t(i + j * m)] + atol(t);
      if (!(std::fabs(double(g) - w) <= bound) && bad++ < 5)  // NaN fails this comparison
        ADD_FAILURE() << what << "(" << i << ", " << j << ") = " << g << ", want " << w << " (bound " << bound << ")";
    }
  }
}

class Lt {
 public:
  Lt() { EXPECT_EQ(cublasLtCreate(&handle), CUBLAS_STATUS_SUCCESS); }
  ~Lt() { cublasLtDestroy(handle); }
  cublasLtHandle_t handle = nullptr;
};

// Descriptor, layouts and preference for one case, created and destroyed together.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Plan() {
    cublasLtMatmulDescDestroy(desc);
    for (auto l : {a, b, c, d}) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulPreferenceDestroy(pref);
  }
};

template <typename V>
cublasStatus_t set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& v) {
  return cublasLtMatmulDescSetAttribute(desc, attr, &v, sizeof v);
}

void make_plan(const Case& c, Plan& p, const void* bias, const void* aux, uint64_t workspace = 1 << 20) {
  ASSERT_EQ(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(c.ta ? CUBLAS_OP_T : CUBLAS_OP_N)), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(c.tb ? CUBLAS_OP_T : CUBLAS_OP_N)), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(c.epilogue)), CUBLAS_STATUS_SUCCESS);
  if (c.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(c.cd)), CUBLAS_STATUS_SUCCESS);
  }
  if (bias) {
    ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias), CUBLAS_STATUS_SUCCESS);
  }
  if (aux) {
    ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(c.ld_aux)), CUBLAS_STATUS_SUCCESS);
  }
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&p.a, c.ab, a_rows(c), a_cols(c), c.lda), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&p.b, c.ab, b_rows(c), b_cols(c), c.ldb), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&p.c, c.cd, c.m, c.n, c.ldc), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatrixLayoutCreate(&p.d, c.cd, c.m, c.n, c.ldd), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatmulPreferenceCreate(&p.pref), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                 sizeof workspace),
            CUBLAS_STATUS_SUCCESS);
}

cublasStatus_t heuristic(const Lt& lt, const Plan& p, cublasLtMatmulHeuristicResult_t* r, int* count) {
  *count = -1;
  return cublasLtMatmulAlgoGetHeuristic(lt.handle, p.desc, p.a, p.b, p.c, p.d, p.pref, 1, r, count);
}

std::vector<float> random_values(std::mt19937_64& rng, cudaDataType_t t, size_t n, float scale = 1.f) {
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = round_to(t, dist(rng));
  return v;
}

std::vector<float> nans(size_t n) { return std::vector<float>(n, std::nanf("")); }

// Runs one case through heuristic + matmul and compares D, aux and the bias gradient.
void run_case(const Lt& lt, const Case& c, std::mt19937_64& rng) {
  SCOPED_TRACE(describe(c));
  Inputs in;
  in.a = random_values(rng, c.ab, size_t(c.lda * a_cols(c)));
  in.b = random_values(rng, c.ab, size_t(c.ldb * b_cols(c)));
  const size_t d_count = size_t(c.ldd * c.n), aux_count = size_t(c.ld_aux * c.n);
  // C: with beta 1 it holds data (D itself when in place); with beta 0 in place it holds NaN, which
  // must not be read.
  in.c = c.beta != 0.f ? random_values(rng, c.cd, size_t(c.ldc * c.n)) : nans(d_count);
  in.bias = random_values(rng, c.cd, size_t(c.m));
  in.aux = random_values(rng, c.cd, aux_count, 1.5f);
  const Expected want = reference(c, in);

  Dev a(c.ab, in.a.size()), b(c.ab, in.b.size()), d(c.cd, d_count);
  Dev c_sep(c.cd, c.c_is_d ? 1 : in.c.size());
  if (c.c_is_d) {
    d.upload(in.c);
  } else {
    c_sep.upload(in.c);
    d.upload(nans(d_count));
  }
  a.upload(in.a), b.upload(in.b);
  Dev bias(c.cd, bias_grad(c.epilogue) ? size_t(c.n) : size_t(c.m)), aux(c.cd, aux_count);
  bias.upload(bias_grad(c.epilogue) ? nans(size_t(c.n)) : in.bias);
  aux.upload(writes_aux(c.epilogue) ? nans(aux_count) : in.aux);
  const bool uses_bias = adds_bias(c.epilogue) || bias_grad(c.epilogue);
  const bool uses_aux = writes_aux(c.epilogue) || reads_aux(c.epilogue);

  Plan p;
  make_plan(c, p, uses_bias ? bias.get() : nullptr, uses_aux ? aux.get() : nullptr);
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(count, 1);
  ASSERT_EQ(r.state, CUBLAS_STATUS_SUCCESS);
  Dev ws(CUDA_R_32F, r.workspaceSize / 4 + 1);
  const void* c_ptr = c.c_is_d ? d.get() : c_sep.get();
  ASSERT_EQ(cublasLtMatmul(lt.handle, p.desc, &c.alpha, a.get(), p.a, b.get(), p.b, &c.beta, c_ptr, p.c, d.get(), p.d,
                           &r.algo, ws.get(), r.workspaceSize, nullptr),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);

  if (c.c_is_d && c.beta != 0.f) {
    // In place with data: the padding rows held C's random values; they must be unchanged.
    const auto got = d.download();
    for (int64_t j = 0; j < c.n; ++j)
      for (int64_t i = c.m; i < c.ldd; ++i)
        ASSERT_EQ(got[size_t(i + j * c.ldd)], in.c[size_t(i + j * c.ldd)]) << "padding of D written";
    std::vector<float> masked = got;  // reuse the checker: poison the padding it expects untouched
    for (int64_t j = 0; j < c.n; ++j)
      for (int64_t i = c.m; i < c.ldd; ++i) masked[size_t(i + j * c.ldd)] = std::nanf("");
    expect_matrix("D", masked, c.m, c.n, c.ldd, want.d, want.d_mag, c.cd);
  } else {
    expect_matrix("D", d.download(), c.m, c.n, c.ldd, want.d, want.d_mag, c.cd);
  }
  if (writes_aux(c.epilogue)) expect_matrix("aux", aux.download(), c.m, c.n, c.ld_aux, want.aux, want.aux_mag, c.cd);
  if (bias_grad(c.epilogue))
    expect_matrix("bias gradient", bias.download(), c.n, 1, c.n, want.bgrad, want.bgrad_mag, c.cd);
}

const cublasLtEpilogue_t kEpilogues[] = {
    CUBLASLT_EPILOGUE_DEFAULT,  CUBLASLT_EPILOGUE_BIAS,          CUBLASLT_EPILOGUE_GELU,  CUBLASLT_EPILOGUE_GELU_BIAS,
    CUBLASLT_EPILOGUE_GELU_AUX, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, CUBLASLT_EPILOGUE_DGELU, CUBLASLT_EPILOGUE_BGRADB};

struct Types {
  cudaDataType_t ab, cd;
};
const Types kTypes[] = {{CUDA_R_32F, CUDA_R_32F},
                        {CUDA_R_16BF, CUDA_R_16BF},
                        {CUDA_R_16BF, CUDA_R_32F},
                        {CUDA_R_16F, CUDA_R_16F},
                        {CUDA_R_16F, CUDA_R_32F}};

int64_t round_up8(int64_t v) { return (v + 7) / 8 * 8; }

TEST(SimCublasLt, EveryTransposeEpilogueTypeAndBeta) {
  std::mt19937_64 rng(fresh_seed());
  const int64_t sizes[][3] = {{1, 1, 1}, {7, 33, 1}, {33, 1, 7}, {1, 7, 33}, {33, 33, 33}, {7, 7, 7}};
  std::uniform_int_distribution<int64_t> pad(0, 3);
  Lt lt;
  int index = 0;
  for (const Types& ty : kTypes)
    for (int t = 0; t < 4; ++t)
      for (cublasLtEpilogue_t e : kEpilogues)
        for (float beta : {0.f, 1.f})
          for (const auto& s : sizes) {
            Case c;
            c.ab = ty.ab, c.cd = ty.cd;
            c.ta = t & 1, c.tb = t & 2;
            c.m = s[0], c.n = s[1], c.k = s[2];
            // Leading dimensions above the rows (sometimes equal), aux ld a multiple of 8.
            c.lda = a_rows(c) + pad(rng), c.ldb = b_rows(c) + pad(rng), c.ldd = c.m + pad(rng);
            c.ldc = c.m + pad(rng);
            c.ld_aux = round_up8(c.m) + 8 * (pad(rng) & 1);
            c.alpha = beta == 0.f ? 1.f : 0.75f;
            c.beta = beta;
            c.epilogue = e;
            c.c_is_d = !(beta != 0.f && index++ % 2 == 0);  // half the beta-1 cases with a separate C
            if (c.c_is_d) c.ldc = c.ldd;
            run_case(lt, c, rng);
            if (HasFatalFailure()) return;
          }
}

// GELU's form, pinned with two values computed independently of both implementations:
// tanh-GELU(1) = 0.8411919906, erf-GELU(1) = 0.8413447461 (they differ in the fourth digit).
TEST(SimCublasLt, GeluIsTheTanhApproximation) {
  Lt lt;
  Case c;
  c.epilogue = CUBLASLT_EPILOGUE_GELU;
  Dev a(CUDA_R_32F, 1), b(CUDA_R_32F, 1), d(CUDA_R_32F, 1);
  a.upload({1.f}), b.upload({1.f}), d.upload({std::nanf("")});
  Plan p;
  make_plan(c, p, nullptr, nullptr);
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);
  Dev ws(CUDA_R_32F, r.workspaceSize / 4 + 1);
  const float one = 1.f, zero = 0.f;
  ASSERT_EQ(cublasLtMatmul(lt.handle, p.desc, &one, a.get(), p.a, b.get(), p.b, &zero, d.get(), p.c, d.get(), p.d,
                           &r.algo, ws.get(), r.workspaceSize, nullptr),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_NEAR(d.download()[0], 0.8411919906, 2e-7);
}

// A captured graph replays the matmul with alpha, beta and the epilogue pointers as they were when
// it was captured, whatever the caller changed afterwards.
TEST(SimCublasLt, CapturedGraphReplaysTheArgumentsOfTheCall) {
  Lt lt;
  Case c;
  c.m = 2, c.n = 1, c.k = 1, c.lda = 2, c.ldb = 1, c.ldc = 2, c.ldd = 2;
  c.epilogue = CUBLASLT_EPILOGUE_BIAS;
  Dev a(CUDA_R_32F, 2), b(CUDA_R_32F, 1), d(CUDA_R_32F, 2), bias1(CUDA_R_32F, 2), bias2(CUDA_R_32F, 2);
  a.upload({1.f, 2.f}), b.upload({3.f}), bias1.upload({10.f, 20.f}), bias2.upload({-100.f, -100.f});
  Plan p;
  make_plan(c, p, bias1.get(), nullptr);
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);
  Dev ws(CUDA_R_32F, r.workspaceSize / 4 + 1);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  float alpha = 2.f, beta = 0.f;
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cublasLtMatmul(lt.handle, p.desc, &alpha, a.get(), p.a, b.get(), p.b, &beta, d.get(), p.c, d.get(), p.d,
                           &r.algo, ws.get(), r.workspaceSize, s),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  alpha = 5.f;
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias2.get())),
            CUBLAS_STATUS_SUCCESS);
  d.upload({std::nanf(""), std::nanf("")});
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  const auto got = d.download();
  EXPECT_EQ(got[0], 2.f * 3.f + 10.f);
  EXPECT_EQ(got[1], 2.f * 6.f + 20.f);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

// ---- what cuBLASLt refuses ----

// A valid bf16 -> bf16 TN problem with the GELU_AUX_BIAS epilogue that each rejection test breaks in
// one place.
class Rejects : public ::testing::Test {
 protected:
  void SetUp() override {
    c.ta = true, c.m = 16, c.n = 8, c.k = 24, c.lda = 24, c.ldb = 24, c.ldc = 16, c.ldd = 16, c.ld_aux = 16;
    c.ab = c.cd = CUDA_R_16BF;
    c.epilogue = CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    make_plan(c, p, bias.get(), aux.get(), ws_bytes);
  }
  cublasStatus_t heuristic_status() {
    cublasLtMatmulHeuristicResult_t r{};
    int count = 0;
    return heuristic(lt, p, &r, &count);
  }
  // The heuristic's algorithm (asserting it is offered), then the matmul's status.
  cublasStatus_t matmul_status(const cublasLtMatmulAlgo_t* algo_override = nullptr, size_t ws_size = ws_bytes,
                               bool null_alpha = false) {
    cublasLtMatmulHeuristicResult_t r{};
    int count = 0;
    cublasLtMatmulAlgo_t algo{};
    if (!algo_override) {
      EXPECT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);
      algo = r.algo;
    }
    return cublasLtMatmul(lt.handle, p.desc, null_alpha ? nullptr : &one, a.get(), p.a, b.get(), p.b, &zero, d.get(),
                          p.c, d.get(), p.d, algo_override ? algo_override : &algo, ws.get(), ws_size, nullptr);
  }
  void replace_layout(cublasLtMatrixLayout_t* l, cudaDataType_t t, uint64_t rows, uint64_t cols, int64_t ld) {
    cublasLtMatrixLayoutDestroy(*l);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(l, t, rows, cols, ld), CUBLAS_STATUS_SUCCESS);
  }

  static constexpr size_t ws_bytes = size_t(1) << 20;
  const float one = 1.f, zero = 0.f;
  Lt lt;
  Case c;
  Dev a{CUDA_R_16BF, 24 * 16}, b{CUDA_R_16BF, 24 * 8}, d{CUDA_R_16BF, 16 * 8}, bias{CUDA_R_16BF, 16},
      aux{CUDA_R_16BF, 16 * 8}, ws{CUDA_R_32F, ws_bytes / 4};
  Plan p;
};

TEST_F(Rejects, TheValidProblemRuns) {
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(matmul_status(), CUBLAS_STATUS_SUCCESS);
}

TEST_F(Rejects, NullHandleDescriptorOrLayout) {
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(nullptr, p.desc, p.a, p.b, p.c, p.d, p.pref, 1, &r, &count),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(lt.handle, nullptr, p.a, p.b, p.c, p.d, p.pref, 1, &r, &count),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(lt.handle, p.desc, p.a, nullptr, p.c, p.d, p.pref, 1, &r, &count),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(lt.handle, p.desc, p.a, p.b, p.c, p.d, p.pref, 0, &r, &count),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmul(nullptr, p.desc, &one, a.get(), p.a, b.get(), p.b, &zero, d.get(), p.c, d.get(), p.d,
                           nullptr, ws.get(), ws_bytes, nullptr),
            CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_EQ(cublasLtMatmul(lt.handle, nullptr, &one, a.get(), p.a, b.get(), p.b, &zero, d.get(), p.c, d.get(), p.d,
                           nullptr, ws.get(), ws_bytes, nullptr),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmul(lt.handle, p.desc, &one, a.get(), nullptr, b.get(), p.b, &zero, d.get(), p.c, d.get(), p.d,
                           nullptr, ws.get(), ws_bytes, nullptr),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul_status(nullptr, ws_bytes, true), CUBLAS_STATUS_INVALID_VALUE);  // alpha null
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, 4),
            CUBLAS_STATUS_INVALID_VALUE);
  const int64_t wrong_size = 1;
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &wrong_size, sizeof wrong_size),
            CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(Rejects, LeadingDimensionBelowRows) {
  replace_layout(&p.a, CUDA_R_16BF, 24, 16, 23);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  replace_layout(&p.a, CUDA_R_16BF, 24, 16, 24);
  replace_layout(&p.d, CUDA_R_16BF, 16, 8, 15);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  cublasLtMatmulAlgo_t algo{};  // the matmul checks too, before looking at the algorithm
  EXPECT_EQ(matmul_status(&algo), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(Rejects, ShapesThatDisagreeWithTheTransposes) {
  // A laid out as m x k although TRANSA = T says k x m.
  replace_layout(&p.a, CUDA_R_16BF, 16, 24, 16);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  replace_layout(&p.a, CUDA_R_16BF, 24, 16, 24);
  replace_layout(&p.b, CUDA_R_16BF, 23, 8, 24);  // k disagrees
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  replace_layout(&p.b, CUDA_R_16BF, 24, 8, 24);
  replace_layout(&p.c, CUDA_R_16BF, 16, 7, 16);  // C not the shape of D
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  replace_layout(&p.c, CUDA_R_16BF, 16, 8, 16);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(CUBLAS_OP_N)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);  // now A would be 24 x 16 = m x k: m disagrees
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(7)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(Rejects, EpiloguePointersLeftNullAtMatmul) {
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(nullptr)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_SUCCESS);  // the heuristic only reads the alignment
  EXPECT_EQ(matmul_status(), CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias.get())),
            CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(nullptr)),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(matmul_status(), CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_DGELU)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(matmul_status(), CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BGRADB)), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(nullptr)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(matmul_status(), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(Rejects, AuxLeadingDimension) {
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(8)), CUBLAS_STATUS_SUCCESS);  // < m = 16
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(17)), CUBLAS_STATUS_SUCCESS);  // not % 8
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_DGELU)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(16)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_SUCCESS);
}

TEST_F(Rejects, DataTypeCombinationsOutsideTheTable) {
  replace_layout(&p.b, CUDA_R_32F, 24, 8, 24);  // A bf16, B f32
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_NOT_SUPPORTED);
  replace_layout(&p.b, CUDA_R_16BF, 24, 8, 24);
  replace_layout(&p.c, CUDA_R_32F, 16, 8, 16);  // C f32, D bf16
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_NOT_SUPPORTED);
  replace_layout(&p.c, CUDA_R_16BF, 16, 8, 16);
  replace_layout(&p.a, CUDA_R_32F, 24, 16, 24);  // f32 A/B with bf16 D
  replace_layout(&p.b, CUDA_R_32F, 24, 8, 24);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_NOT_SUPPORTED);
  replace_layout(&p.a, CUDA_R_8I, 24, 16, 24);  // int8 is not a float row of the table
  replace_layout(&p.b, CUDA_R_8I, 24, 8, 24);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_NOT_SUPPORTED);
  replace_layout(&p.a, CUDA_R_16BF, 24, 16, 24);
  replace_layout(&p.b, CUDA_R_16BF, 24, 8, 24);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(CUDA_R_16F)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_NOT_SUPPORTED);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(CUDA_R_16BF)), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_SCALE_TYPE, int32_t(CUDA_R_16BF)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_NOT_SUPPORTED);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_SCALE_TYPE, int32_t(CUDA_R_32F)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(heuristic_status(), CUBLAS_STATUS_SUCCESS);
}

TEST_F(Rejects, WorkspaceSmallerThanTheAlgorithmAsked) {
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);
  ASSERT_GT(r.workspaceSize, 0u);
  ASSERT_LE(r.workspaceSize, ws_bytes);  // never more than the preference allows
  EXPECT_EQ(matmul_status(&r.algo, r.workspaceSize - 1), CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(matmul_status(&r.algo, r.workspaceSize), CUBLAS_STATUS_SUCCESS);
}

TEST_F(Rejects, AlgorithmOfAnotherProblem) {
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BIAS)), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(matmul_status(&r.algo), CUBLAS_STATUS_INVALID_VALUE);
  cublasLtMatmulAlgo_t garbage{};
  EXPECT_EQ(matmul_status(&garbage), CUBLAS_STATUS_INVALID_VALUE);
}

TEST_F(Rejects, InPlaceWithDifferentLayouts) {
  replace_layout(&p.c, CUDA_R_16BF, 16, 8, 17);
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);  // C and D may differ out of place
  EXPECT_EQ(cublasLtMatmul(lt.handle, p.desc, &one, a.get(), p.a, b.get(), p.b, &zero, d.get(), p.c, d.get(), p.d,
                           &r.algo, ws.get(), ws_bytes, nullptr),
            CUBLAS_STATUS_INVALID_VALUE);
}

TEST(SimCublasLt, StatusNamesAndStrings) {
  EXPECT_STREQ(cublasLtGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  EXPECT_STREQ(cublasLtGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED), "CUBLAS_STATUS_NOT_SUPPORTED");
  EXPECT_EQ(int(CUBLAS_STATUS_INVALID_VALUE), 7);
  EXPECT_EQ(int(CUBLAS_STATUS_NOT_SUPPORTED), 15);
  EXPECT_GT(std::strlen(cublasLtGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED)), 0u);
}

// A fault the GPU would raise while running: a thrown cudasim::DeviceFault, or (if the runtime turns
// faults into sticky errors) an error at the next synchronisation.
template <typename F>
bool faults(F&& f) {
  try {
    f();
  } catch (const cudasim::DeviceFault&) {
    return true;
  }
  return cudaDeviceSynchronize() != cudaSuccess || cudaGetLastError() != cudaSuccess;
}

TEST_F(Rejects, MatrixOutsideItsAllocationFaults) {
  Dev small_d(CUDA_R_16BF, 16 * 8 - 1);  // one element short of ld * n
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(faults([&] {
    cublasLtMatmul(lt.handle, p.desc, &one, a.get(), p.a, b.get(), p.b, &zero, small_d.get(), p.c, small_d.get(), p.d,
                   &r.algo, ws.get(), ws_bytes, nullptr);
  }));
}

TEST_F(Rejects, PointerLessAlignedThanPromisedFaults) {
  cublasLtMatmulHeuristicResult_t r{};
  int count = 0;
  ASSERT_EQ(heuristic(lt, p, &r, &count), CUBLAS_STATUS_SUCCESS);  // default: 256-byte alignment promised
  Dev bigger_a(CUDA_R_16BF, 24 * 16 + 1);
  const void* shifted = static_cast<const char*>(bigger_a.get()) + 2;
  EXPECT_TRUE(faults([&] {
    cublasLtMatmul(lt.handle, p.desc, &one, shifted, p.a, b.get(), p.b, &zero, d.get(), p.c, d.get(), p.d, &r.algo,
                   ws.get(), ws_bytes, nullptr);
  }));
}

// ---- cub::DeviceRadixSort::SortPairs ----

struct SortRun {
  std::vector<uint32_t> keys_in, keys_out;
  std::vector<int32_t> values_in, values_out;
};

cudaError_t sort(SortRun& s, int begin_bit, int end_bit, size_t temp_shortfall = 0) {
  const int n = int(s.keys_in.size());
  size_t temp_bytes = 0;
  cudaError_t err = cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, 0, 32);
  if (err != cudaSuccess) return err;
  EXPECT_GT(temp_bytes, 0u);
  temp_bytes -= temp_shortfall;
  uint32_t *ki, *ko;
  int32_t *vi, *vo;
  void* temp;
  const size_t nb = std::max<size_t>(1, size_t(n) * 4);
  EXPECT_EQ(cudaMalloc(&ki, nb), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&ko, nb), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&vi, nb), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&vo, nb), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&temp, std::max<size_t>(1, temp_bytes)), cudaSuccess);
  cudaMemcpy(ki, s.keys_in.data(), size_t(n) * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(vi, s.values_in.data(), size_t(n) * 4, cudaMemcpyHostToDevice);
  const std::vector<uint32_t> poison_k(size_t(n), 0xdeadbeefu);
  const std::vector<int32_t> poison_v(size_t(n), -1);
  cudaMemcpy(ko, poison_k.data(), size_t(n) * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(vo, poison_v.data(), size_t(n) * 4, cudaMemcpyHostToDevice);
  err = cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ki, ko, vi, vo, n, begin_bit, end_bit, nullptr);
  EXPECT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
  s.keys_out.assign(size_t(n), 0), s.values_out.assign(size_t(n), 0);
  cudaMemcpy(s.keys_out.data(), ko, size_t(n) * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(s.values_out.data(), vo, size_t(n) * 4, cudaMemcpyDeviceToHost);
  for (void* ptr :
       {static_cast<void*>(ki), static_cast<void*>(ko), static_cast<void*>(vi), static_cast<void*>(vo), temp})
    cudaFree(ptr);
  return err;
}

// What a stable sort by key bits must give: the same (key, value) pairs, digits non-decreasing, and
// within equal digits the input order (values are the input positions).
void expect_stably_sorted(const SortRun& s, int begin_bit, int end_bit) {
  const int bits = end_bit - begin_bit;
  auto digit = [&](uint32_t k) { return bits == 0 ? 0ull : (uint64_t(k) >> begin_bit) & ((uint64_t(1) << bits) - 1); };
  const size_t n = s.keys_in.size();
  ASSERT_EQ(s.keys_out.size(), n);
  for (size_t i = 0; i < n; ++i) {
    const int32_t v = s.values_out[i];
    ASSERT_TRUE(v >= 0 && size_t(v) < n) << "value " << v << " at " << i;
    ASSERT_EQ(s.keys_out[i], s.keys_in[size_t(v)]) << "pair broken at " << i;
    if (i == 0) continue;
    const uint64_t dp = digit(s.keys_out[i - 1]), dc = digit(s.keys_out[i]);
    ASSERT_LE(dp, dc) << "out of order at " << i;
    if (dp == dc) {
      ASSERT_LT(s.values_out[i - 1], v) << "unstable at " << i;
    }
  }
  std::vector<int32_t> seen(s.values_out);
  std::sort(seen.begin(), seen.end());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], int32_t(i)) << "not a permutation";
}

SortRun random_run(std::mt19937_64& rng, int n, uint32_t key_range) {
  SortRun s;
  std::uniform_int_distribution<uint32_t> key(0, key_range - 1);
  for (int i = 0; i < n; ++i) s.keys_in.push_back(key(rng)), s.values_in.push_back(i);
  return s;
}

TEST(SimRadixSort, StableWithDuplicateKeys) {
  std::mt19937_64 rng(fresh_seed());
  for (int n : {1, 7, 33, 1000}) {
    for (uint32_t range : {3u, 50u, 0xffffffffu}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " range=" + std::to_string(range));
      SortRun s = random_run(rng, n, range);
      ASSERT_EQ(sort(s, 0, 32), cudaSuccess);
      expect_stably_sorted(s, 0, 32);
    }
  }
}

TEST(SimRadixSort, SortsOnlyTheGivenBits) {
  std::mt19937_64 rng(fresh_seed());
  const std::pair<int, int> ranges[] = {{0, 6}, {4, 12}, {20, 32}, {0, 1}, {5, 5}};
  for (const auto& bits : ranges) {
    SCOPED_TRACE("bits [" + std::to_string(bits.first) + ", " + std::to_string(bits.second) + ")");
    SortRun s = random_run(rng, 500, 0xffffffffu);
    ASSERT_EQ(sort(s, bits.first, bits.second), cudaSuccess);
    expect_stably_sorted(s, bits.first, bits.second);
  }
  // Keys that differ only above end_bit keep their input order.
  SortRun s;
  s.keys_in = {0x300u, 0x100u, 0x201u, 0x001u}, s.values_in = {0, 1, 2, 3};
  ASSERT_EQ(sort(s, 0, 8), cudaSuccess);
  EXPECT_EQ(s.keys_out, (std::vector<uint32_t>{0x300u, 0x100u, 0x201u, 0x001u}));
  EXPECT_EQ(s.values_out, (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(SimRadixSort, RejectsTooLittleTempStorageAndBadBits) {
  std::mt19937_64 rng(fresh_seed());
  SortRun s = random_run(rng, 64, 100);
  EXPECT_EQ(sort(s, 0, 32, 1), cudaErrorInvalidValue);
  EXPECT_EQ(s.values_out, std::vector<int32_t>(64, -1)) << "a refused sort wrote its output";
  size_t bytes = 0;
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                            static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                            static_cast<int32_t*>(nullptr), 10, 0, 33),
            cudaErrorInvalidValue);
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                            static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                            static_cast<int32_t*>(nullptr), 10, 9, 8),
            cudaErrorInvalidValue);
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                            static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                            static_cast<int32_t*>(nullptr), -1, 0, 32),
            cudaErrorInvalidValue);
}

}  // namespace
