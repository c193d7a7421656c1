// CPU reference ops: memory and casts, dropout, residual+dropout+layernorm, embeddings, pooler
// pieces, losses, global norm and AdamW. Backward passes against central finite differences of a
// random projection of the outputs; forward passes against direct computations written here.
// Linear layers and attention have their own files (test_cpu_linear.cpp, test_cpu_attention.cpp).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>

#include "engine/bf16.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/philox.h"
#include "test_cpu_helpers.h"

namespace engine_test {
namespace {

using engine::CpuBackend;
using engine::DropoutRng;

DropoutRng random_dropout_rng(TestRng& rng) { return DropoutRng{rng.gen(), uint32_t(rng.gen())}; }

// ---------------------------------------------------------------------------------------------
// memory, fill, cast

TEST(CpuMemory, AllocationsAreAlignedAndUsable) {
  CpuBackend be;
  for (size_t bytes : {size_t(0), size_t(1), size_t(255), size_t(256), size_t(1000), size_t(1) << 20}) {
    void* p = be.allocate(bytes);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u) << bytes << " bytes";
    std::memset(p, 0xAB, bytes);
    be.release(p);
  }
  EXPECT_EQ(be.device(), Device::cpu);
  EXPECT_EQ(be.name(), "cpu-ref");
  EXPECT_TRUE(be.supports(DType::f32));
  EXPECT_FALSE(be.supports(DType::bf16));
  EXPECT_FALSE(be.supports(DType::f16));
}

TEST(CpuMemory, CopiesAndFill) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  auto src = rng.normals(37);
  std::vector<float> a(37, -1.f), b(37, -2.f), back(37);
  be.copy_from_host(view(a, {37}), src.data());
  EXPECT_EQ(a, src);
  be.copy(view(b, {37}), view(a, {37}));
  EXPECT_EQ(b, src);
  be.copy_to_host(back.data(), view(b, {37}));
  EXPECT_EQ(back, src);

  be.fill(view(a, {37}), 2.5f);
  for (float x : a) EXPECT_EQ(x, 2.5f);
  std::vector<int32_t> ints(5, 0);
  be.fill(view(ints, {5}), 7.f);
  for (int32_t x : ints) EXPECT_EQ(x, 7);
  std::vector<uint16_t> halves(9, 0);
  be.fill(Tensor(halves.data(), DType::bf16, Device::cpu, {9}), -3.f);
  for (uint16_t h : halves) EXPECT_EQ(engine::bf16_to_float(h), -3.f);
  be.fill(Tensor(halves.data(), DType::f16, Device::cpu, {9}), 0.5f);
  for (uint16_t h : halves) EXPECT_EQ(engine::fp16_to_float(h), 0.5f);
}

// f32 -> 16 bit -> f32 round trips: round-to-nearest keeps the error within half an ulp, that is
// 2^-8 of |x| for bf16 (8 significant bits) and 2^-11 for f16 (11 bits, normal range).
TEST(CpuMemory, CastRoundTrips) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t n = 1000;
  auto x = rng.normals(n, 3.0);
  x[0] = 0.f;
  x[1] = 1.f;
  x[2] = -65504.f;  // f16 max
  for (auto [dt, rel] : {std::pair{DType::bf16, std::ldexp(1.0, -8)}, {DType::f16, std::ldexp(1.0, -11)}}) {
    std::vector<uint16_t> half(n);
    std::vector<float> back(n, NAN);
    Tensor h(half.data(), dt, Device::cpu, {n});
    be.cast(h, view(x, {n}));
    be.cast(view(back, {n}), h);
    for (int64_t i = 0; i < n; ++i) {
      // f16 values below 2^-14 are subnormal: absolute spacing 2^-24, so allow half of that.
      double floor = dt == DType::f16 ? std::ldexp(1.0, -25) : 0.0;
      ASSERT_LE(std::fabs(double(back[i]) - x[i]), rel * std::fabs(x[i]) + floor)
          << engine::dtype_name(dt) << " element " << i << " = " << x[i] << " came back as " << back[i];
    }
    EXPECT_EQ(back[1], 1.f);
    // bf16 -> f16 goes through f32 exactly like the two separate casts.
    std::vector<uint16_t> other(n);
    DType ot = dt == DType::bf16 ? DType::f16 : DType::bf16;
    be.cast(Tensor(other.data(), ot, Device::cpu, {n}), h);
    for (int64_t i = 0; i < n; ++i) {
      uint16_t want = ot == DType::f16 ? engine::float_to_fp16(back[i]) : engine::float_to_bf16(back[i]);
      ASSERT_EQ(other[i], want) << i;
    }
  }
  // Same-dtype cast is a copy.
  std::vector<float> copy(n);
  be.cast(view(copy, {n}), view(x, {n}));
  EXPECT_EQ(copy, x);
}

