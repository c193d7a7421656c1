// The sim's cuBLASLt (declared in cuda/sim/include/cublasLt.h): descriptors, a heuristic that offers
// one algorithm for every supported problem, and cublasLtMatmul as a host loop run in stream order.
//
// Semantics (cuBLAS documentation, cublasLtMatmul and cublasLtEpilogue_t), column-major:
//   D = alpha op(A) op(B) + beta C,  op(A) m x k, op(B) k x n, C and D m x n,
// where each layout is (type, rows, cols, ld) as created, so A is k x m when TRANSA = T. Products
// accumulate in fp32 in order of k; inputs are read as float; D is rounded to its type (nearest
// even). Epilogues, applied to that fp32 value x:
//   BIAS            x + bias[i]            (bias: m elements, D's type unless BIAS_DATA_TYPE says)
//   GELU[_BIAS]     gelu(x [+ bias[i]])
//   GELU_AUX[_BIAS] aux(i, j) = x [+ bias[i]] (stored in D's type, ld EPILOGUE_AUX_LD), D = gelu(that)
//   DGELU           D = x * gelu'(aux(i, j))
//   BGRADB          D = x, and bias[j] = sum over k of op(B)[k, j] (n elements, written)
//
// Which GELU: the cuBLAS documentation's cublasLtEpilogue_t table only says "apply GELU point-wise
// transform to the results (x := GELU(x))" (docs.nvidia.com/cuda/cublas, cublasLtEpilogue_t; the same
// words in cublasLt.h). The form is pinned down by NVIDIA's own nvmath-python, whose epilog tests check
// cuBLASLt's GELU / GELU_AUX_BIAS against 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) and
// DGELU against the derivative of that tanh form (tests/nvmath_tests/linalg/advanced/matmul/
// test_epilog.py, functions gelu and dgelu: "Derivative of (tanh-approximated) gelu"). So the sim
// computes the tanh approximation, not the erf GELU (which is why cuda/gelu.cu keeps its own
// erf kernels for BERT).
//
// Validation happens twice, as in cuBLASLt: at cublasLtMatmulAlgoGetHeuristic (shapes, types,
// epilogue settings) and again at cublasLtMatmul (plus the pointers the epilogue needs and the
// workspace size). Faults a GPU would raise while running (a matrix outside any cudaMalloc block,
// a pointer less aligned than the algorithm assumed) throw cudasim::DeviceFault from the work.
#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "engine/bf16.h"

struct cublasLtContext {
  int unused = 0;
};

struct cublasLtMatrixLayoutSim {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};

struct cublasLtMatmulDescSim {
  int32_t compute_type;
  int32_t scale_type;
  int32_t pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N, transc = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  const void* aux = nullptr;
  int64_t aux_ld = 0;
  int32_t bias_type = -1;  // -1: D's type (cublasLt.h, BIAS_DATA_TYPE)
  int32_t aux_type = -1;   // -1: D's type (cublasLt.h, EPILOGUE_AUX_DATA_TYPE)
};

struct cublasLtMatmulPreferenceSim {
  uint32_t search_mode = 0;
  uint64_t max_workspace = 0;  // default: no workspace allowed
  uint32_t reduction_mask = 0x7;
  uint32_t align_a = 256, align_b = 256, align_c = 256, align_d = 256;  // documented defaults
  float max_waves = 0.f;
  uint64_t impl_mask = ~uint64_t(0);
};

namespace {

// ---- element access ----

size_t type_size(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
    default: return 0;
  }
}

float load(cudaDataType_t t, const void* base, int64_t index) {
  if (t == CUDA_R_32F) return static_cast<const float*>(base)[index];
  const uint16_t h = static_cast<const uint16_t*>(base)[index];
  return t == CUDA_R_16BF ? engine::bf16_to_float(h) : engine::fp16_to_float(h);
}

void store(cudaDataType_t t, void* base, int64_t index, float v) {
  if (t == CUDA_R_32F) {
    static_cast<float*>(base)[index] = v;
  } else {
    static_cast<uint16_t*>(base)[index] = t == CUDA_R_16BF ? engine::float_to_bf16(v) : engine::float_to_fp16(v);
  }
}

// ---- the tanh GELU (see the header comment for why this form) ----

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

float gelu_tanh(float x) {
  const float t = std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
  return 0.5f * x * (1.f + t);
}

