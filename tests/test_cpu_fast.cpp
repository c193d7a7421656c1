// The fast CPU backend (engine/cpu_fast/, "cpu") against the plain-loop reference (engine/cpu/,
// "cpu-ref"), as the CUDA backend is tested: every op it overrides on fresh random inputs of awkward
// sizes (odd hidden sizes, odd token counts, sequences of length 1 and longer than 128, mixed
// lengths), outputs poisoned with NaN before each run; the whole training step in fp32; bitwise
// repeatability of ops and steps at a fixed thread count; and the reductions that promise it,
// bitwise the same at 1 and 2 threads.
//
// Tolerances: the fast backend computes in f32 with f32 accumulation (the reference in double), so
// errors are measured relative to the largest value of the reference tensor ("scaled error") and
// allowed a few f32 ulps times the square root of the reduction length; exact GELU goes through an
// erfc approximation (vec_math.h; measured over [-6, 6]: GELU within 2.1e-6 relative, its
// derivative within 2.1e-7 absolute). Dropout masks must match exactly.
#include "test_cpu_helpers.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "engine/cpu_fast/fast_cpu_backend.h"
#include "engine/cpu_fast/threads.h"
#include "engine/model/bert.h"
#include "engine/train/optimizer.h"

namespace engine_test {
namespace {

using engine::Activation;
using engine::AdamWArgs;
using engine::BatchShape;
using engine::CpuBackend;
using engine::DropoutRng;
using engine::FastCpuBackend;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::fabs(double(x)));
  return m;
}

// max |a - ref| / scale (scale: max |ref| unless given; max |a - ref| when it is 0); any non-finite
// value of a: inf.
double scaled_error(const std::vector<float>& a, const std::vector<float>& ref, double scale = -1) {
  EXPECT_EQ(a.size(), ref.size());
  double err = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    err = std::max(err, std::fabs(double(a[i]) - ref[i]));
  }
  if (scale < 0) scale = max_abs(ref);
  return scale > 0 ? err / scale : err;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The size of the terms of layernorm's input gradient ds = rstd (g - mean(g) - xhat mean(g xhat)),
// g = dy gamma: for a few columns (H = 3) ds can be a small difference of them, so its error is
// measured against them.
double ds_term_scale(const std::vector<float>& dy, const std::vector<float>& gamma, const std::vector<float>& rstd) {
  return max_abs(dy) * max_abs(gamma) * max_abs(rstd);
}

std::vector<float> poisoned(size_t n) { return std::vector<float>(n, kNaN); }

// Runs every test at two threads (the CI machine's count), whatever the machine has.
class FastCpu : public ::testing::Test {
 protected:
  void SetUp() override { engine::set_cpu_threads(2); }
  void TearDown() override { engine::set_cpu_threads(0); }
  CpuBackend ref;
  FastCpuBackend fast;
  TestRng rng;
};

TEST_F(FastCpu, NamesAndFactory) {
  EXPECT_EQ(fast.name(), "cpu");
  EXPECT_EQ(ref.name(), "cpu-ref");
  EXPECT_EQ(engine::make_backend("cpu")->name(), "cpu");
  EXPECT_EQ(engine::make_backend("cpu-ref")->name(), "cpu-ref");
  EXPECT_EQ(engine::cpu_threads(), 2);
  EXPECT_THROW(engine::set_cpu_threads(-1), engine::Error);
}

// ---- linear layers ----

struct LinearCase {
  int64_t N, in, out;
};
const LinearCase kLinearCases[] = {{1, 1, 1}, {7, 33, 65}, {129, 384, 97}, {300, 61, 1536}};

