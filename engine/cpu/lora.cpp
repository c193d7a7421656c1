// The low-rank path of a LoRA-adapted linear layer (Backend::lora_forward / lora_backward):
//   forward   u = dropout(x), z = u A^T, t[:, col:col+out] += scale * z B^T   (t = y, or pre then
//             y = gelu(pre))
//   backward  dz = scale * dy[:, col:] B, dA += dz^T u, dB += scale * dy^T z,
//             dx += dropout_backward(dz A) (then dx *= gelu'(pre_of_x))
// x [N, in], A [r, in], B [out, r], z and dz [N, r]. Plain loops, every sum in double and rounded
// once; the dropout mask is regenerated per element (index n*in + i), so u is never stored here.
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"
#include "engine/op_checks.h"

namespace engine {

namespace {

// The adapter's input element (n, i) after dropout, exactly as dropout_forward computes it.
struct DroppedInput {
  const float* x;
  int64_t in;
  uint32_t threshold;
  float keep_scale;
  DropoutRng rng;
  float operator()(int64_t n, int64_t i) const {
    const float v = x[n * in + i];
    if (threshold == 0u) return v;
    return dropout_keep(rng, uint64_t(n * in + i), threshold) ? v * keep_scale : 0.f;
  }
};

DroppedInput dropped_input(Tensor x, const LoraArgs& args) {
  return DroppedInput{x.as<const float>(), x.dim(1), dropout_threshold(args.p), cpu::dropout_scale(args.p), args.rng};
}

}  // namespace

void CpuBackend::lora_forward(Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b, const LoraArgs& args,
                              Activation act, Tensor pre) {
  const LoraShape s = check_lora_forward(OpCheck("lora_forward", *this), y, z, u, x, a, b, args, act, pre);
  const DroppedInput ux = dropped_input(x, args);
  const float* A = a.as<const float>();
  const float* B = b.as<const float>();
  float* Z = z.as<float>();
  float* target = (act == Activation::gelu ? pre : y).as<float>();
  for (int64_t n = 0; n < s.N; ++n) {
    if (args.p > 0.f)
      for (int64_t i = 0; i < s.in; ++i) u.as<float>()[n * s.in + i] = ux(n, i);
    for (int64_t k = 0; k < s.r; ++k) {
      double sum = 0;
      for (int64_t i = 0; i < s.in; ++i) sum += double(ux(n, i)) * A[k * s.in + i];
      Z[n * s.r + k] = float(sum);
    }
    for (int64_t o = 0; o < s.out; ++o) {
      double sum = 0;
      for (int64_t k = 0; k < s.r; ++k) sum += double(Z[n * s.r + k]) * B[o * s.r + k];
      float& t = target[n * s.C + args.col + o];
      t = float(double(t) + double(args.scale) * sum);
    }
  }
  if (act == Activation::gelu) {
    op_piece("gelu");
    for (int64_t i = 0; i < s.N * s.out; ++i) y.as<float>()[i] = cpu::gelu(pre.as<const float>()[i]);
  }
}

void CpuBackend::lora_backward(Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy, Tensor x, Tensor z,
                               Tensor a, Tensor b, const LoraArgs& args, Activation act_of_x, Tensor pre_of_x) {
  const LoraShape s = check_lora_backward(OpCheck("lora_backward", *this), dx, da, db, dz, u, dy, x, z, a, b, args,
                                          act_of_x, pre_of_x);
  (void)u;  // the dropped input is regenerated per element below, not stored
  const DroppedInput ux = dropped_input(x, args);
  const float* A = a.as<const float>();
  const float* B = b.as<const float>();
  const float* Z = z.as<const float>();
  const float* DY = dy.as<const float>();
  float* DZ = dz.as<float>();
  std::vector<double> da_sum(size_t(s.r * s.in), 0.0), db_sum(size_t(s.out * s.r), 0.0);
  for (int64_t n = 0; n < s.N; ++n) {
    const float* dy_row = DY + n * s.C + args.col;
    for (int64_t k = 0; k < s.r; ++k) {
      double sum = 0;
      for (int64_t o = 0; o < s.out; ++o) sum += double(dy_row[o]) * B[o * s.r + k];
      DZ[n * s.r + k] = float(double(args.scale) * sum);
    }
    for (int64_t o = 0; o < s.out; ++o)
      for (int64_t k = 0; k < s.r; ++k) db_sum[o * s.r + k] += double(dy_row[o]) * Z[n * s.r + k];
    for (int64_t k = 0; k < s.r; ++k)
      for (int64_t i = 0; i < s.in; ++i) da_sum[k * s.in + i] += double(DZ[n * s.r + k]) * ux(n, i);
  }
  for (int64_t j = 0; j < s.r * s.in; ++j) da.as<float>()[j] = float(da.as<float>()[j] + da_sum[j]);
  for (int64_t j = 0; j < s.out * s.r; ++j)
    db.as<float>()[j] = float(db.as<float>()[j] + double(args.scale) * db_sum[j]);
  if (dx.empty()) return;

  // dx += mask * (dz A): the mask is the forward's, so a dropped input gets no gradient.
  const uint32_t threshold = dropout_threshold(args.p);
  const float keep_scale = cpu::dropout_scale(args.p);
  float* DX = dx.as<float>();
  for (int64_t n = 0; n < s.N; ++n) {
    for (int64_t i = 0; i < s.in; ++i) {
      double sum = 0;
      for (int64_t k = 0; k < s.r; ++k) sum += double(DZ[n * s.r + k]) * A[k * s.in + i];
      float g = float(sum);
      if (threshold != 0u) g = dropout_keep(args.rng, uint64_t(n * s.in + i), threshold) ? g * keep_scale : 0.f;
      float& d = DX[n * s.in + i];
      d = d + g;
      if (act_of_x == Activation::gelu) d *= cpu::gelu_grad(pre_of_x.as<const float>()[n * s.in + i]);
    }
  }

}

}  // namespace engine
