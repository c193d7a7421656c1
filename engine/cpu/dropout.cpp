// Standalone dropout (after the embeddings, before the classifier): y = x * keep / (1 - p) with
// keep = dropout_keep(rng, i) for flat element index i (t*C + c of a [T, C] tensor). Any shape,
// act f32; y may alias x. Backward applies the same mask to dy.
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"
#include "engine/op_checks.h"

namespace engine {

// out = dropout(in), both f32 of in.numel() elements (checked by the caller).
static void apply_dropout(Tensor out, Tensor in, float p, DropoutRng rng) {
  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = cpu::dropout_scale(p);
  const float* x = in.as<const float>();
  float* y = out.as<float>();
  for (int64_t i = 0; i < in.numel(); ++i) {
    if (threshold == 0u) {
      y[i] = x[i];  // p == 0: identity, bit for bit
    } else {
      y[i] = dropout_keep(rng, uint64_t(i), threshold) ? x[i] * keep_scale : 0.f;
    }
  }
}

void CpuBackend::dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) {
  check_dropout_forward(OpCheck("dropout_forward", *this), y, x, p);
  apply_dropout(y, x, p, rng);
}

void CpuBackend::dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) {
  check_dropout_backward(OpCheck("dropout_backward", *this), dx, dy, p);
  apply_dropout(dx, dy, p, rng);
}

}  // namespace engine