TEST_F(FastCpu, LinearForwardMatchesReference) {
  TRACE_SEED(rng);
  for (const LinearCase& lc : kLinearCases)
    for (bool bias : {false, true})
      for (Activation act : {Activation::none, Activation::gelu}) {
        SCOPED_TRACE(::testing::Message() << "N " << lc.N << " in " << lc.in << " out " << lc.out << " bias " << bias
                                          << " gelu " << (act == Activation::gelu));
        std::vector<float> x = rng.normals(size_t(lc.N * lc.in)), w = rng.normals(size_t(lc.out * lc.in), 0.2),
                           b = rng.normals(size_t(lc.out));
        std::vector<float> y[2], pre[2];
        int i = 0;
        for (engine::Backend* be : {static_cast<engine::Backend*>(&ref), static_cast<engine::Backend*>(&fast)}) {
          y[i] = poisoned(size_t(lc.N * lc.out));
          pre[i] = poisoned(size_t(lc.N * lc.out));
          be->linear_forward(view(y[i], {lc.N, lc.out}), view(x, {lc.N, lc.in}), view(w, {lc.out, lc.in}),
                             bias ? view(b, {lc.out}) : Tensor{}, act,
                             act == Activation::gelu ? view(pre[i], {lc.N, lc.out}) : Tensor{});
          ++i;
        }
        EXPECT_LT(scaled_error(y[1], y[0]), 2e-6 * std::sqrt(double(lc.in)) + 1e-6) << "y";
        if (act == Activation::gelu) EXPECT_LT(scaled_error(pre[1], pre[0]), 2e-6 * std::sqrt(double(lc.in))) << "pre";
      }
}

TEST_F(FastCpu, LinearBackwardMatchesReference) {
  TRACE_SEED(rng);
  for (const LinearCase& lc : kLinearCases)
    for (bool accumulate : {false, true})
      for (Activation act : {Activation::none, Activation::gelu}) {
        if (accumulate && act == Activation::gelu) continue;  // not part of the contract
        SCOPED_TRACE(::testing::Message() << "N " << lc.N << " in " << lc.in << " out " << lc.out << " accumulate "
                                          << accumulate << " gelu " << (act == Activation::gelu));
        std::vector<float> dy = rng.normals(size_t(lc.N * lc.out)), w = rng.normals(size_t(lc.out * lc.in), 0.2),
                           x = rng.normals(size_t(lc.N * lc.in)), pre = rng.normals(size_t(lc.N * lc.in), 2.0),
                           dx0 = rng.normals(size_t(lc.N * lc.in)), dw0 = rng.normals(size_t(lc.out * lc.in)),
                           db0 = rng.normals(size_t(lc.out));
        std::vector<float> dx[2], dw[2], db[2];
        int i = 0;
        for (engine::Backend* be : {static_cast<engine::Backend*>(&ref), static_cast<engine::Backend*>(&fast)}) {
          dx[i] = accumulate ? dx0 : poisoned(dx0.size());
          dw[i] = dw0;
          db[i] = db0;
          be->linear_backward_dx(view(dx[i], {lc.N, lc.in}), view(dy, {lc.N, lc.out}), view(w, {lc.out, lc.in}),
                                 accumulate, act, act == Activation::gelu ? view(pre, {lc.N, lc.in}) : Tensor{});
          be->linear_backward_dw(view(dw[i], {lc.out, lc.in}), view(db[i], {lc.out}), view(dy, {lc.N, lc.out}),
                                 view(x, {lc.N, lc.in}));
          ++i;
        }
        // Errors are measured at the scale of the terms that make each result: the fresh product
        // (dy W, dy^T x, the sum of dy) plus the old value accumulated into. gelu'(pre) carries an
        // absolute error up to 2.1e-7 (vec_math.h), which near its zero at pre = -0.75 is large
        // relative to dx itself, so dx is measured at the scale of dy W too.
        std::vector<float> dyw(dx0.size()), dw_new(dw0.size(), 0.f), db_new(db0.size(), 0.f);
        ref.linear_backward_dx(view(dyw, {lc.N, lc.in}), view(dy, {lc.N, lc.out}), view(w, {lc.out, lc.in}), false,
                               Activation::none, Tensor{});
        ref.linear_backward_dw(view(dw_new, {lc.out, lc.in}), view(db_new, {lc.out}), view(dy, {lc.N, lc.out}),
                               view(x, {lc.N, lc.in}));
        const double dx_scale = max_abs(dyw) + (accumulate ? max_abs(dx0) : 0.0);
        EXPECT_LT(scaled_error(dx[1], dx[0], dx_scale), 2e-6 * std::sqrt(double(lc.out)) + 1e-6) << "dx";
        EXPECT_LT(scaled_error(dw[1], dw[0], max_abs(dw_new) + max_abs(dw0)), 2e-6 * std::sqrt(double(lc.N)) + 1e-6)
            << "dw";
        EXPECT_LT(scaled_error(db[1], db[0], max_abs(db_new) + max_abs(db0)), 2e-6 * std::sqrt(double(lc.N)) + 1e-6)
            << "db";
      }
}

