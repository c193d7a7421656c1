// Branch-free f32 math the compiler can vectorise (loops marked `#pragma omp simd`), for the fast
// CPU backend: exp, the exact-GELU pieces (Phi through an erfc approximation), and dropout
// multipliers drawn from the same Philox stream as every other backend (engine/philox.h).
// Internal to engine/cpu_fast/.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/philox.h"

namespace engine::fastcpu {

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// e^x with a relative error of a few ulp; 0 below -87 (where e^x leaves the normal range), inf-free
// above 88 by clamping. x = n ln2 + r with |r| <= ln2/2, e^r by its Taylor series to r^7 (truncation
// below 1e-8 relative), 2^n by building the exponent bits.
inline float exp_f32(float x) {
  const float below = x < -87.f ? 0.f : 1.f;
  x = x < -87.f ? -87.f : x;  // ternaries, not std::min/max: those take references, which keeps
  x = x > 88.f ? 88.f : x;    // `omp simd` loops from vectorising
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest (1.5 * 2^23 trick)
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // ln2 split in two parts
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  return p * bits_to_float(uint32_t(int32_t(n) + 127) << 23) * below;
}

constexpr float kSqrtHalfF = 0.70710678118654752f;
constexpr float kInvSqrt2PiF = 0.39894228040143268f;

// Phi(x) and phi(x) (standard normal cdf and pdf) for exact GELU, through erfc(z), z = |x|/sqrt 2:
// erfc(z) = t exp(-z^2 + P(t)), t = 1/(1 + z/2), P a degree-9 polynomial (the Chebyshev fit of
// Press et al., Numerical Recipes, section 6.2: fractional error below 1.2e-7 for every z >= 0).
// Phi = 1 - erfc/2 for x >= 0 and erfc/2 for x < 0, so the negative tail keeps its relative
// accuracy (no 1 - erf cancellation). In f32 the rounding of z^2 adds about 1e-7 * z^2 relative.
struct NormalCdfPdf {
  float cdf, pdf;
};
inline NormalCdfPdf normal_cdf_pdf(float x) {
  const float z2 = 0.5f * x * x;  // z^2 = x^2 / 2
  const float z = std::fabs(x) * kSqrtHalfF;
  const float t = 1.f / (1.f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float half_erfc = 0.5f * t * exp_f32(p - z2);
  return {x < 0.f ? half_erfc : 1.f - half_erfc, exp_f32(-z2) * kInvSqrt2PiF};  // pdf: e^{-x^2/2} / sqrt(2 pi)
}

// Exact (erf) GELU x Phi(x) and its derivative Phi(x) + x phi(x).
inline float gelu_f32(float x) { return x * normal_cdf_pdf(x).cdf; }
inline float gelu_grad_f32(float x) {
  const NormalCdfPdf n = normal_cdf_pdf(x);
  return n.cdf + x * n.pdf;
}

// Dropout multipliers of elements first .. first+n-1 of a site: keep_scale where
// dropout_keep(rng, index, threshold), else 0 (exactly engine/philox.h's decision). Philox runs once
// per block of four indices, eight blocks side by side so the rounds vectorise. threshold must be
// nonzero (callers handle p == 0 as identity).
void dropout_multipliers(float* out, DropoutRng rng, uint64_t first, int64_t n, uint32_t threshold, float keep_scale);

}  // namespace engine::fastcpu

// Compile a hot loop twice, for x86-64-v3 (AVX2 + FMA) and plain x86-64, picked at run time by the
// CPU: vector code on this generation, and the binary still runs on any x86-64.
#define ENGINE_FAST_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