// ---------------------------------------------------------------------------------------------
// dropout

TEST(CpuDropout, KeepRateScaleAndBackwardMask) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t T = 500, C = 400, n = T * C;
  auto x = rng.uniforms(n, 0.5, 1.5);  // never zero, so a zero output means dropped
  auto dy = rng.normals(n);
  for (float p : {0.1f, 0.5f}) {
    DropoutRng drng = random_dropout_rng(rng);
    std::vector<float> y(n), dx(n);
    be.dropout_forward(view(y, {T, C}), view(x, {T, C}), p, drng);
    be.dropout_backward(view(dx, {T, C}), view(dy, {T, C}), p, drng);
    const float scale = float(1.0 / (1.0 - p));
    int64_t kept = 0;
    for (int64_t i = 0; i < n; ++i) {
      bool keep = y[i] != 0.f;
      kept += keep;
      ASSERT_EQ(y[i], keep ? x[i] * scale : 0.f) << i;
      ASSERT_EQ(dx[i], keep ? dy[i] * scale : 0.f) << i;
      // The mask is the documented one: element t*C + c draws dropout_keep at that index.
      ASSERT_EQ(keep, engine::dropout_keep(drng, uint64_t(i), engine::dropout_threshold(p))) << i;
    }
    // Binomial(n, 1-p): 6 standard deviations.
    double expect = double(n) * (1 - p), sd = std::sqrt(double(n) * p * (1 - p));
    EXPECT_NEAR(double(kept), expect, 6 * sd) << "p = " << p;
    // In place (y aliases x) gives the same result; another stream gives another mask.
    std::vector<float> inplace = x;
    be.dropout_forward(view(inplace, {T, C}), view(inplace, {T, C}), p, drng);
    EXPECT_EQ(inplace, y);
    std::vector<float> other(n);
    be.dropout_forward(view(other, {T, C}), view(x, {T, C}), p, DropoutRng{drng.seed, drng.stream + 1});
    EXPECT_NE(other, y);
  }
  std::vector<float> same(n);
  be.dropout_forward(view(same, {T, C}), view(x, {T, C}), 0.f, random_dropout_rng(rng));
  EXPECT_EQ(same, x);
}

// ---------------------------------------------------------------------------------------------
// residual + dropout + layernorm

struct LnCase {
  int64_t T, H;
  float p;
};

void PrintTo(const LnCase& c, std::ostream* os) { *os << "T " << c.T << " H " << c.H << " p " << c.p; }

class CpuAddDropoutLayernorm : public ::testing::TestWithParam<LnCase> {};

