// Optimizer: global gradient norm and AdamW over flat f32 buffers.
// global_norm: norm[0] = sqrt(sum g^2), summed in double in index order.
// adamw (torch.optim.AdamW semantics, as the Hugging Face Trainer uses):
//   g *= min(1, max_grad_norm / (norm + 1e-6))          when max_grad_norm > 0
//   p *= 1 - lr * weight_decay                           for elements [0, decay_end)
//   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr * (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps)
// The clip coefficient and clipped gradient are f32 (as torch computes them); the rest of the
// per-element arithmetic is double, stored f32; `working` (optional, f32/bf16/f16) receives the
// updated parameters cast to its dtype.
#include <algorithm>
#include <cmath>

#include "engine/bf16.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/op_checks.h"

namespace engine {

void CpuBackend::global_norm(Tensor norm, Tensor grads) {
  check_global_norm(OpCheck("global_norm", *this), norm, grads);
  double sum = 0;
  for (int64_t i = 0; i < grads.numel(); ++i) sum += double(grads.as<const float>()[i]) * grads.as<const float>()[i];
  norm.as<float>()[0] = float(std::sqrt(sum));
}

void CpuBackend::adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                       const AdamWArgs& args) {
  const int64_t n = check_adamw(OpCheck("adamw", *this), params, grads, m, v, working, norm, args);

  float clip = 1.f;
  if (args.max_grad_norm > 0.f) {
    // torch.nn.utils.clip_grad_norm_: coefficient computed in f32, clamped to 1.
    float coef = args.max_grad_norm / (norm.as<const float>()[0] + 1e-6f);
    clip = std::min(1.0f, coef);
  }
  const double b1 = args.beta1, b2 = args.beta2, lr = args.lr, eps = args.eps;
  const double bias1 = 1.0 - std::pow(b1, double(args.step));
  const double bias2 = 1.0 - std::pow(b2, double(args.step));
  const double decay = 1.0 - lr * double(args.weight_decay);
  float* p = params.as<float>();
  const float* g_in = grads.as<const float>();
  float* m1 = m.as<float>();
  float* m2 = v.as<float>();
  for (int64_t i = 0; i < n; ++i) {
    const double g = g_in[i] * clip;  // an f32 product, as torch clips the f32 gradient in place
    double pi = p[i];
    if (i < args.decay_end) pi *= decay;
    const double mi = b1 * m1[i] + (1.0 - b1) * g;
    const double vi = b2 * m2[i] + (1.0 - b2) * g * g;
    pi -= lr * (mi / bias1) / (std::sqrt(vi / bias2) + eps);
    m1[i] = float(mi);
    m2[i] = float(vi);
    p[i] = float(pi);
  }
  if (working.empty()) return;
  for (int64_t i = 0; i < n; ++i) {
    switch (working.dtype) {
      case DType::f32: working.as<float>()[i] = p[i]; break;
      case DType::bf16: working.as<uint16_t>()[i] = float_to_bf16(p[i]); break;
      case DType::f16: working.as<uint16_t>()[i] = float_to_fp16(p[i]); break;
      case DType::i32: break;
    }
  }
}

}  // namespace engine
