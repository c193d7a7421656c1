// cuBLASLt plans and the three products of a linear layer (see matmul_cublaslt.h).
// Mapping from row-major to cuBLASLt's column-major: a row-major [r, c] matrix is a column-major
// [c, r] matrix with leading dimension c, i.e. its transpose. So, with W [out, in], x [N, in]:
//   forward  Y^T [out, N] = op_T(W as [in, out]) * (x as [in, N])        m=out n=N k=in  (TN)
//   dX       dX^T [in, N] = (W as [in, out]) * (dy as [out, N])          m=in  n=N k=out (NN)
//   dW       dW^T [in, out] = (x as [in, N]) * op_T(dy as [out, N])      m=in  n=out k=N (NT)
// Bias and its gradient run along m (forward) and n (dW: BGRADB reduces B over k), matching
// cuBLASLt's epilogue conventions.
#include "cuda/matmul_cublaslt.h"

#include <cstdio>

#include "cuda/cuda_check.h"

namespace engine::cuda {

namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    case DType::i32: break;
  }
  fail("cuBLASLt: no matrix product on i32");
}

cublasLtEpilogue_t lt_epilogue(Epilogue e) {
  switch (e) {
    case Epilogue::none: return CUBLASLT_EPILOGUE_DEFAULT;
    case Epilogue::bias: return CUBLASLT_EPILOGUE_BIAS;
    case Epilogue::gelu_aux_bias: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    case Epilogue::dgelu: return CUBLASLT_EPILOGUE_DGELU;
    case Epilogue::bgradb: return CUBLASLT_EPILOGUE_BGRADB;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

// Largest power of two (up to 256) dividing the address: what the heuristic may assume.
uint32_t alignment(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al) al >>= 1;
  return al;
}

template <typename V>
void set_attr(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const V& value) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value)));
}

// The bias and aux pointers of g's epilogue (set per call: a plan serves any pointers of its key's
// alignments).
void set_epilogue_pointers(cublasLtMatmulDesc_t desc, const Gemm& g) {
  if (g.epilogue == Epilogue::bias || g.epilogue == Epilogue::gelu_aux_bias || g.epilogue == Epilogue::bgradb)
    set_attr(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  if (g.epilogue == Epilogue::gelu_aux_bias || g.epilogue == Epilogue::dgelu)
    set_attr(desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(g.aux));
}

}  // namespace

CublasLt::CublasLt() {
  CUBLAS_CHECK(cublasLtCreate(&handle_));
  CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
}

CublasLt::~CublasLt() {
  for (auto& [k, p] : plans_) {
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

std::string CublasLt::key(const Gemm& g) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%d%d %lld %lld %lld %lld %lld %lld %d %d %d %d %lld %u %u %u %u %u",
                int(g.trans_a), int(g.trans_b), (long long)g.m, (long long)g.n, (long long)g.k, (long long)g.lda,
                (long long)g.ldb, (long long)g.ldd, int(g.ab_dtype), int(g.d_dtype), int(g.epilogue),
                int(g.beta != 0.f), (long long)g.ld_aux, alignment(g.a), alignment(g.b), alignment(g.d),
                g.bias ? alignment(g.bias) : 0u, g.aux ? alignment(g.aux) : 0u);
  return buf;
}

CublasLt::Plan& CublasLt::plan(const Gemm& g) {
  const std::string k = key(g);
  auto it = plans_.find(k);
  if (it != plans_.end()) return it->second;
  Plan p;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_attr(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, ta);
  set_attr(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, tb);
  set_attr(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, lt_epilogue(g.epilogue));
  if (g.epilogue != Epilogue::none) {
    const cudaDataType_t bias_type = g.epilogue == Epilogue::bgradb ? CUDA_R_32F : cuda_type(g.d_dtype);
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bias_type);
  }
  if (g.epilogue == Epilogue::gelu_aux_bias || g.epilogue == Epilogue::dgelu)
    set_attr(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(g.ld_aux));
  // The heuristic reads the bias / aux pointer values to infer their alignment (cublasLt.h, the
  // BIAS_POINTER and EPILOGUE_AUX_POINTER notes); left NULL they would look perfectly aligned.
  set_epilogue_pointers(p.desc, g);
  const cudaDataType_t ab = cuda_type(g.ab_dtype), dt = cuda_type(g.d_dtype);
  // Stored shapes: op(A) is m x k, so A is k x m when transposed.
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, ab, g.trans_a ? g.k : g.m, g.trans_a ? g.m : g.k, g.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, ab, g.trans_b ? g.n : g.k, g.trans_b ? g.k : g.n, g.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.d, dt, g.m, g.n, g.ldd));

  cublasLtMatmulPreference_t pref;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  // Tell the heuristic what the pointers really allow (it assumes 256-byte alignment otherwise).
  const uint32_t al_a = alignment(g.a), al_b = alignment(g.b), al_d = alignment(g.d);
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, 4));
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, 4));
  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, pref, 1, &result, &returned);
  cublasLtMatmulPreferenceDestroy(pref);
  p.found = st == CUBLAS_STATUS_SUCCESS && returned > 0;
  if (p.found) p.algo = result.algo;
  return plans_.emplace(k, p).first->second;
}

