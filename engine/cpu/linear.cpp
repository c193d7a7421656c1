// Linear layers with the Hugging Face weight layout W[out, in]:
//   forward   y = act(x W^T + b)        x [N, in], W [out, in], b [out], y (and pre) [N, out]
//   dx        dx (+)= dy W, times gelu'(pre_of_x) when x came out of a GELU
//   dw, db    dw += dy^T x, db += sum_n dy   (f32 parameter gradients)
// Every product is one gemm_nt (kernels.h): dot products of two contiguous rows accumulated in
// double; operands that are not row-contiguous along the reduction are transposed into scratch
// first. Activations f32.
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"
#include "engine/op_checks.h"

namespace engine {

namespace {
// Scratch for transposed operands. Grows to the largest layer once, then is reused, so a training
// step allocates nothing after the first.
float* scratch(size_t floats, int which) {
  thread_local std::vector<float> buffers[2];
  if (buffers[which].size() < floats) buffers[which].resize(floats);
  return buffers[which].data();
}
}  // namespace

void CpuBackend::linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) {
  const auto [dt, N, in, out] = check_linear_forward(OpCheck("linear_forward", *this), y, x, w, b, act, pre);
  const float* bias = b.empty() ? nullptr : b.as<const float>();
  if (act == Activation::none) {
    cpu::gemm_nt(y.as<float>(), x.as<const float>(), w.as<const float>(), bias, N, out, in, false);
    return;
  }
  cpu::gemm_nt(pre.as<float>(), x.as<const float>(), w.as<const float>(), bias, N, out, in, false);
  op_piece("gelu");
  for (int64_t i = 0; i < N * out; ++i) y.as<float>()[i] = cpu::gelu(pre.as<const float>()[i]);
}

void CpuBackend::linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x,
                                    Tensor pre_of_x) {
  const auto [dt, N, in, out] =
      check_linear_backward_dx(OpCheck("linear_backward_dx", *this), dx, dy, w, accumulate, act_of_x, pre_of_x);

  // dx[n, i] = sum_o dy[n, o] W[o, i]: the reduction runs down W's columns, so use W^T [in, out].
  float* wt = scratch(size_t(in * out), 0);
  cpu::transpose(wt, w.as<const float>(), out, in);
  cpu::gemm_nt(dx.as<float>(), dy.as<const float>(), wt, nullptr, N, in, out, accumulate);
  if (act_of_x == Activation::gelu) op_piece("gelu");
  if (act_of_x == Activation::gelu)
    for (int64_t i = 0; i < N * in; ++i) dx.as<float>()[i] *= cpu::gelu_grad(pre_of_x.as<const float>()[i]);
}

void CpuBackend::linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) {
  const auto [dt, N, in, out] = check_linear_backward_dw(OpCheck("linear_backward_dw", *this), dw, db, dy, x);

  // dw[o, i] = sum_n dy[n, o] x[n, i]: the reduction runs over rows, so transpose both.
  float* dyt = scratch(size_t(out * N), 0);
  float* xt = scratch(size_t(in * N), 1);
  cpu::transpose(dyt, dy.as<const float>(), N, out);
  cpu::transpose(xt, x.as<const float>(), N, in);
  cpu::gemm_nt(dw.as<float>(), dyt, xt, nullptr, out, in, N, true);
  if (db.empty()) return;
  for (int64_t o = 0; o < out; ++o) {
    double sum = 0;
    for (int64_t n = 0; n < N; ++n) sum += dyt[o * N + n];
    db.as<float>()[o] = float(db.as<float>()[o] + sum);
  }
}

}  // namespace engine
