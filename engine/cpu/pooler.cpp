// Pooler pieces: gather rows (out[b] = x[rows[b]], e.g. each sequence's [CLS] row), the matching
// scatter-add for backward, and tanh forward/backward. act f32; rows host i32 [B].
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/op_checks.h"

namespace engine {

void CpuBackend::gather_rows(Tensor out, Tensor x, Tensor rows) {
  const OpCheck c("gather_rows", *this);
  const auto [act, B, C] = check_gather_rows(c, out, x, rows);
  c.host_indices("rows", rows, x.dim(0), "x");  // host memory: the values can be checked here
  for (int64_t b = 0; b < B; ++b) {
    const float* src = x.as<const float>() + int64_t(rows.as<const int32_t>()[b]) * C;
    for (int64_t col = 0; col < C; ++col) out.as<float>()[b * C + col] = src[col];
  }
}

void CpuBackend::scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) {
  const OpCheck c("scatter_add_rows", *this);
  const auto [act, B, C] = check_scatter_add_rows(c, dx, dout, rows);
  c.host_indices("rows", rows, dx.dim(0), "dx");
  for (int64_t b = 0; b < B; ++b) {
    float* dst = dx.as<float>() + int64_t(rows.as<const int32_t>()[b]) * C;
    for (int64_t col = 0; col < C; ++col) dst[col] += dout.as<const float>()[b * C + col];
  }
}

void CpuBackend::tanh_forward(Tensor y, Tensor x) {
  check_tanh_forward(OpCheck("tanh_forward", *this), y, x);
  // In double, rounded once: the reference is then within half an ulp of tanh. (glibc's tanhf is
  // off by up to 2 ulp, which a test with fresh random inputs meets now and then.)
  for (int64_t i = 0; i < x.numel(); ++i) y.as<float>()[i] = float(std::tanh(double(x.as<const float>()[i])));
}

void CpuBackend::tanh_backward(Tensor dx, Tensor dy, Tensor y) {
  check_tanh_backward(OpCheck("tanh_backward", *this), dx, dy, y);
  for (int64_t i = 0; i < dy.numel(); ++i) {
    double yi = y.as<const float>()[i];
    dx.as<float>()[i] = float(double(dy.as<const float>()[i]) * (1.0 - yi * yi));
  }
}

}  // namespace engine