float gelu_tanh_grad(float x) {
  const float t = std::tanh(kSqrt2OverPi * (x + kGeluCubic * x * x * x));
  const float dinner = kSqrt2OverPi * (1.f + 3.f * kGeluCubic * x * x);
  return 0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * dinner;
}

// ---- epilogues ----

struct EpilogueTraits {
  bool known = false;
  bool adds_bias = false;   // reads bias[m]
  bool gelu = false;        // D = gelu(x)
  bool writes_aux = false;  // aux = pre-activation
  bool dgelu = false;       // D = x * gelu'(aux)
  bool bgradb = false;      // writes bias[n]
};

EpilogueTraits traits(uint32_t e) {
  EpilogueTraits t;
  t.known = true;
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT: break;
    case CUBLASLT_EPILOGUE_BIAS: t.adds_bias = true; break;
    case CUBLASLT_EPILOGUE_GELU: t.gelu = true; break;
    case CUBLASLT_EPILOGUE_GELU_BIAS: t.gelu = t.adds_bias = true; break;
    case CUBLASLT_EPILOGUE_GELU_AUX: t.gelu = t.writes_aux = true; break;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS: t.gelu = t.writes_aux = t.adds_bias = true; break;
    case CUBLASLT_EPILOGUE_DGELU: t.dgelu = true; break;
    case CUBLASLT_EPILOGUE_BGRADB: t.bgradb = true; break;
    default: t.known = false;  // RELU*, DRELU*, DGELU_BGRAD, BGRADA: not modelled by the sim
  }
  return t;
}

bool uses_bias_pointer(const EpilogueTraits& t) { return t.adds_bias || t.bgradb; }
bool uses_aux_pointer(const EpilogueTraits& t) { return t.writes_aux || t.dgelu; }

// ---- validation shared by the heuristic and the matmul ----

// The resolved problem: everything cublasLtMatmul needs, by value (a captured graph replays this).
struct Problem {
  int64_t m = 0, n = 0, k = 0;
  bool ta = false, tb = false;
  cudaDataType_t ab_type{}, cd_type{}, bias_type{}, aux_type{};
  int64_t lda = 0, ldb = 0, ldc = 0, ldd = 0;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  EpilogueTraits ep;
  int64_t aux_ld = 0;
};

bool ld_ok(const cublasLtMatrixLayoutSim& l) {
  return l.ld >= 1 && uint64_t(l.ld) >= l.rows;  // cublasLt.h, CUBLASLT_MATRIX_LAYOUT_LD
}

// The A/B -> C/D pairs the cuBLAS documentation's cublasLtMatmul table lists for
// CUBLAS_COMPUTE_32F with scale type CUDA_R_32F (real, non-fp8, non-int8 rows).
bool supported_types(cudaDataType_t ab, cudaDataType_t cd) {
  if (ab == CUDA_R_32F) return cd == CUDA_R_32F;
  if (ab == CUDA_R_16BF) return cd == CUDA_R_16BF || cd == CUDA_R_32F;
  if (ab == CUDA_R_16F) return cd == CUDA_R_16F || cd == CUDA_R_32F;
  return false;
}

