// CPU backend basics and memory: identity (name, device, supported dtypes), 256-byte aligned
// allocations, copies, fill and dtype casts (f32 <-> bf16 <-> f16 with round-to-nearest-even via
// engine/bf16.h; i32 only fills and copies).
#include <cstdlib>
#include <cstring>

#include "engine/bf16.h"
#include "engine/cpu/checks.h"
#include "engine/cpu/cpu_backend.h"

namespace engine {

using cpu::OpCheck;

Device CpuBackend::device() const { return Device::cpu; }
std::string CpuBackend::name() const { return "cpu"; }
bool CpuBackend::supports(DType act) const { return act == DType::f32; }
void CpuBackend::synchronize() {}

void* CpuBackend::allocate(size_t bytes) {
  constexpr size_t kAlign = 256;  // same as Arena::kAlignment and the CUDA backend
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;  // aligned_alloc wants a multiple
  void* p = std::aligned_alloc(kAlign, rounded ? rounded : kAlign);
  ENGINE_CHECK(p, "cpu backend: could not allocate ", bytes, " bytes");
  return p;
}

void CpuBackend::release(void* p) { std::free(p); }

void CpuBackend::copy_from_host(Tensor dst, const void* src) {
  OpCheck("copy_from_host").on_cpu("dst", dst);
  ENGINE_CHECK(src || dst.bytes() == 0, "copy_from_host: null source");
  if (dst.bytes()) std::memcpy(dst.data, src, dst.bytes());
}

void CpuBackend::copy_to_host(void* dst, Tensor src) {
  OpCheck("copy_to_host").on_cpu("src", src);
  ENGINE_CHECK(dst || src.bytes() == 0, "copy_to_host: null destination");
  if (src.bytes()) std::memcpy(dst, src.data, src.bytes());
}

void CpuBackend::copy(Tensor dst, Tensor src) {
  OpCheck c("copy");
  c.on_cpu("dst", dst);
  c.on_cpu("src", src);
  c.that(dst.dtype == src.dtype, "dst is ", dst.str(), " but src is ", src.str(), " (use cast to change dtype)");
  c.numel("dst", dst, src.numel());
  if (dst.bytes()) std::memmove(dst.data, src.data, dst.bytes());
}

void CpuBackend::fill(Tensor x, float value) {
  OpCheck("fill").on_cpu("x", x);
  int64_t n = x.numel();
  switch (x.dtype) {
    case DType::f32:
      for (int64_t i = 0; i < n; ++i) x.as<float>()[i] = value;
      break;
    case DType::bf16:
      for (int64_t i = 0; i < n; ++i) x.as<uint16_t>()[i] = float_to_bf16(value);
      break;
    case DType::f16:
      for (int64_t i = 0; i < n; ++i) x.as<uint16_t>()[i] = float_to_fp16(value);
      break;
    case DType::i32:
      for (int64_t i = 0; i < n; ++i) x.as<int32_t>()[i] = int32_t(value);
      break;
  }
}

static float load_float(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::f32: return t.as<const float>()[i];
    case DType::bf16: return bf16_to_float(t.as<const uint16_t>()[i]);
    case DType::f16: return fp16_to_float(t.as<const uint16_t>()[i]);
    case DType::i32: break;
  }
  return 0.f;
}

static void store_float(const Tensor& t, int64_t i, float v) {
  switch (t.dtype) {
    case DType::f32: t.as<float>()[i] = v; break;
    case DType::bf16: t.as<uint16_t>()[i] = float_to_bf16(v); break;
    case DType::f16: t.as<uint16_t>()[i] = float_to_fp16(v); break;
    case DType::i32: break;
  }
}

void CpuBackend::cast(Tensor dst, Tensor src) {
  OpCheck c("cast");
  c.on_cpu("dst", dst);
  c.on_cpu("src", src);
  c.numel("dst", dst, src.numel());
  if (dst.dtype == src.dtype) {
    if (dst.bytes() && dst.data != src.data) std::memmove(dst.data, src.data, dst.bytes());
    return;
  }
  c.that(dst.dtype != DType::i32 && src.dtype != DType::i32, "cannot cast ", src.str(), " to ", dst.str(),
         " (casts are between f32, bf16 and f16)");
  // Element by element in order: a narrowing cast in place (same buffer) stays correct only
  // from f32 to 16 bits, so refuse overlap instead of guessing.
  c.that(dst.data != src.data || dst.numel() == 0, "dst and src share memory (in-place cast between dtypes)");
  for (int64_t i = 0; i < src.numel(); ++i) store_float(dst, i, load_float(src, i));
}

}  // namespace engine