// ---- attention ----

struct AttentionCase {
  std::vector<int> lengths;
  int heads, head_dim;
  float p;
};

void check_attention(CpuBackend& ref, FastCpuBackend& fast, TestRng& rng, const AttentionCase& ac) {
  std::vector<int32_t> cu{0};
  int64_t max_len = 0;
  for (int len : ac.lengths) {
    cu.push_back(cu.back() + len);
    max_len = std::max<int64_t>(max_len, len);
  }
  const int64_t T = cu.back(), B = int64_t(ac.lengths.size()), H = int64_t(ac.heads) * ac.head_dim;
  const BatchShape batch{T, B, max_len};
  const float scale = 1.f / std::sqrt(float(ac.head_dim));
  const DropoutRng drop{rng.gen(), uint32_t(rng.integer(0, 1000)), uint64_t(rng.integer(0, 100000))};  // a data-parallel offset too
  std::vector<float> qkv = rng.normals(size_t(T * 3 * H)), dout = rng.normals(size_t(T * H));
  std::vector<float> out[2], lse[2], dqkv[2];
  int i = 0;
  for (engine::Backend* be : {static_cast<engine::Backend*>(&ref), static_cast<engine::Backend*>(&fast)}) {
    out[i] = poisoned(size_t(T * H));
    lse[i] = poisoned(size_t(T * ac.heads));
    dqkv[i] = poisoned(size_t(T * 3 * H));
    be->attention_forward(view(out[i], {T, H}), view(lse[i], {T, ac.heads}), view(qkv, {T, 3 * H}), view(cu, {B + 1}),
                          batch, ac.heads, scale, ac.p, drop);
    be->attention_backward(view(dqkv[i], {T, 3 * H}), view(dout, {T, H}), view(qkv, {T, 3 * H}), view(out[i], {T, H}),
                           view(lse[i], {T, ac.heads}), view(cu, {B + 1}), batch, ac.heads, scale, ac.p, drop);
    ++i;
  }
  const double tol = 4e-6 * std::sqrt(double(max_len)) + 2e-6;
  EXPECT_LT(scaled_error(out[1], out[0]), tol) << "out";
  EXPECT_LT(scaled_error(lse[1], lse[0]), tol) << "lse";
  EXPECT_LT(scaled_error(dqkv[1], dqkv[0]), 4 * tol) << "dqkv";
}

TEST_F(FastCpu, AttentionMatchesReference) {
  TRACE_SEED(rng);
  const AttentionCase cases[] = {
      {{1}, 1, 1, 0.f},           {{1, 7, 129, 33, 2}, 3, 5, 0.f}, {{1, 7, 129, 33, 2}, 3, 5, 0.1f},
      {{128, 128}, 12, 32, 0.1f}, {{0, 3, 0}, 2, 8, 0.1f},         {{200, 5}, 2, 64, 0.3f}};
  for (const AttentionCase& ac : cases) {
    SCOPED_TRACE(::testing::Message() << "sequences " << ac.lengths.size() << " first length " << ac.lengths[0]
                                      << " heads " << ac.heads << " d " << ac.head_dim << " p " << ac.p);
    check_attention(ref, fast, rng, ac);
  }
}