TEST_P(CpuAddDropoutLayernorm, GradientsMatchFiniteDifferences) {
  const auto [T, H, p] = GetParam();
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const DropoutRng drng = random_dropout_rng(rng);
  auto branch = rng.normals(T * H), residual = rng.normals(T * H), R = rng.uniforms(T * H);
  auto gamma = rng.uniforms(H, 0.5, 1.5), beta = rng.normals(H);
  std::vector<float> y(T * H), s(T * H), mean(T), rstd(T);
  auto forward = [&] {
    be.add_dropout_layernorm_forward(view(y, {T, H}), view(s, {T, H}), view(mean, {T}), view(rstd, {T}),
                                     view(branch, {T, H}), view(residual, {T, H}), view(gamma, {H}),
                                     view(beta, {H}), 1e-5f, p, drng);
    return project(y, R);
  };
  forward();
  // dgamma, dbeta accumulate: start them at random values and check the increment.
  const auto dgamma0 = rng.normals(H), dbeta0 = rng.normals(H);
  auto dgamma = dgamma0, dbeta = dbeta0;
  std::vector<float> dbranch(T * H, NAN), dresidual(T * H, NAN);
  be.add_dropout_layernorm_backward(view(dbranch, {T, H}), view(dresidual, {T, H}), view(dgamma, {H}),
                                    view(dbeta, {H}), view(R, {T, H}), view(s, {T, H}), view(mean, {T}),
                                    view(rstd, {T}), view(gamma, {H}), p, drng);
  expect_grad_matches("d_branch", branch, dbranch, forward, rng);
  expect_grad_matches("d_residual", residual, dresidual, forward, rng);
  expect_grad_matches("dgamma", gamma, minus(dgamma, dgamma0), forward, rng);
  expect_grad_matches("dbeta", beta, minus(dbeta, dbeta0), forward, rng);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuAddDropoutLayernorm,
                         ::testing::Values(LnCase{1, 5, 0.f}, LnCase{6, 16, 0.f}, LnCase{11, 37, 0.f},
                                           LnCase{1, 16, 0.3f}, LnCase{6, 37, 0.25f}, LnCase{11, 5, 0.1f}));

TEST(CpuAddDropoutLayernorm, ForwardMatchesDefinition) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t T = 9, H = 48;
  const float p = 0.2f, eps = 1e-5f;
  const DropoutRng drng = random_dropout_rng(rng);
  auto branch = rng.normals(T * H), residual = rng.normals(T * H, 4.0);
  for (float& r : residual) r += 100.f;  // a large mean: a one-pass variance would cancel badly
  std::vector<float> gamma(H, 1.f), beta(H, 0.f), y(T * H), s(T * H), mean(T), rstd(T);
  be.add_dropout_layernorm_forward(view(y, {T, H}), view(s, {T, H}), view(mean, {T}), view(rstd, {T}),
                                   view(branch, {T, H}), view(residual, {T, H}), view(gamma, {H}), view(beta, {H}),
                                   eps, p, drng);
  const uint32_t threshold = engine::dropout_threshold(p);
  for (int64_t t = 0; t < T; ++t) {
    double sum = 0, sq = 0;
    for (int64_t c = 0; c < H; ++c) {
      const int64_t i = t * H + c;
      double want = residual[i] + (engine::dropout_keep(drng, uint64_t(i), threshold) ? branch[i] / (1.0 - p) : 0.0);
      ASSERT_NEAR(s[i], want, 1e-6 * std::fabs(want)) << "s at " << t << "," << c;
      sum += s[i];
    }
    const double mu = sum / H;
    for (int64_t c = 0; c < H; ++c) sq += (s[t * H + c] - mu) * (s[t * H + c] - mu);
    const double var = sq / H;  // biased, as torch.nn.LayerNorm
    EXPECT_NEAR(mean[t], mu, 1e-6 * std::fabs(mu));
    EXPECT_NEAR(rstd[t], 1.0 / std::sqrt(var + eps), 1e-6 / std::sqrt(var + eps));
    // Normalised rows: zero mean and variance var / (var + eps).
    double ymean = 0, yvar = 0;
    for (int64_t c = 0; c < H; ++c) ymean += y[t * H + c];
    ymean /= H;
    for (int64_t c = 0; c < H; ++c) yvar += (y[t * H + c] - ymean) * (y[t * H + c] - ymean);
    yvar /= H;
    EXPECT_NEAR(ymean, 0.0, 1e-5) << "row " << t;
    EXPECT_NEAR(yvar, var / (var + eps), 1e-5) << "row " << t;
  }
}

// ---------------------------------------------------------------------------------------------
// embeddings

