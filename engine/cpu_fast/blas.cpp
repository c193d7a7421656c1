// OpenBLAS behind engine::fastcpu::sgemm. The prototypes are declared here (they are OpenBLAS's
// documented C interface) so that no particular cblas.h of the system's alternatives is needed.
#include "engine/cpu_fast/blas.h"

#include <algorithm>
#include <climits>

#include "engine/cpu_fast/threads.h"
#include "engine/error.h"

extern "C" {
enum { kCblasRowMajor = 101, kCblasNoTrans = 111, kCblasTrans = 112 };
void cblas_sgemm(int order, int trans_a, int trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc);
void openblas_set_num_threads(int n);
char* openblas_get_config(void);
}

namespace engine::fastcpu {

void sgemm_serial(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  ENGINE_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX && ldc <= INT_MAX,
               "sgemm: a dimension exceeds the BLAS's 32-bit range (M ", M, ", N ", N, ", K ", K, ")");
  if (K == 0) {  // nothing to add: C = beta C (the BLAS may skip this case)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) C[m * ldc + n] = beta == 0.f ? 0.f : beta * C[m * ldc + n];
    return;
  }
  cblas_sgemm(kCblasRowMajor, trans_a ? kCblasTrans : kCblasNoTrans, trans_b ? kCblasTrans : kCblasNoTrans, int(M),
              int(N), int(K), 1.f, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
  // Pieces of rows, a multiple of 16 (whole register tiles of the BLAS's kernels), at least 64 rows.
  const int threads = cpu_threads();
  int64_t rows = (M + threads - 1) / threads;
  rows = std::max<int64_t>(64, (rows + 15) / 16 * 16);
  parallel_ranges(M, rows, double(N) * double(K), [&](int64_t m0, int64_t m1) {
    // Row m of op(A) is row m of A, or column m of A when transposed.
    const float* a = trans_a ? A + m0 : A + m0 * lda;
    sgemm_serial(trans_a, trans_b, m1 - m0, N, K, a, lda, B, ldb, beta, C + m0 * ldc, ldc);
  });
}

const char* blas_config() { return openblas_get_config(); }

void make_blas_single_threaded() { openblas_set_num_threads(1); }

}  // namespace engine::fastcpu
