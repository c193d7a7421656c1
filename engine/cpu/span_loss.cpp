// The span loss of extractive question answering (Backend::span_cross_entropy): for each sequence
// of the packed batch and each of the two logit columns (start, end), a softmax cross-entropy over
// that sequence's tokens. logits act f32 [T, 2], cu_seqlens host i32 [B+1], positions host i32
// [B, 2], losses f32 [B, 2], dlogits act f32 [T, 2] (may be empty). Sums in double.
#include <algorithm>
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/op_checks.h"

namespace engine {

namespace {

// The token a gold position points at inside a sequence of `len` tokens, or -1 when the position
// is ignored: negatives clamp to 0 and positions past the end are ignored, as HF's clamp to
// [0, ignored_index] with ignore_index = ignored_index does.
int64_t target_token(int32_t position, int64_t len) {
  const int64_t p = std::max<int64_t>(position, 0);
  return p < len ? p : -1;
}

}  // namespace

void CpuBackend::span_cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor cu_seqlens, Tensor positions,
                                    const BatchShape& batch, float scale_start, float scale_end) {
  const OpCheck c("span_cross_entropy", *this);
  const auto [act, T, B] = check_span_cross_entropy(c, losses, dlogits, logits, cu_seqlens, positions, batch);
  (void)act;
  // cu_seqlens is host memory here, so its values are checked too.
  const int32_t* cu = cu_seqlens.as<const int32_t>();
  c.that(cu[0] == 0 && cu[B] == T, "cu_seqlens must run from 0 to ", T, " (got ", cu[0], " .. ", cu[B], ")");
  for (int64_t b = 0; b < B; ++b) c.that(cu[b + 1] > cu[b], "sequence ", b, " is empty");

  const float* x = logits.as<const float>();
  float* dx = dlogits.empty() ? nullptr : dlogits.as<float>();
  const float scale[2] = {scale_start, scale_end};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t begin = cu[b], len = cu[b + 1] - cu[b];
    for (int j = 0; j < 2; ++j) {
      const int64_t target = target_token(positions.as<const int32_t>()[b * 2 + j], len);
      float& loss = losses.as<float>()[b * 2 + j];
      if (target < 0) {
        loss = 0.f;
        if (dx)
          for (int64_t t = 0; t < len; ++t) dx[(begin + t) * 2 + j] = 0.f;
        continue;
      }
      double m = -INFINITY;
      for (int64_t t = 0; t < len; ++t) m = std::max(m, double(x[(begin + t) * 2 + j]));
      double sum = 0;
      for (int64_t t = 0; t < len; ++t) sum += std::exp(double(x[(begin + t) * 2 + j]) - m);
      const double lse = m + std::log(sum);
      loss = float(lse - double(x[(begin + target) * 2 + j]));
      if (!dx) continue;
      for (int64_t t = 0; t < len; ++t) {
        const double prob = std::exp(double(x[(begin + t) * 2 + j]) - lse);
        dx[(begin + t) * 2 + j] = float(double(scale[j]) * (prob - (t == target ? 1.0 : 0.0)));
      }
    }
  }
}

}  // namespace engine