TEST(CpuEmbeddings, ForwardAndGradients) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  for (auto [T, H] : {std::pair<int64_t, int64_t>{1, 8}, {13, 24}}) {
    const int64_t V = 7, P = 16, Y = 2;  // few rows: ids repeat, so gradient rows accumulate
    auto word = rng.normals(V * H), pos = rng.normals(P * H), type = rng.normals(Y * H);
    auto gamma = rng.uniforms(H, 0.5, 1.5), beta = rng.normals(H), R = rng.uniforms(T * H);
    std::vector<int32_t> ids(T), pos_ids(T), type_ids(T);
    for (int64_t t = 0; t < T; ++t) {
      ids[t] = rng.integer(0, V - 1);
      pos_ids[t] = int32_t(t % P);
      type_ids[t] = rng.integer(0, Y - 1);
    }
    std::vector<float> y(T * H), s(T * H), mean(T), rstd(T);
    auto forward = [&] {
      be.embeddings_forward(view(y, {T, H}), view(s, {T, H}), view(mean, {T}), view(rstd, {T}), view(ids, {T}),
                            view(pos_ids, {T}), view(type_ids, {T}), view(word, {V, H}), view(pos, {P, H}),
                            view(type, {Y, H}), view(gamma, {H}), view(beta, {H}), 1e-12f);
      return project(y, R);
    };
    forward();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < H; ++c)
        ASSERT_EQ(s[t * H + c], word[ids[t] * H + c] + pos[pos_ids[t] * H + c] + type[type_ids[t] * H + c]);

    const auto dword0 = rng.normals(V * H), dpos0 = rng.normals(P * H), dtype0 = rng.normals(Y * H);
    const auto dgamma0 = rng.normals(H), dbeta0 = rng.normals(H);
    auto dword = dword0, dpos = dpos0, dtype = dtype0, dgamma = dgamma0, dbeta = dbeta0;
    auto backward = [&] {
      be.embeddings_backward(view(dword, {V, H}), view(dpos, {P, H}), view(dtype, {Y, H}), view(dgamma, {H}),
                             view(dbeta, {H}), view(R, {T, H}), view(s, {T, H}), view(mean, {T}), view(rstd, {T}),
                             view(gamma, {H}), view(ids, {T}), view(pos_ids, {T}), view(type_ids, {T}));
    };
    backward();
    // Every table element (most rows are unused when T is small, their gradient must stay 0).
    constexpr int kEvery = 1 << 20;
    expect_grad_matches("dword", word, minus(dword, dword0), forward, rng, kEvery);
    expect_grad_matches("dpos", pos, minus(dpos, dpos0), forward, rng, kEvery);
    expect_grad_matches("dtype", type, minus(dtype, dtype0), forward, rng, kEvery);
    expect_grad_matches("dgamma", gamma, minus(dgamma, dgamma0), forward, rng);
    expect_grad_matches("dbeta", beta, minus(dbeta, dbeta0), forward, rng);

    // Deterministic: the same inputs give bitwise the same gradients again.
    const auto dword1 = dword, dpos1 = dpos, dtype1 = dtype, dgamma1 = dgamma, dbeta1 = dbeta;
    dword = dword0, dpos = dpos0, dtype = dtype0, dgamma = dgamma0, dbeta = dbeta0;
    backward();
    EXPECT_EQ(dword, dword1);
    EXPECT_EQ(dpos, dpos1);
    EXPECT_EQ(dtype, dtype1);
    EXPECT_EQ(dgamma, dgamma1);
    EXPECT_EQ(dbeta, dbeta1);
  }
}

// ---------------------------------------------------------------------------------------------
// pooler pieces

