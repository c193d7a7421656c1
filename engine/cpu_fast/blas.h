// The one matrix product of the fast CPU backend: single-precision GEMM of the BLAS (OpenBLAS,
// found by CMake), row-major.
#pragma once
#include <cstdint>

namespace engine::fastcpu {

// C[M, N] = op(A)[M, K] op(B)[K, N] + beta C, row-major, op(X) = X^T when its flag is set;
// lda, ldb, ldc are the row strides of A, B and C as stored.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

// The BLAS's name and version as it reports them ("OpenBLAS 0.3.21 ... Haswell MAX_THREADS=64").
const char* blas_config();

// Sets the BLAS's own thread count (process-wide).
void set_blas_threads(int n);

}  // namespace engine::fastcpu
