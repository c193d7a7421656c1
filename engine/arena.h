// One arena per device and purpose: a planner collects every buffer a model needs (shape and dtype
// fixed at build time, sized for the largest batch), then allocate() makes one allocation and
// points each planned Tensor into it. Nothing is allocated during a step; a CUDA graph can capture
// a step because every address is fixed.
#pragma once
#include <string>
#include <vector>

#include "engine/backend.h"

namespace engine {

class Arena {
 public:
  static constexpr size_t kAlignment = 256;  // cuBLASLt and vector loads like 256-byte alignment

  Arena(Backend& backend, std::string name) : backend_(backend), name_(std::move(name)) {}
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // Declares a buffer. *slot becomes a view into the arena when allocate() runs; slot must stay
  // at the same address until then (a member of a long-lived object).
  void plan(Tensor* slot, DType dtype, std::initializer_list<int64_t> dims, std::string label);
  // Makes the single allocation and fills every planned slot. Planning after this is an error.
  void allocate();

  size_t bytes() const { return bytes_; }
  const std::string& name() const { return name_; }
  bool allocated() const { return base_ != nullptr; }
  // Every planned buffer, for reports (engine info, memory breakdowns).
  struct Entry {
    Tensor* slot;
    Tensor shape;  // dtype and shape, data == nullptr until allocated
    size_t offset;
    std::string label;
  };
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  Backend& backend_;
  std::string name_;
  std::vector<Entry> entries_;
  size_t bytes_ = 0;
  void* base_ = nullptr;
};

}  // namespace engine