TEST(CpuPooler, GatherScatterTanh) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t T = 12, C = 10, B = 3;
  auto x = rng.normals(T * C);
  std::vector<int32_t> rows = {0, 5, 11};
  std::vector<float> out(B * C);
  be.gather_rows(view(out, {B, C}), view(x, {T, C}), view(rows, {B}));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c) ASSERT_EQ(out[b * C + c], x[rows[b] * C + c]);

  auto dx0 = rng.normals(T * C), dout = rng.normals(B * C);
  auto dx = dx0;
  be.scatter_add_rows(view(dx, {T, C}), view(dout, {B, C}), view(rows, {B}));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) {
      const auto hit = std::find(rows.begin(), rows.end(), int32_t(t));
      const float want = hit == rows.end() ? dx0[t * C + c] : dx0[t * C + c] + dout[(hit - rows.begin()) * C + c];
      ASSERT_EQ(dx[t * C + c], want) << t << "," << c;
    }

  auto xt = rng.normals(B * C, 1.5), R = rng.uniforms(B * C);
  std::vector<float> y(B * C), dxt(B * C, NAN);
  auto forward = [&] {
    be.tanh_forward(view(y, {B, C}), view(xt, {B, C}));
    return project(y, R);
  };
  forward();
  for (int64_t i = 0; i < B * C; ++i) ASSERT_NEAR(y[i], std::tanh(double(xt[i])), 1e-7);
  be.tanh_backward(view(dxt, {B, C}), view(R, {B, C}), view(y, {B, C}));
  expect_grad_matches("tanh dx", xt, dxt, forward, rng);
}

// ---------------------------------------------------------------------------------------------
// losses

TEST(CpuLosses, CrossEntropyValuesGradientsAndIgnoredRows) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t N = 9, C = 5;
  auto logits = rng.normals(N * C, 2.0);
  std::vector<int32_t> labels(N);
  for (int64_t n = 0; n < N; ++n) labels[n] = rng.integer(0, C - 1);
  labels[2] = -100;  // Hugging Face's ignore index
  labels[7] = -1;
  const float scale = 1.f / 7;  // 1 / counted rows
  std::vector<float> losses(N, NAN), dlogits(N * C, NAN);
  auto forward = [&] {
    be.cross_entropy(view(losses, {N}), Tensor{}, view(logits, {N, C}), view(labels, {N}), scale);
    return scale * std::accumulate(losses.begin(), losses.end(), 0.0);
  };
  forward();
  for (int64_t n = 0; n < N; ++n) {
    if (labels[n] < 0) {
      EXPECT_EQ(losses[n], 0.f) << n;
      continue;
    }
    double z = 0;
    for (int64_t c = 0; c < C; ++c) z += std::exp(double(logits[n * C + c]));
    EXPECT_NEAR(losses[n], -std::log(std::exp(double(logits[n * C + labels[n]])) / z), 1e-6) << n;
  }
  be.cross_entropy(view(losses, {N}), view(dlogits, {N, C}), view(logits, {N, C}), view(labels, {N}), scale);
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_EQ(dlogits[2 * C + c], 0.f);
    EXPECT_EQ(dlogits[7 * C + c], 0.f);
  }
  // Gradients here are ~scale = 0.14 and the loss sums only N rows (noise ~1e-8): a lower floor.
  expect_grad_matches("dlogits", logits, dlogits, forward, rng, 64, true, 3e-3, 3e-3, 1e-4);

  // dlogits may overwrite logits in place.
  auto inplace = logits;
  std::vector<float> losses2(N);
  be.cross_entropy(view(losses2, {N}), view(inplace, {N, C}), view(inplace, {N, C}), view(labels, {N}), scale);
  EXPECT_EQ(inplace, dlogits);
  EXPECT_EQ(losses2, losses);

  labels[4] = int32_t(C);
  EXPECT_THROW(be.cross_entropy(view(losses, {N}), view(dlogits, {N, C}), view(logits, {N, C}), view(labels, {N}),
                                scale),
               engine::Error);
}

TEST(CpuLosses, MeanSquaredError) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t N = 8;
  auto pred = rng.normals(N), target = rng.uniforms(N, 0.0, 5.0);
  const float scale = 1.f / N;
  std::vector<float> losses(N), dpred(N, NAN);
  auto forward = [&] {
    be.mse(view(losses, {N}), Tensor{}, view(pred, {N, 1}), view(target, {N}), scale);
    return scale * std::accumulate(losses.begin(), losses.end(), 0.0);
  };
  forward();
  for (int64_t n = 0; n < N; ++n) {
    double d = double(pred[n]) - target[n];
    EXPECT_NEAR(losses[n], d * d, 1e-6 * d * d);
  }
  be.mse(view(losses, {N}), view(dpred, {N, 1}), view(pred, {N, 1}), view(target, {N}), scale);
  expect_grad_matches("dpred", pred, dpred, forward, rng);
}

