// Linear layers of the fast CPU backend, W[out, in] as Hugging Face stores it:
//   forward  y = act(x W^T + b): bias rows copied into the output, one sgemm (NT) adds x W^T, then
//            one vectorised GELU pass when act is gelu (pre keeps x W^T + b)
//   dx       dx (+)= dy W: one sgemm (NN), times gelu'(pre_of_x) in a vectorised pass
//   dw, db   dw += dy^T x: one sgemm (TN) accumulating into the f32 gradient; db += column sums of
//            dy over fixed blocks of rows, combined in block order (independent of the thread count)
#include <algorithm>

#include "engine/cpu_fast/blas.h"
#include "engine/cpu_fast/fast_cpu_backend.h"
#include "engine/cpu_fast/threads.h"
#include "engine/cpu_fast/vec_math.h"
#include "engine/op_checks.h"

namespace engine {

namespace {

constexpr int64_t kElementGrain = 1 << 14;  // elements per parallel piece of an elementwise pass
constexpr int64_t kRowBlock = 64;           // rows per block of a column reduction

ENGINE_FAST_CLONES void gelu_range(float* y, const float* pre, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = fastcpu::gelu_f32(pre[i]);
}

ENGINE_FAST_CLONES void times_gelu_grad_range(float* dx, const float* pre, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] *= fastcpu::gelu_grad_f32(pre[i]);
}

ENGINE_FAST_CLONES void add_rows_range(float* sums, const float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) sums[c] += x[r * cols + c];
  }
}

// db[c] += sum over rows of dy[r, c]: partial sums per block of kRowBlock rows (in row order), then
// the blocks in order. The same arithmetic whatever the thread count.
void add_column_sums(float* db, const float* dy, int64_t rows, int64_t cols) {
  const int64_t blocks = (rows + kRowBlock - 1) / kRowBlock;
  float* partial = fastcpu::thread_scratch(size_t(blocks * cols), 3);  // filled by every thread
  fastcpu::parallel_blocks(blocks, double(rows * cols), [&](int64_t b) {
    const int64_t r0 = b * kRowBlock, r1 = std::min(rows, r0 + kRowBlock);
    std::fill(partial + b * cols, partial + (b + 1) * cols, 0.f);
    add_rows_range(partial + b * cols, dy + r0 * cols, r1 - r0, cols);
  });
  float* total = fastcpu::thread_scratch(size_t(cols), 4);
  std::fill(total, total + cols, 0.f);
  add_rows_range(total, partial, blocks, cols);
  for (int64_t c = 0; c < cols; ++c) db[c] += total[c];
}

}  // namespace

void FastCpuBackend::linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) {
  const auto [dt, N, in, out] = check_linear_forward(OpCheck("linear_forward", *this), y, x, w, b, act, pre);
  float* dst = act == Activation::gelu ? pre.as<float>() : y.as<float>();
  float beta = 0.f;
  if (!b.empty()) {
    const float* bias = b.as<const float>();
    fastcpu::parallel_ranges(N, std::max<int64_t>(1, kElementGrain / std::max<int64_t>(out, 1)), double(out),
                             [&](int64_t r0, int64_t r1) {
                               for (int64_t r = r0; r < r1; ++r) std::copy(bias, bias + out, dst + r * out);
                             });
    beta = 1.f;
  }
  fastcpu::sgemm(false, true, N, out, in, x.as<const float>(), in, w.as<const float>(), in, beta, dst, out);
  if (act != Activation::gelu) return;
  op_piece("gelu");
  float* yv = y.as<float>();
  const float* pv = pre.as<const float>();
  fastcpu::parallel_ranges(N * out, kElementGrain, 20.0, [&](int64_t i0, int64_t i1) { gelu_range(yv + i0, pv + i0, i1 - i0); });
}

void FastCpuBackend::linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x,
                                        Tensor pre_of_x) {
  const auto [dt, N, in, out] =
      check_linear_backward_dx(OpCheck("linear_backward_dx", *this), dx, dy, w, accumulate, act_of_x, pre_of_x);
  fastcpu::sgemm(false, false, N, in, out, dy.as<const float>(), out, w.as<const float>(), in, accumulate ? 1.f : 0.f,
                 dx.as<float>(), in);
  if (act_of_x != Activation::gelu) return;
  op_piece("gelu");
  float* d = dx.as<float>();
  const float* pv = pre_of_x.as<const float>();
  fastcpu::parallel_ranges(N * in, kElementGrain, 20.0,
                           [&](int64_t i0, int64_t i1) { times_gelu_grad_range(d + i0, pv + i0, i1 - i0); });
}

void FastCpuBackend::linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) {
  const auto [dt, N, in, out] = check_linear_backward_dw(OpCheck("linear_backward_dw", *this), dw, db, dy, x);
  fastcpu::sgemm(true, false, out, in, N, dy.as<const float>(), out, x.as<const float>(), in, 1.f, dw.as<float>(), in);
  if (!db.empty()) add_column_sums(db.as<float>(), dy.as<const float>(), N, out);
}

}  // namespace engine
