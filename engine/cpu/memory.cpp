// CPU backend basics and memory: identity (name, device, supported dtypes), 256-byte aligned
// allocations, copies, fill and dtype casts (f32 <-> bf16 <-> f16 with round-to-nearest-even via
// engine/bf16.h; i32 only fills and copies).
#include <cstdlib>
#include <cstring>

#include "engine/bf16.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/op_checks.h"

namespace engine {

Device CpuBackend::device() const { return Device::cpu; }
std::string CpuBackend::name() const { return "cpu-ref"; }
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
  check_copy_from_host(OpCheck("copy_from_host", *this), dst, src);
  if (dst.bytes()) std::memcpy(dst.data, src, dst.bytes());
}

void CpuBackend::copy_to_host(void* dst, Tensor src) {
  check_copy_to_host(OpCheck("copy_to_host", *this), dst, src);
  if (src.bytes()) std::memcpy(dst, src.data, src.bytes());
}

void CpuBackend::copy(Tensor dst, Tensor src) {
  check_copy(OpCheck("copy", *this), dst, src);
  if (dst.bytes()) std::memmove(dst.data, src.data, dst.bytes());
}

void CpuBackend::fill(Tensor x, float value) {
  check_fill(OpCheck("fill", *this), x);
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
  // Refuses casts from or to i32 and in-place casts between dtypes: element by element in order,
  // a narrowing cast in place stays correct only from f32 to 16 bits.
  check_cast(OpCheck("cast", *this), dst, src);
  if (dst.dtype == src.dtype) {
    if (dst.bytes() && dst.data != src.data) std::memmove(dst.data, src.data, dst.bytes());
    return;
  }
  for (int64_t i = 0; i < src.numel(); ++i) store_float(dst, i, load_float(src, i));
}

}  // namespace engine
