// The per-token ops of the fast CPU backend, each one fused pass over a token's row, vectorised,
// threaded over tokens:
//   embeddings_forward   s = word[id] + pos[pos_id] + type[type_id], y = layernorm(s)
//   embeddings_backward  ds = layernorm backward; table gradients += ds rows, scattered in token
//                        order per column slice (each column slice owned by one thread)
//   add_dropout_layernorm_forward/backward  s = residual + dropout(branch), y = layernorm(s), and back
//   dropout_forward/backward  x * mask / (1 - p), masks from the same Philox stream as the reference
// Layernorm statistics in f32 (two passes over the row: no cancellation); dgamma and dbeta summed per
// fixed block of kRowBlock tokens and the blocks combined in order, so the sums do not depend on
// the thread count.
#include <algorithm>
#include <cmath>

#include "engine/cpu/kernels.h"
#include "engine/cpu_fast/fast_cpu_backend.h"
#include "engine/cpu_fast/threads.h"
#include "engine/cpu_fast/vec_math.h"
#include "engine/op_checks.h"

namespace engine {

namespace {

constexpr int64_t kRowBlock = 32;           // tokens per block of the parameter-gradient sums
constexpr int64_t kElementGrain = 1 << 14;  // elements per parallel piece of a flat pass

// Tokens per parallel piece for rows of H values: about kElementGrain elements.
int64_t row_grain(int64_t H) { return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(H, 1)); }

ENGINE_FAST_CLONES void layernorm_row(float* y, float* mean, float* rstd, const float* s, const float* gamma,
                                      const float* beta, int64_t H, float eps) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < H; ++c) sum += s[c];
  const float mu = sum / float(H);
  float sq = 0.f;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < H; ++c) sq += (s[c] - mu) * (s[c] - mu);
  const float r = 1.f / std::sqrt(sq / float(H) + eps);
  *mean = mu;
  *rstd = r;
#pragma omp simd
  for (int64_t c = 0; c < H; ++c) y[c] = (s[c] - mu) * r * gamma[c] + beta[c];
}

// ds = d layernorm / ds for one row; dgamma_part += dy * xhat, dbeta_part += dy. ds may alias dy.
ENGINE_FAST_CLONES void layernorm_row_backward(float* ds, float* dgamma_part, float* dbeta_part, const float* dy,
                                               const float* s, float mean, float rstd, const float* gamma,
                                               int64_t H) {
  float g_sum = 0.f, gx_sum = 0.f;
#pragma omp simd reduction(+ : g_sum, gx_sum)
  for (int64_t c = 0; c < H; ++c) {
    const float xhat = (s[c] - mean) * rstd;
    const float g = dy[c] * gamma[c];
    g_sum += g;
    gx_sum += g * xhat;
    dgamma_part[c] += dy[c] * xhat;
    dbeta_part[c] += dy[c];
  }
  const float g_mean = g_sum / float(H), gx_mean = gx_sum / float(H);
#pragma omp simd
  for (int64_t c = 0; c < H; ++c) {
    const float xhat = (s[c] - mean) * rstd;
    ds[c] = rstd * (dy[c] * gamma[c] - g_mean - xhat * gx_mean);
  }
}

ENGINE_FAST_CLONES void sum3_row(float* s, const float* a, const float* b, const float* c, int64_t H) {
#pragma omp simd
  for (int64_t i = 0; i < H; ++i) s[i] = a[i] + b[i] + c[i];
}

// A dropped element is +0 as in the reference (x * 0 would give -0 for negative x).
inline float dropped(float x, float mult) { return mult == 0.f ? 0.f : x * mult; }

// s = res + dropout(branch) (mult == nullptr: no dropout).
ENGINE_FAST_CLONES void add_dropped_row(float* s, const float* res, const float* branch, const float* mult, int64_t H) {
  if (!mult) {
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) s[i] = res[i] + branch[i];
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < H; ++i) s[i] = res[i] + dropped(branch[i], mult[i]);
}

ENGINE_FAST_CLONES void apply_multipliers(float* y, const float* x, const float* mult, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = dropped(x[i], mult[i]);
}

