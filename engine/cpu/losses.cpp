// Losses, forward and backward in one pass.
// cross_entropy: logits act f32 [N, C], labels host i32 [N] (label < 0: row ignored, loss 0 and
//   gradient 0), losses f32 [N] = logsumexp(row) - row[label], dlogits act f32 [N, C] =
//   scale * (softmax - onehot). Softmax sums in double. dlogits may alias logits, and may be empty
//   (evaluation: losses only).
// mse: pred act f32 [N, 1], target f32 [N]; losses[n] = (pred - target)^2, dpred = scale * 2 (pred -
//   target) (dpred may be empty).
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/op_checks.h"

namespace engine {

void CpuBackend::cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) {
  const OpCheck c("cross_entropy", *this);
  const auto [act, N, C] = check_cross_entropy(c, losses, dlogits, logits, labels);
  // Labels are host memory here, so their upper bound is checked too (negative ones are ignored rows).
  const int32_t* label = labels.as<const int32_t>();
  for (int64_t n = 0; n < N; ++n)
    c.that(label[n] < C, "labels[", n, "] = ", label[n], " but there are only ", C, " classes");

  for (int64_t n = 0; n < N; ++n) {
    const float* row = logits.as<const float>() + n * C;
    float* grad = dlogits.empty() ? nullptr : dlogits.as<float>() + n * C;
    if (label[n] < 0) {
      losses.as<float>()[n] = 0.f;
      if (grad) std::fill(grad, grad + C, 0.f);
      continue;
    }
    double m = *std::max_element(row, row + C);
    double sum = 0;
    for (int64_t k = 0; k < C; ++k) sum += std::exp(double(row[k]) - m);
    const double lse = m + std::log(sum);
    losses.as<float>()[n] = float(lse - row[label[n]]);  // before grad may overwrite the row
    if (!grad) continue;
    for (int64_t k = 0; k < C; ++k) {
      double prob = std::exp(double(row[k]) - lse);
      grad[k] = float(double(scale) * (prob - (k == label[n] ? 1.0 : 0.0)));
    }
  }
}

void CpuBackend::mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) {
  const int64_t N = check_mse(OpCheck("mse", *this), losses, dpred, pred, target).N;
  for (int64_t n = 0; n < N; ++n) {
    double diff = double(pred.as<const float>()[n]) - double(target.as<const float>()[n]);
    losses.as<float>()[n] = float(diff * diff);
    if (!dpred.empty()) dpred.as<float>()[n] = float(double(scale) * 2.0 * diff);
  }
}

}  // namespace engine
