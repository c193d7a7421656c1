// Helpers shared by the CPU op tests: a seeded RNG that reports its seed on failure (rerun with
// ENGINE_TEST_SEED=<seed>), Tensor views over std::vector, and a central finite-difference
// gradient check.
#pragma once
#include "test_seed.h"
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <random>
#include <type_traits>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/tensor.h"

namespace engine_test {

using engine::Device;
using engine::DType;
using engine::Tensor;

struct TestRng {
  uint64_t seed = pick_seed();
  std::mt19937_64 gen{seed};

  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(gen); }
  int integer(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(gen); }  // inclusive
  std::vector<float> normals(size_t n, double stddev = 1.0) {
    std::normal_distribution<double> dist(0.0, stddev);
    std::vector<float> v(n);
    for (float& x : v) x = float(dist(gen));
    return v;
  }
  std::vector<float> uniforms(size_t n, double lo = -1.0, double hi = 1.0) {
    std::vector<float> v(n);
    for (float& x : v) x = float(uniform(lo, hi));
    return v;
  }
};

#define TRACE_SEED(rng) \
  SCOPED_TRACE(::testing::Message() << "seed " << (rng).seed << " (rerun with ENGINE_TEST_SEED=" << (rng).seed << ")")

inline Tensor view(std::vector<float>& v, std::initializer_list<int64_t> dims) {
  Tensor t(v.data(), DType::f32, Device::cpu, dims);
  EXPECT_EQ(size_t(t.numel()), v.size()) << "test bug: view of the wrong size";
  return t;
}
// A view of the first elements of v (for tests that build deliberately mismatched shapes).
template <typename T>
Tensor prefix(std::vector<T>& v, std::initializer_list<int64_t> dims) {
  Tensor t(v.data(), std::is_same<T, int32_t>::value ? DType::i32 : DType::f32, Device::cpu, dims);
  EXPECT_LE(size_t(t.numel()), v.size()) << "test bug: view larger than its vector";
  return t;
}
inline Tensor view(std::vector<int32_t>& v, std::initializer_list<int64_t> dims) {
  Tensor t(v.data(), DType::i32, Device::cpu, dims);
  EXPECT_EQ(size_t(t.numel()), v.size()) << "test bug: view of the wrong size";
  return t;
}

// sum_i a[i] * b[i] in double: the scalar "random projection" loss L = sum(out * R).
inline double project(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

inline std::vector<float> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = a[i] - b[i];
  return d;
}

// Checks the analytic gradient `an` of loss() with respect to x against central differences at
// up to `samples` random elements of x (all of them when x is small).
//
// Tolerance: the ops are f32, so loss() = sum(out * R) carries rounding noise of about
// sqrt(#outputs) * 6e-8 * |out| ~ 1e-6 for the few hundred O(1) outputs these tests use; divided
// by the step 2h = 6e-3 that is ~2e-4 (measured worst over many seeds: 2.4e-4), hence the absolute
// floor atol = 1e-3. The truncation error of a central difference, O(h^2 f'''), is ~1e-4 relative
// for these smooth ops at h = 3e-3 (measured worst with h = 1e-2: 1.3e-3, 11x more), well below
// rtol = 3e-3. A wrong formula (a missing term, a wrong index, a dropped mask, a term off by a
// percent) exceeds this and fails. NaN fails (comparisons with NaN are false). With
// expect_signal the check also demands that some sampled gradient is 5x above the floor, so it
// cannot pass vacuously on all-zero gradients.
inline void expect_grad_matches(const char* what, std::vector<float>& x, const std::vector<float>& an,
                                const std::function<double()>& loss, TestRng& rng, int samples = 24,
                                bool expect_signal = true, double h = 3e-3, double rtol = 3e-3,
                                double atol = 1e-3) {
  ASSERT_EQ(x.size(), an.size()) << what;
  std::vector<size_t> idx;
  if (x.size() <= size_t(samples)) {
    for (size_t i = 0; i < x.size(); ++i) idx.push_back(i);
  } else {
    for (int s = 0; s < samples; ++s) idx.push_back(size_t(rng.integer(0, int(x.size()) - 1)));
  }
  double largest = 0;
  for (size_t i : idx) {
    const float saved = x[i];
    x[i] = float(saved + h);
    const float xp = x[i];
    const double lp = loss();
    x[i] = float(saved - h);
    const float xm = x[i];
    const double lm = loss();
    x[i] = saved;
    const double fd = (lp - lm) / (double(xp) - double(xm));
    const double a = an[i];
    const double tol = rtol * std::max(std::fabs(fd), std::fabs(a)) + atol;
    EXPECT_LE(std::fabs(fd - a), tol) << what << "[" << i << "]: analytic " << a << " vs finite difference " << fd;
    if (std::isfinite(fd)) largest = std::max(largest, std::fabs(fd));
  }
  loss();  // leave outputs computed at the unperturbed x
  if (expect_signal) {
    EXPECT_GT(largest, 5 * atol) << what << ": every sampled gradient is tiny; the check is vacuous";
  }
}

// |a - b| <= rtol * max(|a|, |b|) + atol for every element; NaN fails.
inline void expect_close(const char* what, const std::vector<float>& got, const std::vector<double>& want,
                         double rtol, double atol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    const double tol = rtol * std::max(std::fabs(double(got[i])), std::fabs(want[i])) + atol;
    ASSERT_LE(std::fabs(double(got[i]) - want[i]), tol) << what << "[" << i << "]: got " << got[i] << ", want "
                                                         << want[i];
  }
}

}  // namespace engine_test