// ---------------------------------------------------------------------------------------------
// global norm and AdamW

TEST(CpuOptimizer, GlobalNormIsTheEuclideanNorm) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t n = 10007;
  auto g = rng.normals(n, 0.01);
  std::vector<float> norm(1, NAN);
  be.global_norm(view(norm, {1}), view(g, {n}));
  long double sum = 0;
  for (float x : g) sum += (long double)x * x;
  EXPECT_NEAR(norm[0], double(std::sqrt(sum)), 1e-6 * double(std::sqrt(sum)));
}

// torch.optim.AdamW's update for one element, written the way torch writes it. State is kept in
// f32 between steps like torch's (and the engine's) buffers; *_scale bounds the magnitudes of all
// the terms each value was summed from over the steps so far, the scale its accumulated rounding
// error is relative to (m can cancel to far below the terms it was made of).
struct ScalarAdamW {
  float p, m = 0, v = 0;
  double p_scale = 0, m_scale = 0, v_scale = 0;
  void step(double g, const engine::AdamWArgs& a, bool decay) {
    double pd = p;
    if (decay) pd *= 1 - double(a.lr) * a.weight_decay;
    m_scale = m_scale * a.beta1 + std::fabs(g * (1 - double(a.beta1)));
    double md = m + (g - m) * (1 - double(a.beta1));  // exp_avg.lerp_(grad, 1 - beta1)
    v_scale = v_scale * a.beta2 + g * g * (1 - double(a.beta2));
    double vd = double(v) * a.beta2 + (1 - double(a.beta2)) * g * g;
    double bc1 = 1 - std::pow(double(a.beta1), double(a.step)), bc2 = 1 - std::pow(double(a.beta2), double(a.step));
    double denom = std::sqrt(vd) / std::sqrt(bc2) + a.eps;
    double update = double(a.lr) / bc1 * md / denom;
    p_scale = std::max(p_scale, std::fabs(pd)) + std::fabs(update);
    p = float(pd - update);
    m = float(md);
    v = float(vd);
  }
};

TEST(CpuOptimizer, AdamWMatchesTorchStepDecayEndAndClipping) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t n = 50, decay_end = 30;
  auto params = rng.normals(n);
  std::vector<ScalarAdamW> ref;
  for (float p : params) ref.push_back(ScalarAdamW{p});  // m = v = 0
  std::vector<float> m(n, 0.f), v(n, 0.f), norm(1), working_f32(n);
  std::vector<uint16_t> working_bf16(n);
  engine::AdamWArgs args;
  args.lr = 1e-2f;
  args.weight_decay = 0.1f;
  args.decay_end = decay_end;
  args.max_grad_norm = 1.0f;
  for (int step = 1; step <= 4; ++step) {
    args.step = step;
    // Steps 1-2: large gradients, clipped; steps 3-4: small ones, norm < max_grad_norm.
    auto g = rng.normals(n, step <= 2 ? 1.0 : 0.01);
    g[n - 1] = 0.f;  // no decay, zero gradient: only its moments' history moves it
    be.global_norm(view(norm, {1}), view(g, {n}));
    double direct = 0;
    for (float x : g) direct += double(x) * x;
    direct = std::sqrt(direct);
    EXPECT_NEAR(norm[0], direct, 1e-6 * direct);
    // torch.nn.utils.clip_grad_norm_ in f32: coefficient max_norm / (norm + 1e-6) clamped to 1,
    // gradients multiplied in place (rounded to f32).
    const float clip = std::min(1.0f, args.max_grad_norm / (float(direct) + 1e-6f));
    if (step <= 2) {
      EXPECT_LT(clip, 0.5f) << "test setup: step " << step << " should clip";
    } else {
      EXPECT_EQ(clip, 1.0f) << "test setup: step " << step << " should not clip";
    }
    Tensor working = step % 2 ? view(working_f32, {n}) : Tensor(working_bf16.data(), DType::bf16, Device::cpu, {n});
    be.adamw(view(params, {n}), view(g, {n}), view(m, {n}), view(v, {n}), working, view(norm, {1}), args);
    for (int64_t i = 0; i < n; ++i) {
      ref[i].step(float(g[i] * clip), args, i < decay_end);
      // A few f32 ulps (6e-8 each) of the magnitudes summed: only the rounding order differs.
      ASSERT_NEAR(params[i], ref[i].p, 3e-7 * ref[i].p_scale) << "step " << step << " p" << i;
      ASSERT_NEAR(m[i], ref[i].m, 3e-7 * ref[i].m_scale) << "step " << step << " m" << i;
      ASSERT_NEAR(v[i], ref[i].v, 3e-7 * ref[i].v_scale) << "step " << step << " v" << i;
      if (step % 2) {
        ASSERT_EQ(working_f32[i], params[i]);
      } else {
        ASSERT_EQ(working_bf16[i], engine::float_to_bf16(params[i]));
      }
    }
  }
}