ENGINE_FAST_CLONES void add_into(float* dst, const float* src, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// Layernorm backward over T rows: ds rows through `emit(t, ds_row)` (ds_row is scratch, valid
// during the call), and dgamma, dbeta += the parameter gradients summed per fixed block of rows.
template <typename Emit>
void layernorm_backward_rows(int64_t T, int64_t H, float* dgamma, float* dbeta, const float* dy, const float* s,
                             const float* mean, const float* rstd, const float* gamma, Emit emit) {
  const int64_t blocks = (T + kRowBlock - 1) / kRowBlock;
  float* part = fastcpu::thread_scratch(size_t(blocks * 2 * H), 3);  // [block][dgamma H | dbeta H]
  fastcpu::parallel_blocks(blocks, 10.0 * double(T * H), [&](int64_t b) {
    float* pg = part + b * 2 * H;
    float* pb = pg + H;
    std::fill(pg, pg + 2 * H, 0.f);
    float* ds = fastcpu::thread_scratch(size_t(H), 0);
    for (int64_t t = b * kRowBlock; t < std::min(T, (b + 1) * kRowBlock); ++t) {
      layernorm_row_backward(ds, pg, pb, dy + t * H, s + t * H, mean[t], rstd[t], gamma, H);
      emit(t, ds);
    }
  });
  float* total = fastcpu::thread_scratch(size_t(2 * H), 4);
  std::fill(total, total + 2 * H, 0.f);
  for (int64_t b = 0; b < blocks; ++b) add_into(total, part + b * 2 * H, 2 * H);
  add_into(dgamma, total, H);
  add_into(dbeta, total + H, H);
}

}  // namespace

void FastCpuBackend::embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids,
                                        Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma,
                                        Tensor beta, float eps) {
  const OpCheck c("embeddings_forward", *this);
  const auto [act, T, H] =
      check_embeddings_forward(c, y, s, mean, rstd, ids, pos_ids, type_ids, word, pos, type, gamma, beta, eps);
  c.host_indices("ids", ids, word.dim(0), "the word embedding table");
  c.host_indices("pos_ids", pos_ids, pos.dim(0), "the position embedding table");
  c.host_indices("type_ids", type_ids, type.dim(0), "the token type embedding table");
  const int32_t *id = ids.as<const int32_t>(), *pid = pos_ids.as<const int32_t>(), *tid = type_ids.as<const int32_t>();
  fastcpu::parallel_ranges(T, row_grain(H), 10.0 * double(H), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* srow = s.as<float>() + t * H;
      sum3_row(srow, word.as<const float>() + int64_t(id[t]) * H, pos.as<const float>() + int64_t(pid[t]) * H,
               type.as<const float>() + int64_t(tid[t]) * H, H);
      layernorm_row(y.as<float>() + t * H, mean.as<float>() + t, rstd.as<float>() + t, srow, gamma.as<const float>(),
                    beta.as<const float>(), H, eps);
    }
  });
}

void FastCpuBackend::embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta,
                                         Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids,
                                         Tensor pos_ids, Tensor type_ids) {
  const OpCheck c("embeddings_backward", *this);
  const auto [act, T, H] = check_embeddings_backward(c, dword, dpos, dtype, dgamma, dbeta, dy, s, mean, rstd, gamma,
                                                     ids, pos_ids, type_ids);
  c.host_indices("ids", ids, dword.dim(0), "the word embedding table");
  c.host_indices("pos_ids", pos_ids, dpos.dim(0), "the position embedding table");
  c.host_indices("type_ids", type_ids, dtype.dim(0), "the token type embedding table");

  // ds of every token first (rows of one [T, H] buffer), then the scatter into the tables.
  float* ds_all = fastcpu::thread_scratch(size_t(T * H), 5);
  layernorm_backward_rows(T, H, dgamma.as<float>(), dbeta.as<float>(), dy.as<const float>(), s.as<const float>(),
                          mean.as<const float>(), rstd.as<const float>(), gamma.as<const float>(),
                          [&](int64_t t, const float* ds) { std::copy(ds, ds + H, ds_all + t * H); });
  // Several tokens may share a table row, so threads own column slices and add tokens in order:
  // every element gets its additions in token order, as in the reference.
  constexpr int64_t kColumns = 32;
  const int32_t *id = ids.as<const int32_t>(), *pid = pos_ids.as<const int32_t>(), *tid = type_ids.as<const int32_t>();
  fastcpu::parallel_ranges(H, kColumns, 3.0 * double(T), [&](int64_t c0, int64_t c1) {
    for (int64_t t = 0; t < T; ++t) {
      const float* ds = ds_all + t * H + c0;
      add_into(dword.as<float>() + int64_t(id[t]) * H + c0, ds, c1 - c0);
      add_into(dpos.as<float>() + int64_t(pid[t]) * H + c0, ds, c1 - c0);
      add_into(dtype.as<float>() + int64_t(tid[t]) * H + c0, ds, c1 - c0);
    }
  });
}

