// Standalone dropout (after the embeddings, before the classifier): y = x * keep / (1 - p) with
// keep = dropout_keep(rng, i) for flat element index i (t*C + c of a [T, C] tensor). Any shape,
// act f32; y may alias x. Backward applies the same mask to dy.
#include "engine/cpu/checks.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"

namespace engine {

using cpu::OpCheck;

static void apply_dropout(const OpCheck& c, Tensor out, Tensor in, const char* out_name, const char* in_name,
                          float p, DropoutRng rng) {
  c.act(in_name, in);
  c.act(out_name, out);
  c.numel(out_name, out, in.numel());
  c.probability(p);
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
  apply_dropout(OpCheck("dropout_forward"), y, x, "y", "x", p, rng);
}

void CpuBackend::dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) {
  apply_dropout(OpCheck("dropout_backward"), dx, dy, "dx", "dy", p, rng);
}

}  // namespace engine
