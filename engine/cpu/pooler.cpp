// Pooler pieces: gather rows (out[b] = x[rows[b]], e.g. each sequence's [CLS] row), the matching
// scatter-add for backward, and tanh forward/backward. act f32; rows host i32 [B].
#include <cmath>

#include "engine/cpu/checks.h"
#include "engine/cpu/cpu_backend.h"

namespace engine {

using cpu::OpCheck;

namespace {
// Checks out/x-style pairs [B, C] and [T, C] and rows i32 [B] inside [0, T).
void check_rows(const OpCheck& c, const char* small_name, Tensor small, const char* big_name, Tensor big,
                Tensor rows) {
  c.act(big_name, big);
  c.matrix(big_name, big);
  c.act(small_name, small);
  c.dtype("rows", rows, DType::i32);
  c.matrix(small_name, small);
  const int64_t B = small.dim(0), C = big.dim(1);
  c.shape(small_name, small, {B, C});
  c.shape("rows", rows, {B});
  cpu::check_indices(c, "rows", rows, big.dim(0), big_name);
}
}  // namespace

void CpuBackend::gather_rows(Tensor out, Tensor x, Tensor rows) {
  OpCheck c("gather_rows");
  check_rows(c, "out", out, "x", x, rows);
  const int64_t C = x.dim(1);
  for (int64_t b = 0; b < out.dim(0); ++b) {
    const float* src = x.as<const float>() + int64_t(rows.as<const int32_t>()[b]) * C;
    for (int64_t col = 0; col < C; ++col) out.as<float>()[b * C + col] = src[col];
  }
}

void CpuBackend::scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) {
  OpCheck c("scatter_add_rows");
  check_rows(c, "dout", dout, "dx", dx, rows);
  const int64_t C = dx.dim(1);
  for (int64_t b = 0; b < dout.dim(0); ++b) {
    float* dst = dx.as<float>() + int64_t(rows.as<const int32_t>()[b]) * C;
    for (int64_t col = 0; col < C; ++col) dst[col] += dout.as<const float>()[b * C + col];
  }
}

void CpuBackend::tanh_forward(Tensor y, Tensor x) {
  OpCheck c("tanh_forward");
  c.act("x", x);
  c.act("y", y);
  c.numel("y", y, x.numel());
  for (int64_t i = 0; i < x.numel(); ++i) y.as<float>()[i] = std::tanh(x.as<const float>()[i]);
}

void CpuBackend::tanh_backward(Tensor dx, Tensor dy, Tensor y) {
  OpCheck c("tanh_backward");
  c.act("dy", dy);
  c.act("y", y);
  c.act("dx", dx);
  c.numel("y", y, dy.numel());
  c.numel("dx", dx, dy.numel());
  for (int64_t i = 0; i < dy.numel(); ++i) {
    double yi = y.as<const float>()[i];
    dx.as<float>()[i] = float(double(dy.as<const float>()[i]) * (1.0 - yi * yi));
  }
}

}  // namespace engine