// ---- per-token ops ----

TEST_F(FastCpu, EmbeddingsMatchReference) {
  TRACE_SEED(rng);
  // H >= 3: a layernorm over one element has s - mean = 0 and rstd = 1/sqrt(eps) = 1e6, which
  // multiplies every rounding difference by a million.
  for (int64_t T : {1, 13, 300})
    for (int64_t H : {3, 37, 384}) {
      SCOPED_TRACE(::testing::Message() << "T " << T << " H " << H);
      const int64_t V = 11, P = 40, Ty = 2;  // few word rows: tokens share rows, as [CLS] does
      std::vector<int32_t> ids(T), pos(T), types(T);
      for (int64_t t = 0; t < T; ++t) {
        ids[size_t(t)] = rng.integer(0, int(V) - 1);
        pos[size_t(t)] = int32_t(t % P);
        types[size_t(t)] = rng.integer(0, 1);
      }
      std::vector<float> word = rng.normals(size_t(V * H)), pe = rng.normals(size_t(P * H)),
                         te = rng.normals(size_t(Ty * H)), gamma = rng.normals(size_t(H)), beta = rng.normals(size_t(H)),
                         dy = rng.normals(size_t(T * H));
      std::vector<float> y[2], s[2], mean[2], rstd[2], dword[2], dpos[2], dtype[2], dgamma[2], dbeta[2];
      const std::vector<float> dword0 = rng.normals(word.size()), dgamma0 = rng.normals(size_t(H));
      int i = 0;
      for (engine::Backend* be : {static_cast<engine::Backend*>(&ref), static_cast<engine::Backend*>(&fast)}) {
        y[i] = poisoned(size_t(T * H));
        s[i] = poisoned(size_t(T * H));
        mean[i] = poisoned(size_t(T));
        rstd[i] = poisoned(size_t(T));
        dword[i] = dword0;
        dpos[i] = std::vector<float>(pe.size(), 0.f);
        dtype[i] = std::vector<float>(te.size(), 0.f);
        dgamma[i] = dgamma0;
        dbeta[i] = std::vector<float>(size_t(H), 0.f);
        be->embeddings_forward(view(y[i], {T, H}), view(s[i], {T, H}), view(mean[i], {T}), view(rstd[i], {T}),
                               view(ids, {T}), view(pos, {T}), view(types, {T}), view(word, {V, H}), view(pe, {P, H}),
                               view(te, {Ty, H}), view(gamma, {H}), view(beta, {H}), 1e-12f);
        be->embeddings_backward(view(dword[i], {V, H}), view(dpos[i], {P, H}), view(dtype[i], {Ty, H}),
                                view(dgamma[i], {H}), view(dbeta[i], {H}), view(dy, {T, H}), view(s[i], {T, H}),
                                view(mean[i], {T}), view(rstd[i], {T}), view(gamma, {H}), view(ids, {T}),
                                view(pos, {T}), view(types, {T}));
        ++i;
      }
      const double tol = 4e-6 * std::sqrt(double(H)) + 2e-6, sum_tol = 4e-6 * std::sqrt(double(T * H)) + 2e-6;
      EXPECT_TRUE(bitwise_equal(s[1], s[0])) << "s (three f32 additions in the same order)";
      EXPECT_LT(scaled_error(y[1], y[0]), tol) << "y";
      EXPECT_LT(scaled_error(mean[1], mean[0]), tol) << "mean";
      EXPECT_LT(scaled_error(rstd[1], rstd[0]), tol) << "rstd";
      // Measured at the scale of the terms: the old values accumulated into, and ds's terms (see
      // ds_term_scale); at small H, ds itself may be a small difference of them.
      const double ds_scale = ds_term_scale(dy, gamma, rstd[0]);
      EXPECT_LT(scaled_error(dword[1], dword[0], max_abs(dword[0]) + max_abs(dword0) + ds_scale), sum_tol) << "dword";
      EXPECT_LT(scaled_error(dpos[1], dpos[0], max_abs(dpos[0]) + ds_scale), sum_tol) << "dpos";
      EXPECT_LT(scaled_error(dtype[1], dtype[0], max_abs(dtype[0]) + ds_scale), sum_tol) << "dtype";
      EXPECT_LT(scaled_error(dgamma[1], dgamma[0], max_abs(dgamma[0]) + max_abs(dgamma0)), sum_tol) << "dgamma";
      EXPECT_LT(scaled_error(dbeta[1], dbeta[0]), sum_tol) << "dbeta";
    }
}

