// bfloat16 for the sim build: the storage type and the conversions cuda/ uses, rounding as the
// hardware's cvt.rn.bf16.f32 does (round to nearest even; a NaN becomes the canonical NaN 0x7FFF).
// Written apart from engine/bf16.h on purpose: the sim must not share a conversion bug with the
// CPU reference it is compared with.
#pragma once
#include <cstdint>
#include <cstring>

#include "cuda/sim/simt.h"

namespace cudasim {
inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(rounded >> 16);
}
inline float bf16_bits_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace cudasim

struct __nv_bfloat16 {
  uint16_t __x;
  __nv_bfloat16() = default;
  __nv_bfloat16(float f) : __x(cudasim::f32_to_bf16_bits(f)) {}
  operator float() const { return cudasim::bf16_bits_to_f32(__x); }
};
typedef __nv_bfloat16 nv_bfloat16;

struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return float(h); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {__nv_bfloat16(lo), __nv_bfloat16(hi)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return float2{float(v.x), float(v.y)}; }
inline float __low2float(__nv_bfloat162 v) { return float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return float(v.y); }
