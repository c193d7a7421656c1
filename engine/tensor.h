// Tensor: a non-owning view of memory that some arena owns. A pointer, a dtype, up to four
// dimensions (row-major, contiguous) and the device the memory lives on. Views are cheap to copy
// and never free anything; ops take them by value.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/error.h"

namespace engine {

enum class DType : uint8_t { f32, bf16, f16, i32 };
enum class Device : uint8_t { cpu, cuda };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
  }
  return "?";
}

inline const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

struct Tensor {
  static constexpr int kMaxDims = 4;

  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};

  Tensor() = default;
  Tensor(void* p, DType t, Device dev, std::initializer_list<int64_t> dims) : data(p), dtype(t), device(dev) {
    ENGINE_CHECK(dims.size() <= kMaxDims, "tensor with ", dims.size(), " dimensions (at most ", kMaxDims, ")");
    for (int64_t d : dims) {
      ENGINE_CHECK(d >= 0, "negative tensor dimension ", d);
      shape[ndim++] = d;
    }
  }

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  size_t bytes() const { return size_t(numel()) * dtype_size(dtype); }
  // Elements per leading row: the product of every dimension but the first.
  int64_t row_size() const { return ndim == 0 ? 1 : numel() / (shape[0] ? shape[0] : 1); }

  template <typename T>
  T* as() const { return static_cast<T*>(data); }

  // The first n rows (along dimension 0) of this view: buffers are planned for the largest batch
  // and each step views only the rows it uses.
  Tensor rows(int64_t n) const {
    ENGINE_CHECK(ndim >= 1 && n <= shape[0], "rows(", n, ") of a tensor with ", ndim ? shape[0] : 0, " rows");
    Tensor t = *this;
    t.shape[0] = n;
    return t;
  }
  // Rows [begin, begin + n).
  Tensor slice_rows(int64_t begin, int64_t n) const {
    ENGINE_CHECK(ndim >= 1 && begin >= 0 && begin + n <= shape[0], "slice_rows(", begin, ", ", n, ") of ",
                 ndim ? shape[0] : 0, " rows");
    Tensor t = *this;
    t.data = static_cast<char*>(data) + size_t(begin * row_size()) * dtype_size(dtype);
    t.shape[0] = n;
    return t;
  }
  // Same memory, another shape with the same element count.
  Tensor view(std::initializer_list<int64_t> dims) const {
    Tensor t(data, dtype, device, dims);
    ENGINE_CHECK(t.numel() == numel(), "view of ", numel(), " elements as ", t.numel());
    return t;
  }
  std::string str() const {
    std::string s = std::string(dtype_name(dtype)) + "[";
    for (int i = 0; i < ndim; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
    return s + "]@" + device_name(device);
  }
};

}  // namespace engine
