// CPU varlen multi-head attention: forward against a direct per-sequence softmax written here
// (including the documented dropout index), the length-1 case (output = v), and the qkv gradient
// against central finite differences for mixed sequence lengths, 1/2/4 heads, with and without
// dropout on the probabilities.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "engine/cpu/cpu_backend.h"
#include "engine/philox.h"
#include "test_cpu_helpers.h"

namespace engine_test {
namespace {

using engine::BatchShape;
using engine::CpuBackend;
using engine::DropoutRng;

struct AttnCase {
  std::vector<int32_t> lengths;
  int heads;
  int64_t head_dim;
  float p;
};

// Printed by gtest (and so in ctest test names) instead of the struct's bytes.
void PrintTo(const AttnCase& c, std::ostream* os) {
  *os << "lengths";
  for (int32_t l : c.lengths) *os << "_" << l;
  *os << " heads " << c.heads << " d " << c.head_dim << " p " << c.p;
}

struct Batch {
  std::vector<int32_t> cu{0};
  BatchShape shape;
  explicit Batch(const std::vector<int32_t>& lengths) {
    for (int32_t len : lengths) cu.push_back(cu.back() + len);
    shape.tokens = cu.back();
    shape.sequences = int64_t(lengths.size());
    shape.max_seqlen = *std::max_element(lengths.begin(), lengths.end());
  }
  Tensor cu_seqlens() { return view(cu, {int64_t(cu.size())}); }
};

// out and lse straight from the definition, in double.
void reference_attention(std::vector<double>& out, std::vector<double>& lse, const std::vector<float>& qkv,
                         const std::vector<int32_t>& cu, int64_t H, int heads, float scale, float p,
                         DropoutRng rng) {
  const int64_t d = H / heads;
  const uint32_t threshold = engine::dropout_threshold(p);
  for (size_t b = 0; b + 1 < cu.size(); ++b)
    for (int h = 0; h < heads; ++h)
      for (int64_t t = cu[b]; t < cu[b + 1]; ++t) {
        std::vector<double> s;
        for (int64_t u = cu[b]; u < cu[b + 1]; ++u) {
          double dot = 0;
          for (int64_t e = 0; e < d; ++e) dot += double(qkv[t * 3 * H + h * d + e]) * qkv[u * 3 * H + H + h * d + e];
          s.push_back(scale * dot);
        }
        double z = 0;
        for (double x : s) z += std::exp(x);  // small scores in these tests: no overflow
        lse[t * heads + h] = std::log(z);
        for (int64_t e = 0; e < d; ++e) {
          double acc = 0;
          for (int64_t j = 0; j < int64_t(s.size()); ++j) {
            bool keep = engine::dropout_keep(rng, engine::attention_dropout_index(t, h, heads, int(j)), threshold);
            double prob = std::exp(s[j]) / z * (keep ? 1.0 / (1.0 - p) : 0.0);
            acc += prob * qkv[(cu[b] + j) * 3 * H + 2 * H + h * d + e];
          }
          out[t * H + h * d + e] = acc;
        }
      }
}

class CpuAttention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(CpuAttention, ForwardMatchesDefinitionAndGradientsMatchFiniteDifferences) {
  const AttnCase& c = GetParam();
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  Batch batch(c.lengths);
  const int64_t T = batch.shape.tokens, H = c.heads * c.head_dim;
  const float scale = float(1.0 / std::sqrt(double(c.head_dim)));
  const DropoutRng drng{rng.gen(), uint32_t(rng.gen())};
  auto qkv = rng.normals(T * 3 * H), R = rng.uniforms(T * H);
  std::vector<float> out(T * H, NAN), lse(T * c.heads, NAN);
  auto forward = [&] {
    be.attention_forward(view(out, {T, H}), view(lse, {T, c.heads}), view(qkv, {T, 3 * H}), batch.cu_seqlens(),
                         batch.shape, c.heads, scale, c.p, drng);
    return project(out, R);
  };
  forward();