bool CublasLt::supported(const Gemm& g) { return plan(g).found; }

void CublasLt::run(const Gemm& g, cudaStream_t stream) {
  if (g.m == 0 || g.n == 0) return;
  Plan& p = plan(g);
  ENGINE_CHECK(p.found, "cuBLASLt has no algorithm for this product (m=", g.m, " n=", g.n, " k=", g.k, ", ",
               dtype_name(g.ab_dtype), " -> ", dtype_name(g.d_dtype), ", epilogue ", int(g.epilogue), ")");
  set_epilogue_pointers(p.desc, g);
  CUBLAS_CHECK(cublasLtMatmul(handle_, p.desc, &g.alpha, g.a, p.a, g.b, p.b, &g.beta, g.d, p.d, g.d, p.d, &p.algo,
                              workspace_, kWorkspaceBytes, stream));
}

Gemm linear_forward_gemm(DType act, void* y, const void* x, const void* w, const void* b, int64_t N, int64_t in,
                         int64_t out, Epilogue epilogue, void* pre) {
  Gemm g;
  g.trans_a = true;
  g.m = out, g.n = N, g.k = in;
  g.a = w, g.lda = in;
  g.b = x, g.ldb = in;
  g.d = y, g.ldd = out;
  g.ab_dtype = g.d_dtype = act;
  g.epilogue = epilogue;
  g.bias = b;
  if (epilogue == Epilogue::gelu_aux_bias) g.aux = pre, g.ld_aux = out;
  return g;
}

Gemm linear_dx_gemm(DType act, void* dx, const void* dy, const void* w, int64_t N, int64_t in, int64_t out,
                    bool accumulate, const void* pre_of_x_for_dgelu) {
  Gemm g;
  g.m = in, g.n = N, g.k = out;
  g.a = w, g.lda = in;
  g.b = dy, g.ldb = out;
  g.d = dx, g.ldd = in;
  g.ab_dtype = g.d_dtype = act;
  g.beta = accumulate ? 1.f : 0.f;
  if (pre_of_x_for_dgelu) {
    g.epilogue = Epilogue::dgelu;
    g.aux = const_cast<void*>(pre_of_x_for_dgelu);
    g.ld_aux = in;
  }
  return g;
}

Gemm linear_dw_gemm(DType act, float* dw, const void* dy, const void* x, int64_t N, int64_t in, int64_t out,
                    float* db_out) {
  Gemm g;
  g.trans_b = true;
  g.m = in, g.n = out, g.k = N;
  g.a = x, g.lda = in;
  g.b = dy, g.ldb = out;
  g.d = dw, g.ldd = in;
  g.ab_dtype = act;
  g.d_dtype = DType::f32;
  g.beta = 1.f;
  if (db_out) g.epilogue = Epilogue::bgradb, g.bias = db_out;
  return g;
}

void linear_forward(CublasLt& lt, DType act, void* y, const void* x, const void* w, const void* b, int64_t N,
                    int64_t in, int64_t out, Epilogue epilogue, void* pre, cudaStream_t stream) {
  lt.run(linear_forward_gemm(act, y, x, w, b, N, in, out, epilogue, pre), stream);
}

void linear_backward_dx(CublasLt& lt, DType act, void* dx, const void* dy, const void* w, int64_t N, int64_t in,
                        int64_t out, bool accumulate, const void* pre_of_x_for_dgelu, cudaStream_t stream) {
  lt.run(linear_dx_gemm(act, dx, dy, w, N, in, out, accumulate, pre_of_x_for_dgelu), stream);
}

void linear_backward_dw(CublasLt& lt, DType act, float* dw, const void* dy, const void* x, int64_t N, int64_t in,
                        int64_t out, float* db_out, cudaStream_t stream) {
  lt.run(linear_dw_gemm(act, dw, dy, x, N, in, out, db_out), stream);
}

}  // namespace engine::cuda
