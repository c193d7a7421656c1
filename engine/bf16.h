// bfloat16 and IEEE half on the host: conversions with round-to-nearest-even, for checkpoints
// stored in bf16/fp16 and for tests that build bf16 inputs. Plain C++, no CUDA headers.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace engine {

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float bf16_to_float(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float fp16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while (!(mant & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3FF) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7F800000u | mant << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_fp16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000;
  if (std::isnan(f)) return uint16_t(sign | 0x7E00);
  float a = std::fabs(f);
  if (a >= 65520.f) return uint16_t(sign | 0x7C00);
  if (a < 6.103515625e-05f) {  // subnormal or zero: scale into the 10-bit mantissa, round to even
    return uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.f)));
  }
  uint32_t exp = ((u >> 23) & 0xFF) - 127 + 15, mant = u & 0x7FFFFF;
  uint32_t h = exp << 10 | mant >> 13;
  uint32_t rest = mant & 0x1FFF;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ++h;
  return uint16_t(sign | h);
}

}  // namespace engine