TEST_F(FastCpu, AddDropoutLayernormMatchesReference) {
  TRACE_SEED(rng);
  for (int64_t T : {1, 13, 300})
    for (int64_t H : {3, 37, 768})
      for (float p : {0.f, 0.1f}) {
        SCOPED_TRACE(::testing::Message() << "T " << T << " H " << H << " p " << p);
        const DropoutRng drop{rng.gen(), uint32_t(rng.integer(0, 1000)), uint64_t(rng.integer(0, 100000))};  // a data-parallel offset too
        std::vector<float> branch = rng.normals(size_t(T * H)), res = rng.normals(size_t(T * H), 3.0),
                           gamma = rng.normals(size_t(H)), beta = rng.normals(size_t(H)),
                           dy = rng.normals(size_t(T * H)), dgamma0 = rng.normals(size_t(H));
        std::vector<float> y[2], s[2], mean[2], rstd[2], dbr[2], dres[2], dgamma[2], dbeta[2];
        int i = 0;
        for (engine::Backend* be : {static_cast<engine::Backend*>(&ref), static_cast<engine::Backend*>(&fast)}) {
          y[i] = poisoned(size_t(T * H));
          s[i] = poisoned(size_t(T * H));
          mean[i] = poisoned(size_t(T));
          rstd[i] = poisoned(size_t(T));
          dbr[i] = poisoned(size_t(T * H));
          dres[i] = poisoned(size_t(T * H));
          dgamma[i] = dgamma0;
          dbeta[i] = std::vector<float>(size_t(H), 0.f);
          be->add_dropout_layernorm_forward(view(y[i], {T, H}), view(s[i], {T, H}), view(mean[i], {T}),
                                            view(rstd[i], {T}), view(branch, {T, H}), view(res, {T, H}),
                                            view(gamma, {H}), view(beta, {H}), 1e-12f, p, drop);
          be->add_dropout_layernorm_backward(view(dbr[i], {T, H}), view(dres[i], {T, H}), view(dgamma[i], {H}),
                                             view(dbeta[i], {H}), view(dy, {T, H}), view(s[i], {T, H}),
                                             view(mean[i], {T}), view(rstd[i], {T}), view(gamma, {H}), p, drop);
          ++i;
        }
        const double tol = 4e-6 * std::sqrt(double(H)) + 2e-6, sum_tol = 4e-6 * std::sqrt(double(T * H)) + 2e-6;
        EXPECT_TRUE(bitwise_equal(s[1], s[0])) << "s: same mask, same f32 products and sums";
        EXPECT_LT(scaled_error(y[1], y[0]), tol) << "y";
        EXPECT_LT(scaled_error(rstd[1], rstd[0]), tol) << "rstd";
        const double ds_scale = ds_term_scale(dy, gamma, rstd[0]);
        EXPECT_LT(scaled_error(dres[1], dres[0], ds_scale), tol) << "d_residual";
        EXPECT_LT(scaled_error(dbr[1], dbr[0], ds_scale), tol) << "d_branch";
        EXPECT_LT(scaled_error(dgamma[1], dgamma[0], max_abs(dgamma[0]) + max_abs(dgamma0)), sum_tol) << "dgamma";
        EXPECT_LT(scaled_error(dbeta[1], dbeta[0]), sum_tol) << "dbeta";
        // The dropped elements of d_branch are exactly those of the reference.
        for (size_t k = 0; k < dbr[0].size(); ++k) ASSERT_EQ(dbr[0][k] == 0.f, dbr[1][k] == 0.f) << "element " << k;
      }
}

