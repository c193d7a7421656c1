// Embeddings + layernorm:
//   s[t] = word[ids[t]] + pos[pos_ids[t]] + type[type_ids[t]];  y[t] = layernorm(s[t])
// Layout: ids, pos_ids, type_ids host i32 [T]; tables act f32 [rows, H]; s, y act f32 [T, H];
// mean, rstd f32 [T]. Backward accumulates f32 table gradients row by row in token order
// (deterministic) and dgamma, dbeta with double sums.
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"
#include "engine/op_checks.h"

namespace engine {

namespace {
// The ids against their table sizes: host memory here, so the CPU can check values the shared
// contract (dtypes and shapes only) cannot.
void check_id_ranges(const OpCheck& c, Tensor ids, Tensor pos_ids, Tensor type_ids, int64_t word_rows,
                     int64_t pos_rows, int64_t type_rows) {
  c.host_indices("ids", ids, word_rows, "the word embedding table");
  c.host_indices("pos_ids", pos_ids, pos_rows, "the position embedding table");
  c.host_indices("type_ids", type_ids, type_rows, "the token type embedding table");
}

void add_row(float* dst, const float* src, int64_t H) {
  for (int64_t c = 0; c < H; ++c) dst[c] += src[c];
}
}  // namespace

void CpuBackend::embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids,
                                    Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma,
                                    Tensor beta, float eps) {
  const OpCheck c("embeddings_forward", *this);
  const auto [act, T, H] =
      check_embeddings_forward(c, y, s, mean, rstd, ids, pos_ids, type_ids, word, pos, type, gamma, beta, eps);
  check_id_ranges(c, ids, pos_ids, type_ids, word.dim(0), pos.dim(0), type.dim(0));

  for (int64_t t = 0; t < T; ++t) {
    const float* w = word.as<const float>() + int64_t(ids.as<const int32_t>()[t]) * H;
    const float* ps = pos.as<const float>() + int64_t(pos_ids.as<const int32_t>()[t]) * H;
    const float* ty = type.as<const float>() + int64_t(type_ids.as<const int32_t>()[t]) * H;
    float* srow = s.as<float>() + t * H;
    for (int64_t col = 0; col < H; ++col) srow[col] = w[col] + ps[col] + ty[col];
    cpu::layernorm_row_forward(y.as<float>() + t * H, mean.as<float>() + t, rstd.as<float>() + t, srow,
                               gamma.as<const float>(), beta.as<const float>(), H, eps);
  }
}

void CpuBackend::embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta,
                                     Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids,
                                     Tensor pos_ids, Tensor type_ids) {
  const OpCheck c("embeddings_backward", *this);
  const auto [act, T, H] = check_embeddings_backward(c, dword, dpos, dtype, dgamma, dbeta, dy, s, mean, rstd, gamma,
                                                     ids, pos_ids, type_ids);
  check_id_ranges(c, ids, pos_ids, type_ids, dword.dim(0), dpos.dim(0), dtype.dim(0));

  std::vector<double> dgamma_sum(H, 0.0), dbeta_sum(H, 0.0);
  std::vector<float> ds(H);
  for (int64_t t = 0; t < T; ++t) {
    cpu::layernorm_row_backward(ds.data(), dgamma_sum.data(), dbeta_sum.data(), dy.as<const float>() + t * H,
                                s.as<const float>() + t * H, mean.as<const float>()[t],
                                rstd.as<const float>()[t], gamma.as<const float>(), H);
    add_row(dword.as<float>() + int64_t(ids.as<const int32_t>()[t]) * H, ds.data(), H);
    add_row(dpos.as<float>() + int64_t(pos_ids.as<const int32_t>()[t]) * H, ds.data(), H);
    add_row(dtype.as<float>() + int64_t(type_ids.as<const int32_t>()[t]) * H, ds.data(), H);
  }
  for (int64_t col = 0; col < H; ++col) {
    dgamma.as<float>()[col] = float(dgamma.as<float>()[col] + dgamma_sum[col]);
    dbeta.as<float>()[col] = float(dbeta.as<float>()[col] + dbeta_sum[col]);
  }
}

}  // namespace engine
