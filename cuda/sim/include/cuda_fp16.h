// IEEE half for the sim build: storage and the conversions cuda/ uses, rounding as cvt.rn.f16.f32
// does (nearest even, subnormals kept, overflow to infinity, NaN to the canonical 0x7FFF).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cuda/sim/simt.h"

namespace cudasim {
inline uint16_t f32_to_f16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u) return 0x7fff;
  if (mag >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // 65520 and above round to infinity
  if (mag >= 0x38800000u) {                                   // normal in half: rebias, round the 13 dropped bits
    const uint32_t rounded = mag + 0xfffu + ((mag >> 13) & 1u);
    return uint16_t(sign | ((rounded - 0x38000000u) >> 13));
  }
  float a;
  std::memcpy(&a, &mag, 4);
  return uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.f)));  // subnormal: units of 2^-24, exact scaling
}
inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(float(mant), -24);
    return sign ? -f : f;
  }
  const uint32_t u = sign | (exp == 31 ? 0x7f800000u | (mant << 13) : ((exp + 112u) << 23) | (mant << 13));
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace cudasim

struct __half {
  uint16_t __x;
  __half() = default;
  __half(float f) : __x(cudasim::f32_to_f16_bits(f)) {}
  operator float() const { return cudasim::f16_bits_to_f32(__x); }
};

struct alignas(4) __half2 {
  __half x, y;
};

inline __half __float2half_rn(float f) { return __half(f); }
inline __half __float2half(float f) { return __half(f); }
inline float __half2float(__half h) { return float(h); }