TEST_F(FastCpu, DropoutIsBitwiseTheReferenceInPlaceToo) {
  TRACE_SEED(rng);
  for (int64_t n : {1, 3, 4, 5, 1001, 70000})
    for (float p : {0.f, 0.1f, 0.5f}) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " p " << p);
      const DropoutRng drop{rng.gen(), uint32_t(rng.integer(0, 1000)), uint64_t(rng.integer(0, 100000))};  // a data-parallel offset too
      const std::vector<float> x = rng.normals(size_t(n));
      std::vector<float> y_ref = poisoned(size_t(n)), x_ref = x, in_place = x;
      ref.dropout_forward(view(y_ref, {n}), view(x_ref, {n}), p, drop);
      fast.dropout_forward(view(in_place, {n}), view(in_place, {n}), p, drop);
      EXPECT_TRUE(bitwise_equal(in_place, y_ref));
      std::vector<float> dx_ref = poisoned(size_t(n)), dx = poisoned(size_t(n)), dy = rng.normals(size_t(n));
      ref.dropout_backward(view(dx_ref, {n}), view(dy, {n}), p, drop);
      fast.dropout_backward(view(dx, {n}), view(dy, {n}), p, drop);
      EXPECT_TRUE(bitwise_equal(dx, dx_ref));
    }
}

// ---- optimizer ----

TEST_F(FastCpu, AdamWAndGlobalNormMatchReference) {
  TRACE_SEED(rng);
  for (int64_t n : {1, 17, 100003})
    for (float max_norm : {0.f, 1.f}) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " max_grad_norm " << max_norm);
      std::vector<float> p0 = rng.normals(size_t(n)), g = rng.normals(size_t(n), 0.1), m0 = rng.normals(size_t(n), 0.01),
                         v0 = rng.uniforms(size_t(n), 0.0, 1e-3);
      std::vector<float> p[2], m[2], v[2], norm[2], working[2];
      AdamWArgs args;
      args.lr = 1e-3f;
      args.weight_decay = 0.01f;
      args.decay_end = n / 2;
      args.step = rng.integer(1, 50);
      args.max_grad_norm = max_norm;
      int i = 0;
      for (engine::Backend* be : {static_cast<engine::Backend*>(&ref), static_cast<engine::Backend*>(&fast)}) {
        p[i] = p0;
        m[i] = m0;
        v[i] = v0;
        norm[i] = poisoned(1);
        working[i] = poisoned(size_t(n));
        be->global_norm(view(norm[i], {1}), view(g, {n}));
        be->adamw(view(p[i], {n}), view(g, {n}), view(m[i], {n}), view(v[i], {n}), view(working[i], {n}),
                  view(norm[i], {1}), args);
        ++i;
      }
      EXPECT_LT(std::fabs(norm[1][0] - norm[0][0]), 1e-6 * norm[0][0]) << "norm";
      // The reference rounds each result to f32 once from double, the fast backend computes in f32:
      // they agree to a few ulps of the terms that make each result. A parameter moves by about lr
      // (1e-3 of its size), so an update wrong by even 1% would show at 1e-5 of the parameters.
      EXPECT_LT(scaled_error(p[1], p[0]), 3e-7) << "parameters";
      const double b1 = args.beta1, b2 = args.beta2, g_max = max_abs(g);
      EXPECT_LT(scaled_error(m[1], m[0], b1 * max_abs(m0) + (1 - b1) * g_max), 1e-6) << "m";
      EXPECT_LT(scaled_error(v[1], v[0], b2 * max_abs(v0) + (1 - b2) * g_max * g_max), 1e-6) << "v";
      EXPECT_TRUE(bitwise_equal(working[1], p[1])) << "working copy";
    }
}

// ---- determinism ----

