// Argument validation for the CPU ops (see checks.h).
#include "engine/cpu/checks.h"

#include <cmath>
#include <string>

namespace engine {
namespace cpu {

static std::string dims_str(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  bool first = true;
  for (int64_t d : dims) {
    s += (first ? "" : ",") + std::to_string(d);
    first = false;
  }
  return s + "]";
}

void OpCheck::on_cpu(const char* name, const Tensor& t) const {
  that(t.device == Device::cpu, name, " is on ", device_name(t.device), " but this is the CPU backend");
  that(t.data != nullptr || t.numel() == 0, name, " is empty (null data) but required");
}

void OpCheck::act(const char* name, const Tensor& t) const {
  on_cpu(name, t);
  that(t.dtype == DType::f32, name, " is ", t.str(), ": the CPU backend runs activations in f32 only");
}

void OpCheck::dtype(const char* name, const Tensor& t, DType want) const {
  on_cpu(name, t);
  that(t.dtype == want, name, " is ", t.str(), ", expected dtype ", dtype_name(want));
}

void OpCheck::shape(const char* name, const Tensor& t, std::initializer_list<int64_t> dims) const {
  bool same = t.ndim == int(dims.size());
  int i = 0;
  for (int64_t d : dims) same = same && t.shape[i++] == d;
  that(same, name, " is ", t.str(), ", expected shape ", dims_str(dims));
}

void OpCheck::numel(const char* name, const Tensor& t, int64_t n) const {
  that(t.numel() == n, name, " is ", t.str(), " with ", t.numel(), " elements, expected ", n);
}

void OpCheck::matrix(const char* name, const Tensor& t) const {
  that(t.ndim == 2, name, " is ", t.str(), ", expected a 2-D tensor");
}

void OpCheck::probability(float p) const {
  that(std::isfinite(p) && p >= 0.f && p < 1.f, "dropout probability ", p, " is outside [0, 1)");
}

void check_indices(const OpCheck& c, const char* name, const Tensor& ids, int64_t limit, const char* what) {
  const int32_t* v = ids.as<const int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i)
    c.that(v[i] >= 0 && v[i] < limit, name, "[", i, "] = ", v[i], " is outside ", what, " (", limit, " rows)");
}

}  // namespace cpu
}  // namespace engine
