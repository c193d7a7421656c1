// Argument validation shared by the CPU ops. Every op checks its tensors on entry and throws
// engine::Error naming the op and the tensor ("linear_forward: w is f32[3,4]@cpu, expected
// [5, 4]"), so a shape mistake in model code is a message, never a crash or a silent overrun.
// Internal to engine/cpu/.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "engine/tensor.h"

namespace engine {
namespace cpu {

class OpCheck {
 public:
  explicit OpCheck(const char* op) : op_(op) {}

  // Lives on the CPU and points at memory (unless it has no elements).
  void on_cpu(const char* name, const Tensor& t) const;
  // An activation: on the CPU and f32 (the only activation dtype this backend runs).
  void act(const char* name, const Tensor& t) const;
  // On the CPU with exactly this dtype.
  void dtype(const char* name, const Tensor& t, DType want) const;
  // Exactly these dimensions.
  void shape(const char* name, const Tensor& t, std::initializer_list<int64_t> dims) const;
  // Exactly this many elements, any shape.
  void numel(const char* name, const Tensor& t, int64_t n) const;
  // A 2-D tensor; returns nothing, dims read by the caller afterwards.
  void matrix(const char* name, const Tensor& t) const;
  // Any other condition, with a message made of parts.
  template <typename... Parts>
  void that(bool cond, const Parts&... parts) const {
    if (!cond) fail(op_, ": ", parts...);
  }
  // Dropout probability in [0, 1).
  void probability(float p) const;

  const char* op() const { return op_; }

 private:
  const char* op_;
};

// Reads host i32 `ids` [n] and checks every value lies in [0, limit).
void check_indices(const OpCheck& c, const char* name, const Tensor& ids, int64_t limit, const char* what);

}  // namespace cpu
}  // namespace engine