// The reductions over tokens and over the flat buffer run in fixed blocks: 1 and 2 threads agree bitwise.
TEST_F(FastCpu, ReductionsDoNotDependOnTheThreadCount) {
  TRACE_SEED(rng);
  const int64_t T = 333, H = 97, n = 400003;  // large enough to run in parallel (kSerialWork)
  std::vector<float> g = rng.normals(size_t(n)), s = rng.normals(size_t(T * H)), dy = rng.normals(size_t(T * H)),
                     gamma = rng.normals(size_t(H)), mean = rng.normals(size_t(T)), rstd = rng.uniforms(size_t(T), 0.5, 2);
  std::vector<float> norm[2], dgamma[2], dbeta[2], db[2], dbr[2], dres[2];
  for (int threads : {1, 2}) {
    engine::set_cpu_threads(threads);
    const int i = threads - 1;
    norm[i] = poisoned(1);
    dgamma[i] = std::vector<float>(size_t(H), 0.f);
    dbeta[i] = std::vector<float>(size_t(H), 0.f);
    db[i] = std::vector<float>(size_t(H), 0.f);
    dbr[i] = poisoned(size_t(T * H));
    dres[i] = poisoned(size_t(T * H));
    fast.global_norm(view(norm[i], {1}), view(g, {n}));
    fast.add_dropout_layernorm_backward(view(dbr[i], {T, H}), view(dres[i], {T, H}), view(dgamma[i], {H}),
                                        view(dbeta[i], {H}), view(dy, {T, H}), view(s, {T, H}), view(mean, {T}),
                                        view(rstd, {T}), view(gamma, {H}), 0.1f, DropoutRng{7, 3});
    std::vector<float> dw(size_t(H * H), 0.f);
    fast.linear_backward_dw(view(dw, {H, H}), view(db[i], {H}), view(dy, {T, H}), view(s, {T, H}));
  }
  EXPECT_TRUE(bitwise_equal(norm[0], norm[1])) << "global norm";
  EXPECT_TRUE(bitwise_equal(dgamma[0], dgamma[1])) << "dgamma";
  EXPECT_TRUE(bitwise_equal(dbeta[0], dbeta[1])) << "dbeta";
  EXPECT_TRUE(bitwise_equal(db[0], db[1])) << "bias gradient";
  EXPECT_TRUE(bitwise_equal(dbr[0], dbr[1])) << "d_branch";
}

// ---- the whole step ----

engine::BertConfig tiny_config() {
  engine::BertConfig c;
  c.vocab_size = 100;
  c.hidden_size = 60;  // 3 heads of 20
  c.num_hidden_layers = 2;
  c.num_attention_heads = 3;
  c.intermediate_size = 130;
  c.max_position_embeddings = 160;
  c.num_labels = 3;
  c.initializer_range = 0.1f;
  return c;
}

engine::PackedBatch random_batch(std::mt19937_64& gen, const engine::BertConfig& c) {
  std::vector<engine::TokenizedExample> examples;
  std::vector<int64_t> positions;
  for (int len : {1, 7, 129, 33, 64}) {
    engine::TokenizedExample e;
    for (int i = 0; i < len; ++i) {
      e.ids.push_back(int32_t(gen() % uint64_t(c.vocab_size)));
      e.type_ids.push_back(i > len / 2 ? 1 : 0);
    }
    e.label = int32_t(gen() % uint64_t(c.num_labels));
    positions.push_back(int64_t(examples.size()));
    examples.push_back(std::move(e));
  }
  return engine::pack_batch(examples, positions);
}

struct StepRun {
  std::unique_ptr<engine::Backend> backend;
  std::unique_ptr<engine::BertModel> model;
};

StepRun make_run(const std::string& backend, uint64_t seed) {
  StepRun s;
  s.backend = engine::make_backend(backend);
  engine::ModelOptions mo;
  mo.act = DType::f32;
  mo.max_tokens = 512;
  mo.max_sequences = 8;
  s.model = std::make_unique<engine::BertModel>(*s.backend, tiny_config(), mo);
  s.model->init_weights(seed);
  return s;
}