cublasStatus_t check_transpose(int32_t op) {
  if (op == CUBLAS_OP_N || op == CUBLAS_OP_T) return CUBLAS_STATUS_SUCCESS;
  if (op == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;  // real types only in the sim
  return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t check_desc(const cublasLtMatmulDescSim& d) {
  if (d.compute_type != CUBLAS_COMPUTE_32F && d.compute_type != CUBLAS_COMPUTE_32F_PEDANTIC)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.scale_type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.pointer_mode != CUBLASLT_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED;
  for (int32_t op : {d.transa, d.transb})
    if (cublasStatus_t st = check_transpose(op)) return st;
  if (d.transc != CUBLAS_OP_N) return CUBLAS_STATUS_NOT_SUPPORTED;  // "only CUBLAS_OP_N is supported"
  if (!traits(d.epilogue).known) return CUBLAS_STATUS_NOT_SUPPORTED;
  return CUBLAS_STATUS_SUCCESS;
}

// Shapes: op(A) m x k and op(B) k x n must agree with D (m x n) and C (same as D).
cublasStatus_t check_shapes(const cublasLtMatmulDescSim& d, const cublasLtMatrixLayoutSim& a,
                            const cublasLtMatrixLayoutSim& b, const cublasLtMatrixLayoutSim& c,
                            const cublasLtMatrixLayoutSim& dd) {
  for (const auto* l : {&a, &b, &c, &dd})
    if (!ld_ok(*l)) return CUBLAS_STATUS_INVALID_VALUE;
  const uint64_t m = dd.rows, n = dd.cols;
  const uint64_t a_m = d.transa == CUBLAS_OP_T ? a.cols : a.rows, a_k = d.transa == CUBLAS_OP_T ? a.rows : a.cols;
  const uint64_t b_k = d.transb == CUBLAS_OP_T ? b.cols : b.rows, b_n = d.transb == CUBLAS_OP_T ? b.rows : b.cols;
  if (a_m != m || b_n != n || a_k != b_k) return CUBLAS_STATUS_INVALID_VALUE;
  if (c.rows != m || c.cols != n) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t check_types(const cublasLtMatmulDescSim& d, const cublasLtMatrixLayoutSim& a,
                           const cublasLtMatrixLayoutSim& b, const cublasLtMatrixLayoutSim& c,
                           const cublasLtMatrixLayoutSim& dd) {
  if (a.type != b.type || c.type != dd.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!supported_types(a.type, dd.type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  const EpilogueTraits ep = traits(d.epilogue);
  // Bias (and bias gradient) elements are D's type in the documented table for these rows.
  if (uses_bias_pointer(ep) && d.bias_type != -1 && d.bias_type != dd.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (uses_aux_pointer(ep) && d.aux_type != -1 && d.aux_type != dd.type) return CUBLAS_STATUS_NOT_SUPPORTED;
  return CUBLAS_STATUS_SUCCESS;
}

// EPILOGUE_AUX_LD for the GELU aux matrix: "Must be divisible by 8 and be no less than the number of
// rows in the output matrix" (cublasLt.h and the cuBLAS documentation).
cublasStatus_t check_aux(const cublasLtMatmulDescSim& d, const cublasLtMatrixLayoutSim& dd) {
  if (!uses_aux_pointer(traits(d.epilogue))) return CUBLAS_STATUS_SUCCESS;
  if (d.aux_ld < 1 || uint64_t(d.aux_ld) < dd.rows || d.aux_ld % 8 != 0) return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t resolve(const cublasLtMatmulDescSim* desc, const cublasLtMatrixLayoutSim* a,
                       const cublasLtMatrixLayoutSim* b, const cublasLtMatrixLayoutSim* c,
                       const cublasLtMatrixLayoutSim* d, Problem* p) {
  if (!desc || !a || !b || !c || !d) return CUBLAS_STATUS_INVALID_VALUE;
  if (cublasStatus_t st = check_desc(*desc)) return st;
  if (cublasStatus_t st = check_shapes(*desc, *a, *b, *c, *d)) return st;
  if (cublasStatus_t st = check_types(*desc, *a, *b, *c, *d)) return st;
  if (cublasStatus_t st = check_aux(*desc, *d)) return st;
  p->m = int64_t(d->rows), p->n = int64_t(d->cols);
  p->ta = desc->transa == CUBLAS_OP_T, p->tb = desc->transb == CUBLAS_OP_T;
  p->k = int64_t(p->ta ? a->rows : a->cols);
  p->ab_type = a->type, p->cd_type = d->type;
  p->bias_type = desc->bias_type == -1 ? d->type : cudaDataType_t(desc->bias_type);
  p->aux_type = desc->aux_type == -1 ? d->type : cudaDataType_t(desc->aux_type);
  p->lda = a->ld, p->ldb = b->ld, p->ldc = c->ld, p->ldd = d->ld;
  p->epilogue = desc->epilogue;
  p->ep = traits(desc->epilogue);
  p->aux_ld = desc->aux_ld;
  return CUBLAS_STATUS_SUCCESS;
}

// ---- the algorithm: a fingerprint of what it was chosen for, the workspace it asks for, and the
// alignments it may assume ----

constexpr uint64_t kAlgoMagic = 0x53494d4c54414c47ull;   // "SIMLTALG"
constexpr uint64_t kWorkspaceAsked = uint64_t(4) << 20;  // a plausible split-K workspace

uint64_t fingerprint(const Problem& p) {
  return uint64_t(p.ab_type) | uint64_t(p.cd_type) << 8 | uint64_t(p.epilogue) << 16 | uint64_t(p.ta) << 32 |
         uint64_t(p.tb) << 33;
}

uint32_t alignment_of(const void* ptr) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(ptr);
  uint32_t al = 256;
  while (al > 1 && v % al) al >>= 1;
  return al;
}

struct Alignments {
  uint32_t a, b, c, d, bias, aux;
};

void encode_alignments(const Alignments& al, uint64_t* word) {
  const uint32_t v[6] = {al.a, al.b, al.c, al.d, al.bias, al.aux};
  *word = 0;
  for (int i = 0; i < 6; ++i) *word |= uint64_t(v[i] & 0x1ff) << (10 * i);
}

Alignments decode_alignments(uint64_t word) {
  uint32_t v[6];
  for (int i = 0; i < 6; ++i) v[i] = uint32_t(word >> (10 * i)) & 0x1ff;
  return {v[0], v[1], v[2], v[3], v[4], v[5]};
}

cublasLtMatmulAlgo_t make_algo(const Problem& p, const Alignments& al, uint64_t workspace) {
  cublasLtMatmulAlgo_t algo{};
  algo.data[0] = kAlgoMagic;
  algo.data[1] = fingerprint(p);
  algo.data[2] = workspace;
  encode_alignments(al, &algo.data[3]);
  return algo;
}

// ---- running ----

struct Operands {
  float alpha, beta;
  const void *a, *b, *c;
  void* d;
  const void* bias;
  const void* aux;
  void* workspace;
  uint64_t workspace_needed;
  Alignments assumed;
};

[[noreturn]] void device_fault(const std::string& what) { throw cudasim::DeviceFault("cublasLtMatmul: " + what); }

// Bytes a column-major rows x cols matrix with leading dimension ld spans.
size_t span_bytes(int64_t rows, int64_t cols, int64_t ld, cudaDataType_t t) {
  if (rows == 0 || cols == 0) return 0;
  return size_t((cols - 1) * ld + rows) * type_size(t);
}

void check_range(const char* name, const void* p, size_t bytes) {
  if (bytes && !cudasim::is_device_range(p, bytes))
    device_fault(std::string(name) + " (" + std::to_string(bytes) + " bytes) is not inside one cudaMalloc block");
}

// An algorithm chosen for aligned data may use 16-byte vector accesses: a pointer less aligned than
// both what the heuristic was told and 16 bytes would fault with a misaligned address on a GPU.
void check_alignment(const char* name, const void* p, uint32_t assumed) {
  if (p && alignment_of(p) < std::min<uint32_t>(assumed, 16))
    device_fault(std::string(name) + " is " + std::to_string(alignment_of(p)) +
                 "-byte aligned, but the algorithm was chosen for " + std::to_string(assumed));
}

void check_memory(const Problem& p, const Operands& o) {
  check_range("A", o.a, p.ta ? span_bytes(p.k, p.m, p.lda, p.ab_type) : span_bytes(p.m, p.k, p.lda, p.ab_type));
  check_range("B", o.b, p.tb ? span_bytes(p.n, p.k, p.ldb, p.ab_type) : span_bytes(p.k, p.n, p.ldb, p.ab_type));
  if (o.beta != 0.f) check_range("C", o.c, span_bytes(p.m, p.n, p.ldc, p.cd_type));
  check_range("D", o.d, span_bytes(p.m, p.n, p.ldd, p.cd_type));
  if (p.ep.adds_bias) check_range("bias", o.bias, size_t(p.m) * type_size(p.bias_type));
  if (p.ep.bgradb) check_range("bias gradient", o.bias, size_t(p.n) * type_size(p.bias_type));
  if (uses_aux_pointer(p.ep)) check_range("aux", o.aux, span_bytes(p.m, p.n, p.aux_ld, p.aux_type));
  check_range("workspace", o.workspace, o.workspace_needed);
  check_alignment("A", o.a, o.assumed.a);
  check_alignment("B", o.b, o.assumed.b);
  if (o.beta != 0.f) check_alignment("C", o.c, o.assumed.c);
  check_alignment("D", o.d, o.assumed.d);
  check_alignment("bias", o.bias, o.assumed.bias);
  check_alignment("aux", o.aux, o.assumed.aux);
}

// op(A) as a row-major m x k float matrix (row i contiguous over k) and op(B) as n columns of k
// (column j contiguous over k), so each output is one contiguous dot product.
std::vector<float> op_a_rows(const Problem& p, const void* a) {
  std::vector<float> out(size_t(p.m * p.k));
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t q = 0; q < p.k; ++q)
      out[size_t(i * p.k + q)] = load(p.ab_type, a, p.ta ? q + i * p.lda : i + q * p.lda);
  return out;
}

std::vector<float> op_b_cols(const Problem& p, const void* b) {
  std::vector<float> out(size_t(p.k * p.n));
  for (int64_t j = 0; j < p.n; ++j)
    for (int64_t q = 0; q < p.k; ++q)
      out[size_t(j * p.k + q)] = load(p.ab_type, b, p.tb ? j + q * p.ldb : q + j * p.ldb);
  return out;
}

void run_matmul(const Problem& p, const Operands& o) {
  check_memory(p, o);
  const std::vector<float> a = op_a_rows(p, o.a), b = op_b_cols(p, o.b);
  for (int64_t j = 0; j < p.n; ++j) {
    const float* bj = b.data() + j * p.k;
    for (int64_t i = 0; i < p.m; ++i) {
      const float* ai = a.data() + i * p.k;
      float acc = 0.f;
      for (int64_t q = 0; q < p.k; ++q) acc += ai[q] * bj[q];
      // beta == 0: C is not read (it may hold NaN or be absent), as in BLAS.
      float x = o.alpha * acc + (o.beta != 0.f ? o.beta * load(p.cd_type, o.c, i + j * p.ldc) : 0.f);
      if (p.ep.adds_bias) x += load(p.bias_type, o.bias, i);
      if (p.ep.writes_aux) store(p.aux_type, const_cast<void*>(o.aux), i + j * p.aux_ld, x);
      if (p.ep.gelu) x = gelu_tanh(x);
      if (p.ep.dgelu) x *= gelu_tanh_grad(load(p.aux_type, o.aux, i + j * p.aux_ld));
      store(p.cd_type, o.d, i + j * p.ldd, x);
    }
  }
  if (p.ep.bgradb) {  // the bias gradient: column sums of op(B), unscaled, overwritten
    for (int64_t j = 0; j < p.n; ++j) {
      float s = 0.f;
      for (int64_t q = 0; q < p.k; ++q) s += b[size_t(j * p.k + q)];
      store(p.bias_type, const_cast<void*>(o.bias), j, s);
    }
  }
}

template <typename T>
cublasStatus_t read_attr(T* dst, const void* buf, size_t size) {
  if (!buf || size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(dst, buf, sizeof(T));
  return CUBLAS_STATUS_SUCCESS;
}

// Zero-initialised 64-bit attributes the sim accepts only at their default.
cublasStatus_t read_zero_int64(const void* buf, size_t size) {
  int64_t v = 0;
  if (cublasStatus_t st = read_attr(&v, buf, size)) return st;
  return v == 0 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}

}  // namespace

// ---- handle and status strings ----

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasLtContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* cublasLtGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR: return "error detected trying to check the license";
  }
  return "unknown error";
}

// ---- layouts ----

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
  // ld is checked where cuBLASLt checks it: at the heuristic and the matmul.
  *layout = new cublasLtMatrixLayoutSim{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

// ---- operation descriptor ----

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  auto* d = new cublasLtMatmulDescSim;
  d->compute_type = compute;
  d->scale_type = scale;
  *desc = d;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return read_attr(&desc->compute_type, buf, size);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return read_attr(&desc->scale_type, buf, size);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: return read_attr(&desc->pointer_mode, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSA: return read_attr(&desc->transa, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return read_attr(&desc->transb, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSC: return read_attr(&desc->transc, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return read_attr(&desc->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return read_attr(&desc->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return read_attr(&desc->aux, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return read_attr(&desc->aux_ld, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return read_attr(&desc->bias_type, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: return read_attr(&desc->aux_type, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE: return read_zero_int64(buf, size);  // no batches
    default: return CUBLAS_STATUS_NOT_SUPPORTED;  // scale / amax pointers, fill mode, ...: not modelled
  }
}

// ---- preference ----

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = new cublasLtMatmulPreferenceSim;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return read_attr(&pref->search_mode, buf, size);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return read_attr(&pref->max_workspace, buf, size);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK: return read_attr(&pref->reduction_mask, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return read_attr(&pref->align_a, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return read_attr(&pref->align_b, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return read_attr(&pref->align_c, buf, size);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return read_attr(&pref->align_d, buf, size);
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT: return read_attr(&pref->max_waves, buf, size);
    case CUBLASLT_MATMUL_PREF_IMPL_MASK: return read_attr(&pref->impl_mask, buf, size);
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

// ---- heuristic ----

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!pref || !results || !returned || requested <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  Problem p;
  if (cublasStatus_t st = resolve(desc, a, b, c, d, &p)) return st;
  // The heuristic reads the bias / aux pointer values only for their alignment (cublasLt.h).
  const Alignments al{pref->align_a,          pref->align_b, pref->align_c, pref->align_d, alignment_of(desc->bias),
                      alignment_of(desc->aux)};
  const uint64_t workspace = std::min<uint64_t>(pref->max_workspace, kWorkspaceAsked);
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].algo = make_algo(p, al, workspace);
  results[0].workspaceSize = size_t(workspace);
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

// ---- matmul ----

namespace {

// The algorithm as cublasLtMatmul will use it: the caller's (checked against the problem) or, for a
// null algo, the one an implicit heuristic with default preferences would pick (no workspace, and
// alignments taken from the pointers themselves).
cublasStatus_t choose_algo(const Problem& p, const cublasLtMatmulAlgo_t* algo, const Operands& o, uint64_t* workspace,
                           Alignments* al) {
  if (!algo) {
    *workspace = 0;
    *al = {alignment_of(o.a), alignment_of(o.b),    alignment_of(o.c),
           alignment_of(o.d), alignment_of(o.bias), alignment_of(o.aux)};
    return CUBLAS_STATUS_SUCCESS;
  }
  // "CUBLAS_STATUS_INVALID_VALUE if matrix layout descriptors or operation descriptor don't match
  // algo descriptor" (cublasLtMatmulAlgoCheck, cublasLt.h).
  if (algo->data[0] != kAlgoMagic || algo->data[1] != fingerprint(p)) return CUBLAS_STATUS_INVALID_VALUE;
  *workspace = algo->data[2];
  *al = decode_alignments(algo->data[3]);
  return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a, const void* B, cublasLtMatrixLayout_t b, const void* beta,
                              const void* C, cublasLtMatrixLayout_t c, void* D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  Problem p;
  if (cublasStatus_t st = resolve(desc, a, b, c, d, &p)) return st;
  // In place (C == D) needs C laid out as D.
  if (C == D && p.ldc != p.ldd) return CUBLAS_STATUS_INVALID_VALUE;
  // The epilogue's pointers are needed now (the heuristic only looked at their alignment).
  if (uses_bias_pointer(p.ep) && !desc->bias) return CUBLAS_STATUS_INVALID_VALUE;
  if (uses_aux_pointer(p.ep) && !desc->aux) return CUBLAS_STATUS_INVALID_VALUE;

  // Every value is copied now: a captured graph replays with these, whatever happens to the
  // descriptor, alpha or beta afterwards.
  Operands o{};
  std::memcpy(&o.alpha, alpha, sizeof(float));  // scale type CUDA_R_32F, host pointer mode
  std::memcpy(&o.beta, beta, sizeof(float));
  o.a = A, o.b = B, o.c = C, o.d = D;
  o.bias = uses_bias_pointer(p.ep) ? desc->bias : nullptr;
  o.aux = uses_aux_pointer(p.ep) ? desc->aux : nullptr;
  o.workspace = workspace;
  if (cublasStatus_t st = choose_algo(p, algo, o, &o.workspace_needed, &o.assumed)) return st;
  // "INVALID_VALUE ... when workspaceSizeInBytes is less than workspace required by configured algo".
  if (workspace_bytes < o.workspace_needed) return CUBLAS_STATUS_INVALID_VALUE;
  if (p.n == 0 || (p.m == 0 && !p.ep.bgradb)) return CUBLAS_STATUS_SUCCESS;  // nothing to write
  cudasim::enqueue(stream, [p, o] { run_matmul(p, o); });
  return CUBLAS_STATUS_SUCCESS;
}