void FastCpuBackend::add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch,
                                                   Tensor residual, Tensor gamma, Tensor beta, float eps, float p,
                                                   DropoutRng rng) {
  const OpCheck c("add_dropout_layernorm_forward", *this);
  const auto [act, T, H] =
      check_add_dropout_layernorm_forward(c, y, s, mean, rstd, branch, residual, gamma, beta, eps, p);
  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = cpu::dropout_scale(p);
  fastcpu::parallel_ranges(T, row_grain(H), 10.0 * double(H), [&](int64_t t0, int64_t t1) {
    float* mult = threshold ? fastcpu::thread_scratch(size_t(H), 0) : nullptr;
    for (int64_t t = t0; t < t1; ++t) {
      if (mult) fastcpu::dropout_multipliers(mult, rng, uint64_t(t * H), H, threshold, keep_scale);
      float* srow = s.as<float>() + t * H;
      add_dropped_row(srow, residual.as<const float>() + t * H, branch.as<const float>() + t * H, mult, H);
      layernorm_row(y.as<float>() + t * H, mean.as<float>() + t, rstd.as<float>() + t, srow, gamma.as<const float>(),
                    beta.as<const float>(), H, eps);
    }
  });
}

void FastCpuBackend::add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta,
                                                    Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma,
                                                    float p, DropoutRng rng) {
  const OpCheck c("add_dropout_layernorm_backward", *this);
  const auto [act, T, H] =
      check_add_dropout_layernorm_backward(c, d_branch, d_residual, dgamma, dbeta, dy, s, mean, rstd, gamma, p);
  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = cpu::dropout_scale(p);
  layernorm_backward_rows(T, H, dgamma.as<float>(), dbeta.as<float>(), dy.as<const float>(), s.as<const float>(),
                          mean.as<const float>(), rstd.as<const float>(), gamma.as<const float>(),
                          [&](int64_t t, const float* ds) {
                            std::copy(ds, ds + H, d_residual.as<float>() + t * H);
                            float* dbr = d_branch.as<float>() + t * H;
                            if (!threshold) {
                              std::copy(ds, ds + H, dbr);
                              return;
                            }
                            float* mult = fastcpu::thread_scratch(size_t(H), 1);
                            fastcpu::dropout_multipliers(mult, rng, uint64_t(t * H), H, threshold, keep_scale);
                            apply_multipliers(dbr, ds, mult, H);
                          });
}

namespace {
// out = dropout(in) over n flat elements (element index = position); in place allowed.
void apply_dropout(float* out, const float* in, int64_t n, float p, DropoutRng rng) {
  const uint32_t threshold = dropout_threshold(p);
  if (threshold == 0u) {  // p == 0: identity, bit for bit
    if (out != in) std::copy(in, in + n, out);
    return;
  }
  const float keep_scale = cpu::dropout_scale(p);
  fastcpu::parallel_ranges(n, kElementGrain, 10.0, [&](int64_t i0, int64_t i1) {
    float* mult = fastcpu::thread_scratch(size_t(i1 - i0), 0);
    fastcpu::dropout_multipliers(mult, rng, uint64_t(i0), i1 - i0, threshold, keep_scale);
    apply_multipliers(out + i0, in + i0, mult, i1 - i0);
  });
}
}  // namespace

void FastCpuBackend::dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) {
  check_dropout_forward(OpCheck("dropout_forward", *this), y, x, p);
  apply_dropout(y.as<float>(), x.as<const float>(), x.numel(), p, rng);
}

void FastCpuBackend::dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) {
  check_dropout_backward(OpCheck("dropout_backward", *this), dx, dy, p);
  apply_dropout(dx.as<float>(), dy.as<const float>(), dy.numel(), p, rng);
}

}  // namespace engine
