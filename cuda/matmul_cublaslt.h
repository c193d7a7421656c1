// Matrix products through cuBLASLt. One CublasLt object per backend: one handle, one workspace
// (kWorkspaceBytes, allocated once), and a cache of plans (operation descriptor, matrix layouts,
// and the algorithm cuBLASLt's heuristic chose) keyed by everything that affects the choice:
// shape, leading dimensions, transposes, dtypes, epilogue, beta and pointer alignment. The first
// call for a key asks the heuristic; every later call only sets pointers and launches.
// Precision: bf16 (or f32) A and B, fp32 accumulation (CUBLAS_COMPUTE_32F: no TF32 in f32 mode),
// D in bf16 or f32 (dW accumulates bf16 products into f32 gradients with beta = 1).
// Column-major, as cuBLASLt sees it; the row-major linear-layer helpers below do the mapping.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <unordered_map>

#include "engine/tensor.h"

namespace engine::cuda {

enum class Epilogue : uint8_t {
  none,
  bias,           // D = A B + bias (bias per row of D, i.e. per output feature)
  gelu_aux_bias,  // D = gelu(A B + bias), aux = A B + bias (cuBLASLt's GELU: not the erf form)
  dgelu,          // D = (A B) * gelu'(aux)
  bgradb,         // D = A B and bias = sum of B over k (the bias gradient)
};

struct Gemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* d = nullptr;  // also C when beta != 0
  int64_t ldd = 0;
  DType ab_dtype = DType::bf16;
  DType d_dtype = DType::bf16;
  float alpha = 1.f, beta = 0.f;
  Epilogue epilogue = Epilogue::none;
  const void* bias = nullptr;  // bias / gelu_aux_bias: read (d_dtype); bgradb: written
  void* aux = nullptr;         // gelu_aux_bias: written; dgelu: read (d_dtype)
  int64_t ld_aux = 0;
};

class CublasLt {
 public:
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // what cuBLAS recommends on Hopper

  CublasLt();
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;

  void run(const Gemm& g, cudaStream_t stream);
  // True when the heuristic offers an algorithm for this gemm (plans it as a side effect).
  bool supported(const Gemm& g);
  size_t plans() const { return plans_.size(); }

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo{};
    bool found = false;
  };
  Plan& plan(const Gemm& g);
  static std::string key(const Gemm& g);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::unordered_map<std::string, Plan> plans_;
};

// Row-major linear layers, W[out, in] as Hugging Face stores it.
// y[N, out] = x[N, in] W^T (+ b); epilogue none or bias (b required), or gelu_aux_bias (pre written).
void linear_forward(CublasLt& lt, DType act, void* y, const void* x, const void* w, const void* b, int64_t N,
                    int64_t in, int64_t out, Epilogue epilogue, void* pre, cudaStream_t stream);
// dx[N, in] = dy[N, out] W (beta 1: accumulate); with pre_of_x the dgelu epilogue multiplies by
// cuBLASLt's gelu'(pre).
void linear_backward_dx(CublasLt& lt, DType act, void* dx, const void* dy, const void* w, int64_t N, int64_t in,
                        int64_t out, bool accumulate, const void* pre_of_x_for_dgelu, cudaStream_t stream);
// dw[out, in] (f32) += dy^T x; with db_out (f32 [out]) the bgradb epilogue writes sum_n dy into it.
void linear_backward_dw(CublasLt& lt, DType act, float* dw, const void* dy, const void* x, int64_t N, int64_t in,
                        int64_t out, float* db_out, cudaStream_t stream);
// The same three as Gemm descriptions (for supported() checks and the benches).
Gemm linear_forward_gemm(DType act, void* y, const void* x, const void* w, const void* b, int64_t N, int64_t in,
                         int64_t out, Epilogue epilogue, void* pre);
Gemm linear_dx_gemm(DType act, void* dx, const void* dy, const void* w, int64_t N, int64_t in, int64_t out,
                    bool accumulate, const void* pre_of_x_for_dgelu);
Gemm linear_dw_gemm(DType act, float* dw, const void* dy, const void* x, int64_t N, int64_t in, int64_t out,
                    float* db_out);

}  // namespace engine::cuda
