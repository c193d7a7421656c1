// The one matrix product of the fast CPU backend: single-precision GEMM of the BLAS (OpenBLAS,
// found by CMake), row-major. The BLAS itself always runs single-threaded; sgemm() splits the rows
// of C over the run's threads (the pool every other op uses, threads.h), so there is one set of
// threads, not the backend's and OpenBLAS's competing for the cores.
#pragma once
#include <cstdint>

namespace engine::fastcpu {

// C[M, N] = op(A)[M, K] op(B)[K, N] + beta C, row-major, op(X) = X^T when its flag is set;
// lda, ldb, ldc are the row strides of A, B and C as stored. Rows of C in fixed pieces, one per
// thread (each a single-threaded BLAS call): a row's result depends only on the split's piece size.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

// The same product on the calling thread only (inside a parallel loop: attention's per-pair products).
void sgemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

// The BLAS's name and version as it reports them ("OpenBLAS 0.3.21 ... Haswell MAX_THREADS=64").
const char* blas_config();

// Makes the BLAS single-threaded (process-wide); the backend calls it once.
void make_blas_single_threaded();

}  // namespace engine::fastcpu