// Forward and backward of one batch with dropout on: logits, loss and every parameter gradient.
TEST_F(FastCpu, WholeStepMatchesReferenceInFp32) {
  TRACE_SEED(rng);
  const engine::PackedBatch batch = random_batch(rng.gen, tiny_config());
  StepRun runs[2] = {make_run("cpu-ref", rng.seed), make_run("cpu", rng.seed)};
  const uint64_t dropout_seed = rng.gen();
  for (StepRun& s : runs) {
    s.model->set_batch(batch);
    s.model->zero_grads();
    s.model->forward(engine::Pass::train, dropout_seed);
    s.model->backward();
  }
  EXPECT_LT(scaled_error(runs[1].model->logits(), runs[0].model->logits()), 2e-5) << "logits";
  const float l0 = runs[0].model->loss(), l1 = runs[1].model->loss();
  EXPECT_LT(std::fabs(l1 - l0), 2e-5 * std::fabs(l0)) << "loss ref " << l0 << " fast " << l1;
  for (const engine::ParamInfo& p : runs[0].model->params().list()) {
    if (p.name.find("attention.self.key.bias") != std::string::npos) continue;  // analytically zero
    EXPECT_LT(scaled_error(runs[1].model->params().grad_host(*runs[1].backend, p.name),
                           runs[0].model->params().grad_host(*runs[0].backend, p.name)),
              1e-4)
        << "gradient of " << p.name;
  }
}

std::vector<float> train(StepRun& s, const std::vector<engine::PackedBatch>& batches, uint64_t seed,
                         std::vector<float>* losses = nullptr) {
  engine::Optimizer opt(*s.backend, s.model->params(), engine::AdamWConfig{});
  for (size_t step = 0; step < batches.size(); ++step) {
    s.model->set_batch(batches[step]);
    s.model->zero_grads();
    s.model->forward(engine::Pass::train, seed + step);
    s.model->backward();
    opt.compute_grad_norm();
    opt.step(1e-3f);
    if (losses) losses->push_back(s.model->loss());
  }
  return s.model->params().master_host(*s.backend);
}

// Five AdamW steps: the fast backend follows the reference's parameters, and twice gives bitwise
// the same parameters.
TEST_F(FastCpu, TrainingStepsFollowTheReferenceAndRepeatBitwise) {
  TRACE_SEED(rng);
  std::vector<engine::PackedBatch> batches;
  for (int i = 0; i < 5; ++i) batches.push_back(random_batch(rng.gen, tiny_config()));
  std::vector<float> losses[3];
  StepRun r0 = make_run("cpu-ref", rng.seed), f1 = make_run("cpu", rng.seed), f2 = make_run("cpu", rng.seed);
  const std::vector<float> init = r0.model->params().master_host(*r0.backend);
  const std::vector<float> p_ref = train(r0, batches, rng.seed, &losses[0]);
  const std::vector<float> p1 = train(f1, batches, rng.seed, &losses[1]);
  const std::vector<float> p2 = train(f2, batches, rng.seed, &losses[2]);
  EXPECT_TRUE(bitwise_equal(p1, p2)) << "two runs of the fast backend differ";
  EXPECT_TRUE(bitwise_equal(losses[1], losses[2]));
  // AdamW moves every parameter by about lr per step whatever its gradient's size, so where a
  // gradient is near zero rounding can flip its step; the total change agrees with the reference's
  // in the L2 sense.
  const std::vector<float> change_fast = minus(p1, init), change_ref = minus(p_ref, init);
  EXPECT_LT(std::sqrt(project(minus(change_fast, change_ref), minus(change_fast, change_ref)) /
                      project(change_ref, change_ref)),
            1e-2)
      << "parameter change";
  for (size_t i = 0; i < losses[0].size(); ++i)
    EXPECT_LT(std::fabs(losses[1][i] - losses[0][i]), 1e-4 * std::fabs(losses[0][i])) << "loss of step " << i;
}

}  // namespace
}  // namespace engine_test