TEST(CpuOptimizer, AdamWDecayStopsAtDecayEnd) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  const int64_t n = 20, decay_end = 12;
  auto params = rng.normals(n);
  const auto before = params;
  std::vector<float> g(n, 0.f), m(n, 0.f), v(n, 0.f), norm(1, 0.f);
  engine::AdamWArgs args;
  args.lr = 0.1f;
  args.weight_decay = 0.5f;
  args.decay_end = decay_end;
  // Zero gradients and moments: the Adam part is 0 / (0 + eps) = 0, only decay moves params.
  be.adamw(view(params, {n}), view(g, {n}), view(m, {n}), view(v, {n}), Tensor{}, Tensor{}, args);
  for (int64_t i = 0; i < n; ++i) {
    if (i < decay_end) {
      EXPECT_NEAR(params[i], before[i] * 0.95, 1e-7 * std::fabs(before[i])) << i;
    } else {
      EXPECT_EQ(params[i], before[i]) << i;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// bad input

TEST(CpuErrors, BadShapesAndDtypesThrow) {
  CpuBackend be;
  // Plenty of backing memory; prefix() views any shape that fits.
  std::vector<float> a(64), b(64), c(64), d(64), e(64), f(64);
  std::vector<int32_t> ids(8, 0), cu = {0, 2, 4};
  std::vector<uint16_t> h(64);
  const Tensor a46 = prefix(a, {4, 6}), b46 = prefix(b, {4, 6}), c46 = prefix(c, {4, 6}), d46 = prefix(d, {4, 6});
  const Tensor e4 = prefix(e, {4}), f4 = prefix(f, {4});
  const Tensor bf = Tensor(h.data(), DType::bf16, Device::cpu, {4, 6});
  const DropoutRng rng{1, 2};
  using engine::Activation;
  using engine::Error;

  // dropout: size mismatch, bf16 activation, p out of range
  EXPECT_THROW(be.dropout_forward(e4, a46, 0.1f, rng), Error);
  EXPECT_THROW(be.dropout_forward(bf, bf, 0.1f, rng), Error);
  EXPECT_THROW(be.dropout_forward(b46, a46, 1.0f, rng), Error);
  EXPECT_THROW(be.dropout_forward(b46, a46, -0.1f, rng), Error);
  // linear: inner dimensions disagree, wrong output shape, bf16 input, gelu without pre,
  // accumulate together with gelu
  EXPECT_THROW(be.linear_forward(b46, a46, prefix(c, {6, 4}), Tensor{}, Activation::none, Tensor{}), Error);
  EXPECT_THROW(be.linear_forward(b46, a46, prefix(c, {4, 6}), Tensor{}, Activation::none, Tensor{}), Error);
  EXPECT_THROW(be.linear_forward(b46, bf, prefix(c, {6, 6}), Tensor{}, Activation::none, Tensor{}), Error);
  EXPECT_THROW(be.linear_forward(b46, a46, prefix(c, {6, 6}), prefix(d, {5}), Activation::none, Tensor{}), Error);
  EXPECT_THROW(be.linear_forward(b46, a46, prefix(c, {6, 6}), Tensor{}, Activation::gelu, Tensor{}), Error);
  EXPECT_THROW(be.linear_backward_dx(b46, a46, prefix(c, {6, 6}), true, Activation::gelu, d46), Error);
  EXPECT_THROW(be.linear_backward_dw(prefix(c, {6, 5}), Tensor{}, a46, b46), Error);
  // layernorm: gamma of the wrong width, statistics of the wrong length
  EXPECT_THROW(be.add_dropout_layernorm_forward(a46, b46, e4, f4, c46, d46, prefix(e, {5}), prefix(f, {6}), 1e-5f,
                                                0.f, rng),
               Error);
  EXPECT_THROW(be.add_dropout_layernorm_forward(a46, b46, prefix(e, {3}), f4, c46, d46, prefix(e, {6}),
                                                prefix(f, {6}), 1e-5f, 0.f, rng),
               Error);
  // embeddings: an id outside the table
  std::vector<float> table(3 * 6), gamma(6, 1.f), beta(6, 0.f);
  std::vector<int32_t> bad_ids = {0, 1, 3, 2};
  EXPECT_THROW(be.embeddings_forward(a46, b46, e4, f4, view(bad_ids, {4}), prefix(ids, {4}), prefix(ids, {4}),
                                     view(table, {3, 6}), view(table, {3, 6}), view(table, {3, 6}), view(gamma, {6}),
                                     view(beta, {6}), 1e-12f),
               Error);
  // attention: cu_seqlens that do not add up to T, heads not dividing H, max_seqlen too small
  std::vector<float> qkv(4 * 6), out(4 * 2), lse(4 * 3);
  const engine::BatchShape batch{4, 2, 2};
  std::vector<int32_t> bad_cu = {0, 2, 3};
  EXPECT_THROW(be.attention_forward(view(out, {4, 2}), prefix(lse, {4, 2}), view(qkv, {4, 6}), view(bad_cu, {3}),
                                    batch, 2, 1.f, 0.f, rng),
               Error);
  EXPECT_THROW(be.attention_forward(view(out, {4, 2}), view(lse, {4, 3}), view(qkv, {4, 6}), view(cu, {3}), batch, 3,
                                    1.f, 0.f, rng),
               Error);
  const engine::BatchShape short_batch{4, 2, 1};
  EXPECT_THROW(be.attention_forward(view(out, {4, 2}), prefix(lse, {4, 2}), view(qkv, {4, 6}), view(cu, {3}),
                                    short_batch, 2, 1.f, 0.f, rng),
               Error);
  // pooler: a row outside x
  std::vector<int32_t> bad_rows = {0, 4};
  EXPECT_THROW(be.gather_rows(prefix(e, {2, 6}), a46, view(bad_rows, {2})), Error);
  // losses: labels of the wrong dtype
  EXPECT_THROW(be.cross_entropy(e4, a46, b46, f4, 1.f), Error);
  // optimizer: bad decay_end, mismatched sizes, a tensor on the GPU, bad step
  engine::AdamWArgs args;
  args.decay_end = 25;
  EXPECT_THROW(be.adamw(prefix(a, {24}), prefix(b, {24}), prefix(c, {24}), prefix(d, {24}), Tensor{}, Tensor{}, args),
               Error);
  args.decay_end = 0;
  EXPECT_THROW(be.adamw(prefix(a, {24}), e4, prefix(c, {24}), prefix(d, {24}), Tensor{}, Tensor{}, args), Error);
  args.step = 0;
  EXPECT_THROW(be.adamw(prefix(a, {24}), prefix(b, {24}), prefix(c, {24}), prefix(d, {24}), Tensor{}, Tensor{}, args),
               Error);
  Tensor on_gpu = prefix(b, {24});
  on_gpu.device = Device::cuda;
  EXPECT_THROW(be.global_norm(prefix(e, {1}), on_gpu), Error);
  // casts: i32 is not a float type; copy does not change dtypes
  EXPECT_THROW(be.cast(prefix(a, {8}), view(ids, {8})), Error);
  EXPECT_THROW(be.copy(bf, a46), Error);
}

}  // namespace
}  // namespace engine_test