  std::vector<double> want_out(T * H), want_lse(T * c.heads);
  reference_attention(want_out, want_lse, qkv, batch.cu, H, c.heads, scale, c.p, drng);
  // Double arithmetic inside, one rounding to f32 at the end.
  expect_close("out", out, want_out, 1e-6, 1e-7);
  expect_close("lse", lse, want_lse, 1e-6, 1e-7);
  // A length-1 sequence attends only to itself: with p = 0 its output is exactly its v.
  if (c.p == 0.f) {
    for (size_t b = 0; b < c.lengths.size(); ++b) {
      if (c.lengths[b] != 1) continue;
      const int64_t t = batch.cu[b];
      for (int64_t col = 0; col < H; ++col) ASSERT_EQ(out[t * H + col], qkv[t * 3 * H + 2 * H + col]) << t;
    }
  }

  std::vector<float> dqkv(T * 3 * H, NAN);  // poisoned: backward must overwrite every element
  auto backward = [&] {
    be.attention_backward(view(dqkv, {T, 3 * H}), view(R, {T, H}), view(qkv, {T, 3 * H}), view(out, {T, H}),
                          view(lse, {T, c.heads}), batch.cu_seqlens(), batch.shape, c.heads, scale, c.p, drng);
  };
  backward();
  for (size_t i = 0; i < dqkv.size(); ++i) ASSERT_TRUE(std::isfinite(dqkv[i])) << "dqkv[" << i << "] not written";
  expect_grad_matches("dqkv", qkv, dqkv, forward, rng, 48);
  // Deterministic.
  const auto first = dqkv;
  backward();
  EXPECT_EQ(dqkv, first);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CpuAttention,
    ::testing::Values(AttnCase{{1, 7, 3}, 1, 8, 0.f}, AttnCase{{1, 7, 3}, 2, 4, 0.f}, AttnCase{{1, 7, 3}, 4, 4, 0.f},
                      AttnCase{{5}, 2, 8, 0.f}, AttnCase{{1, 7, 3}, 2, 4, 0.2f}, AttnCase{{5}, 1, 8, 0.3f},
                      AttnCase{{4, 1, 6}, 4, 2, 0.1f}, AttnCase{{1}, 2, 3, 0.f}));

// Sequences do not see each other: changing one sequence leaves the others' outputs unchanged.
TEST(CpuAttention, SequencesAreIsolated) {
  TestRng rng;
  TRACE_SEED(rng);
  CpuBackend be;
  Batch batch({3, 4, 2});
  const int64_t T = batch.shape.tokens, H = 8;
  const int heads = 2;
  auto qkv = rng.normals(T * 3 * H);
  std::vector<float> out(T * H), lse(T * heads), out2(T * H), lse2(T * heads);
  be.attention_forward(view(out, {T, H}), view(lse, {T, heads}), view(qkv, {T, 3 * H}), batch.cu_seqlens(),
                       batch.shape, heads, 0.5f, 0.f, DropoutRng{});
  for (int64_t t = 3; t < 7; ++t)
    for (int64_t col = 0; col < 3 * H; ++col) qkv[t * 3 * H + col] += 1.f;  // the middle sequence
  be.attention_forward(view(out2, {T, H}), view(lse2, {T, heads}), view(qkv, {T, 3 * H}), batch.cu_seqlens(),
                       batch.shape, heads, 0.5f, 0.f, DropoutRng{});
  for (int64_t t = 0; t < T; ++t) {
    const bool middle = t >= 3 && t < 7;
    for (int64_t col = 0; col < H; ++col) {
      if (middle) {
        EXPECT_NE(out[t * H + col], out2[t * H + col]) << t;
      } else {
        EXPECT_EQ(out[t * H + col], out2[t * H + col]) << t;
      }
    }
  }
}

}  // namespace
}  // namespace engine_test
