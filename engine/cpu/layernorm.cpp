// Residual + dropout + layernorm, the end of every attention and FFN block:
//   s = residual + dropout(branch)   (dropout element index t*H + c)
//   y = (s - mean) * rstd * gamma + beta,  rstd = 1/sqrt(biased var + eps)
// Layout: branch, residual, s, y, dy, d_branch, d_residual act f32 [T, H]; gamma, beta [H];
// mean, rstd f32 [T]; dgamma, dbeta f32 [H] accumulated. Statistics and parameter sums in double.
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/kernels.h"
#include "engine/op_checks.h"

namespace engine {

void CpuBackend::add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch,
                                               Tensor residual, Tensor gamma, Tensor beta, float eps, float p,
                                               DropoutRng rng) {
  const OpCheck c("add_dropout_layernorm_forward", *this);
  const auto [act, T, H] =
      check_add_dropout_layernorm_forward(c, y, s, mean, rstd, branch, residual, gamma, beta, eps, p);

  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = cpu::dropout_scale(p);
  for (int64_t t = 0; t < T; ++t) {
    const float* br = branch.as<const float>() + t * H;
    const float* res = residual.as<const float>() + t * H;
    float* srow = s.as<float>() + t * H;
    for (int64_t col = 0; col < H; ++col) {
      float b = dropout_keep(rng, uint64_t(t * H + col), threshold) ? br[col] * keep_scale : 0.f;
      srow[col] = res[col] + b;
    }
    cpu::layernorm_row_forward(y.as<float>() + t * H, mean.as<float>() + t, rstd.as<float>() + t, srow,
                               gamma.as<const float>(), beta.as<const float>(), H, eps);
  }
}

void CpuBackend::add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta,
                                                Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma,
                                                float p, DropoutRng rng) {
  const OpCheck c("add_dropout_layernorm_backward", *this);
  const auto [act, T, H] =
      check_add_dropout_layernorm_backward(c, d_branch, d_residual, dgamma, dbeta, dy, s, mean, rstd, gamma, p);

  const uint32_t threshold = dropout_threshold(p);
  const float keep_scale = cpu::dropout_scale(p);
  std::vector<double> dgamma_sum(H, 0.0), dbeta_sum(H, 0.0);
  std::vector<float> ds(H);
  for (int64_t t = 0; t < T; ++t) {
    cpu::layernorm_row_backward(ds.data(), dgamma_sum.data(), dbeta_sum.data(), dy.as<const float>() + t * H,
                                s.as<const float>() + t * H, mean.as<const float>()[t],
                                rstd.as<const float>()[t], gamma.as<const float>(), H);
    float* dres = d_residual.as<float>() + t * H;
    float* dbr = d_branch.as<float>() + t * H;
    for (int64_t col = 0; col < H; ++col) {
      dres[col] = ds[col];
      dbr[col] = dropout_keep(rng, uint64_t(t * H + col), threshold) ? ds[col] * keep_scale : 0.f;
    }
  }
  for (int64_t col = 0; col < H; ++col) {
    dgamma.as<float>()[col] = float(dgamma.as<float>()[col] + dgamma_sum[col]);
    dbeta.as<float>()[col] = float(dbeta.as<float>()[col] + dbeta_sum[col]);
  }
}

}  // namespace engine
