// A model's gradient of one parameter tensor against finite differences, for the model tests
// (test_model, test_lora): a random unit direction u inside the tensor, and the directional
// derivative g.u against the four-point difference (8 (L(+eps) - L(-eps)) - (L(+2 eps) - L(-2 eps)))
// / 12 eps of the training loss at a fixed dropout seed. The tolerance is relative to |g| plus the
// loss's f32 rounding amplified by the difference quotient. Call after forward() and backward() of
// the same batch and seed; the parameter is restored afterwards.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "engine/model/bert.h"

namespace engine::test {

// Returns |g| of the tensor (0 when it has no gradient), so callers can check one was computed.
inline double expect_directional_gradient(BertModel& model, Backend& backend, const std::string& name,
                                          std::mt19937_64& rng, uint64_t dropout_seed, double base_loss) {
  std::vector<float> w = model.params().get_host(backend, name);
  std::vector<float> g = model.params().grad_host(backend, name);
  std::vector<double> u(w.size());
  double norm = 0, g_norm = 0, directional = 0;
  for (double& x : u) {
    x = double(int64_t(rng() % 20001) - 10000);
    norm += x * x;
  }
  for (size_t i = 0; i < u.size(); ++i) {
    u[i] /= std::sqrt(norm);
    directional += double(g[i]) * u[i];
    g_norm += double(g[i]) * g[i];
  }
  g_norm = std::sqrt(g_norm);
  const double eps = 1e-2;
  auto shifted = [&](double sign) {
    std::vector<float> v(w.size());
    for (size_t i = 0; i < w.size(); ++i) v[i] = float(double(w[i]) + sign * eps * u[i]);
    model.params().set_host(backend, name, v);
    model.forward(Pass::train, dropout_seed);
    return double(model.loss());
  };
  const double fd = (8 * (shifted(+1) - shifted(-1)) - (shifted(+2) - shifted(-2))) / (12 * eps);
  model.params().set_host(backend, name, w);
  EXPECT_TRUE(std::isfinite(directional) && std::isfinite(fd)) << name;
  const double ulp = std::fabs(base_loss) * 1.2e-7;
  EXPECT_LE(std::fabs(fd - directional), 2e-3 * g_norm + 16 * ulp / (2 * eps))
      << name << ": finite difference " << fd << ", gradient " << directional << " (|g| " << g_norm << ")";
  return g_norm;
}

}  // namespace engine::test
