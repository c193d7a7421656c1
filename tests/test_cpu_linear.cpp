// CPU linear layers (y = act(x W^T + b), W [out, in]): forward against a direct double loop,
// row-by-row determinism, and all gradients of a two-layer GELU MLP against central finite
// differences (which exercises linear_backward_dx with and without the GELU derivative, and
// linear_backward_dw with and without a bias).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "test_cpu_helpers.h"

namespace engine_test {
namespace {

using engine::Activation;
using engine::CpuBackend;

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

struct Dims {
  int64_t N, in, out;
};

TEST(CpuLinear, ForwardMatchesDirectLoops) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  // The last shape is large enough to run on several threads.
  for (Dims dm : {Dims{1, 1, 1}, Dims{3, 5, 7}, Dims{9, 17, 4}, Dims{130, 128, 256}}) {
    const auto [N, in, out] = dm;
    auto x = rng.normals(N * in), w = rng.normals(out * in, 1.0 / std::sqrt(double(in))), b = rng.normals(out);
    for (bool with_bias : {false, true}) {
      std::vector<float> y(N * out, NAN), pre(N * out, NAN), yg(N * out, NAN);
      Tensor bias = with_bias ? view(b, {out}) : Tensor{};
      be.linear_forward(view(y, {N, out}), view(x, {N, in}), view(w, {out, in}), bias, Activation::none, Tensor{});
      be.linear_forward(view(yg, {N, out}), view(x, {N, in}), view(w, {out, in}), bias, Activation::gelu,
                        view(pre, {N, out}));
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < out; ++o) {
          double ref = with_bias ? b[o] : 0.0, mag = std::fabs(ref);
          for (int64_t i = 0; i < in; ++i) {
            ref += double(x[n * in + i]) * w[o * in + i];
            mag += std::fabs(double(x[n * in + i]) * w[o * in + i]);
          }
          // Double accumulation, one rounding to f32: half an ulp of the result, plus slack for
          // the summation order of double terms (1e-15 of their magnitude).
          const double tol = 6e-8 * std::fabs(ref) + 1e-14 * mag;
          ASSERT_NEAR(y[n * out + o], ref, tol) << N << "x" << in << "x" << out << " at " << n << "," << o;
          ASSERT_EQ(pre[n * out + o], y[n * out + o]);
          ASSERT_NEAR(yg[n * out + o], gelu_ref(pre[n * out + o]), 2e-7 * std::fabs(yg[n * out + o]) + 1e-30)
              << "gelu at " << n << "," << o;
        }
    }
    // Each row is computed the same way whatever block or thread it falls in: one row at a time
    // gives bitwise the same result.
    std::vector<float> all(N * out), row(out);
    be.linear_forward(view(all, {N, out}), view(x, {N, in}), view(w, {out, in}), view(b, {out}), Activation::none,
                      Tensor{});
    for (int64_t n = 0; n < N; ++n) {
      be.linear_forward(view(row, {1, out}), view(x, {N, in}).slice_rows(n, 1), view(w, {out, in}), view(b, {out}),
                        Activation::none, Tensor{});
      for (int64_t o = 0; o < out; ++o) ASSERT_EQ(row[o], all[n * out + o]) << "row " << n;
    }
  }
}

struct MlpCase {
  int64_t N, in, mid, out;
};

void PrintTo(const MlpCase& c, std::ostream* os) { *os << "N " << c.N << " in " << c.in << " mid " << c.mid << " out " << c.out; }

class CpuLinearMlp : public ::testing::TestWithParam<MlpCase> {};

// y = gelu(x W1^T + b1) W2^T + b2, L = sum(y * R).
TEST_P(CpuLinearMlp, GradientsMatchFiniteDifferences) {
  const auto [N, in, mid, out] = GetParam();
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  auto x = rng.normals(N * in), w1 = rng.normals(mid * in, 1.0 / std::sqrt(double(in))), b1 = rng.normals(mid, 0.5);
  auto w2 = rng.normals(out * mid, 1.0 / std::sqrt(double(mid))), b2 = rng.normals(out), R = rng.uniforms(N * out);
  std::vector<float> pre(N * mid), h(N * mid), y(N * out);
  auto forward = [&] {
    be.linear_forward(view(h, {N, mid}), view(x, {N, in}), view(w1, {mid, in}), view(b1, {mid}), Activation::gelu,
                      view(pre, {N, mid}));
    be.linear_forward(view(y, {N, out}), view(h, {N, mid}), view(w2, {out, mid}), view(b2, {out}), Activation::none,
                      Tensor{});
    return project(y, R);
  };
  forward();
  // Parameter gradients accumulate: start from random values, check the increment.
  const auto dw1_0 = rng.normals(mid * in), db1_0 = rng.normals(mid), dw2_0 = rng.normals(out * mid);
  const auto db2_0 = rng.normals(out);
  auto dw1 = dw1_0, db1 = db1_0, dw2 = dw2_0, db2 = db2_0;
  std::vector<float> dpre(N * mid, NAN), dx(N * in, NAN);
  be.linear_backward_dw(view(dw2, {out, mid}), view(db2, {out}), view(R, {N, out}), view(h, {N, mid}));
  be.linear_backward_dx(view(dpre, {N, mid}), view(R, {N, out}), view(w2, {out, mid}), false, Activation::gelu,
                        view(pre, {N, mid}));
  be.linear_backward_dw(view(dw1, {mid, in}), view(db1, {mid}), view(dpre, {N, mid}), view(x, {N, in}));
  be.linear_backward_dx(view(dx, {N, in}), view(dpre, {N, mid}), view(w1, {mid, in}), false, Activation::none,
                        Tensor{});
  // The 1-wide case has single-element gradients that can be near zero by chance: no signal check.
  const bool signal = in * mid * out > 1;
  expect_grad_matches("dx", x, dx, forward, rng, 32, signal);
  expect_grad_matches("dw1", w1, minus(dw1, dw1_0), forward, rng, 32, signal);
  expect_grad_matches("db1", b1, minus(db1, db1_0), forward, rng, 32, signal);
  expect_grad_matches("dw2", w2, minus(dw2, dw2_0), forward, rng, 32, signal);
  expect_grad_matches("db2", b2, minus(db2, db2_0), forward, rng, 32, signal);

  // The bias gradient is optional, and dw is the same without it.
  auto dw2_nobias = dw2_0;
  be.linear_backward_dw(view(dw2_nobias, {out, mid}), Tensor{}, view(R, {N, out}), view(h, {N, mid}));
  EXPECT_EQ(dw2_nobias, dw2);

  // accumulate = true adds dy W to what dx holds.
  const auto dx0 = rng.normals(N * in);
  auto dx_acc = dx0;
  be.linear_backward_dx(view(dx_acc, {N, in}), view(dpre, {N, mid}), view(w1, {mid, in}), true, Activation::none,
                        Tensor{});
  for (int64_t i = 0; i < N * in; ++i) {
    const double want = double(dx0[i]) + dx[i];
    // dx[i] itself is one rounding away from the exact product: allow an ulp of each part.
    ASSERT_NEAR(dx_acc[i], want, 1.2e-7 * (std::fabs(dx0[i]) + std::fabs(dx[i]))) << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuLinearMlp,
                         ::testing::Values(MlpCase{2, 3, 5, 2}, MlpCase{6, 8, 12, 5}, MlpCase{13, 16, 20, 7},
                                           MlpCase{4, 1, 1, 1}));

}  // namespace
}  // namespace engine_test
