// Measures single-precision matrix products of one BLAS: a large square GEMM and the products of
// one BERT fine-tune step (forward y = x W^T, backward dx = dy W, dw += dy^T x) at the MiniLM
// (hidden 384, FFN 1536) and BERT-base (768, 3072) shapes for 4096 tokens, plus the per-(sequence,
// head) attention products. Built once per library by bench/blas_pick/run.sh (BLAS_OPENBLAS,
// BLAS_BLIS or BLAS_DNNL picks the entry points); prints one line per shape: GFLOP/s.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

extern "C" {
#if defined(BLAS_DNNL)
int dnnl_sgemm(char transa, char transb, long M, long N, long K, float alpha, const float* A, long lda,
               const float* B, long ldb, float beta, float* C, long ldc);
#else
enum { RowMajor = 101 };
enum { NoTrans = 111, Trans = 112 };
void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc);
#endif
#if defined(BLAS_OPENBLAS)
void openblas_set_num_threads(int n);
#elif defined(BLAS_BLIS)
void bli_thread_set_num_threads(long n);
#endif
}

// Row-major C[M, N] = alpha op(A) op(B) + beta C with op = transpose when the flag is set.
static void sgemm(bool ta, bool tb, int M, int N, int K, const float* A, const float* B, float beta, float* C) {
  const int lda = ta ? M : K, ldb = tb ? K : N;
#if defined(BLAS_DNNL)
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, 1.f, A, lda, B, ldb, beta, C, N);
#else
  cblas_sgemm(RowMajor, ta ? Trans : NoTrans, tb ? Trans : NoTrans, M, N, K, 1.f, A, lda, B, ldb, beta, C, N);
#endif
}

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Shape {
  std::string name;
  bool ta, tb;
  int M, N, K, batch;  // batch: this many independent products of the same shape (attention)
};

// Best of `reps` timings of the shape (after one warm-up), in seconds for all its batch products.
static double time_shape(const Shape& s, int reps) {
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> A(size_t(s.M) * s.K * s.batch), B(size_t(s.K) * s.N * s.batch), C(size_t(s.M) * s.N * s.batch);
  for (float& x : A) x = u(gen);
  for (float& x : B) x = u(gen);
  double best = 1e30;
  for (int r = 0; r <= reps; ++r) {
    double t0 = now();
    for (int b = 0; b < s.batch; ++b)
      sgemm(s.ta, s.tb, s.M, s.N, s.K, A.data() + size_t(b) * s.M * s.K, B.data() + size_t(b) * s.K * s.N, 0.f,
            C.data() + size_t(b) * s.M * s.N);
    double t = now() - t0;
    if (r > 0 && t < best) best = t;
  }
  return best;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
#if defined(BLAS_OPENBLAS)
  openblas_set_num_threads(threads);
#elif defined(BLAS_BLIS)
  bli_thread_set_num_threads(threads);
#else
  (void)threads;  // oneDNN's OpenMP build: OMP_NUM_THREADS, set by run.sh
#endif
  const int T = 4096;  // 32 sequences of 128 tokens
  std::vector<Shape> shapes = {{"square 2048", false, false, 2048, 2048, 2048, 1}};
  struct Model {
    const char* model;
    int H, F, d;
  };
  for (const Model& mo : {Model{"minilm", 384, 1536, 32}, Model{"bert-base", 768, 3072, 64}}) {
    const char* model = mo.model;
    const int H = mo.H, F = mo.F, d = mo.d;
    // (out, in) of each linear layer: fused QKV, attention output, FFN up, FFN down.
    const int layers[4][2] = {{3 * H, H}, {H, H}, {F, H}, {H, F}};
    for (const auto& l : layers) {
      const int out = l[0], in = l[1];
      std::string tag = std::string(model) + " " + std::to_string(out) + "x" + std::to_string(in);
      shapes.push_back({tag + " fwd", false, true, T, out, in, 1});   // y = x W^T
      shapes.push_back({tag + " dx", false, false, T, in, out, 1});   // dx = dy W
      shapes.push_back({tag + " dw", true, false, out, in, T, 1});    // dw = dy^T x
    }
    shapes.push_back({std::string(model) + " attn QK^T", false, true, 128, 128, d, 64});
    shapes.push_back({std::string(model) + " attn PV", false, false, 128, d, 128, 64});
  }
  std::printf("threads %d\n", threads);
  double step_flops[2] = {0, 0}, step_time[2] = {0, 0};
  for (const Shape& s : shapes) {
    const double flops = 2.0 * s.M * s.N * s.K * s.batch;
    const int reps = flops > 1e10 ? 2 : 4;
    const double t = time_shape(s, reps);
    std::printf("%-32s M=%5d N=%5d K=%5d x%-3d %8.1f GFLOP/s\n", s.name.c_str(), s.M, s.N, s.K, s.batch,
                flops / t / 1e9);
    const int m = s.name.rfind("bert-base", 0) == 0 ? 1 : s.name.rfind("minilm", 0) == 0 ? 0 : -1;
    if (m >= 0 && s.batch == 1) step_flops[m] += flops, step_time[m] += t;
  }
  std::printf("%-32s %8.1f GFLOP/s (all linear-layer products of a layer, time-weighted)\n", "minilm linear total",
              step_flops[0] / step_time[0] / 1e9);
  std::printf("%-32s %8.1f GFLOP/s\n", "bert-base linear total", step_flops[1] / step_time[1] / 1e9);
  return 0;
}
