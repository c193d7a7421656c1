// AdamW and the global gradient norm of the fast CPU backend over the flat f32 buffers, plus the
// backend's identity. Same update as the reference (engine/cpu/adamw.cpp, torch.optim.AdamW
// semantics) in f32 arithmetic, vectorised and threaded over fixed pieces of the buffer.
// global_norm sums squares in f32 within fixed pieces of kNormPiece elements and the pieces in
// order in double: the same result whatever the thread count.
#include <algorithm>
#include <cmath>

#include "engine/bf16.h"
#include "engine/cpu_fast/blas.h"
#include "engine/cpu_fast/fast_cpu_backend.h"
#include "engine/cpu_fast/threads.h"
#include "engine/cpu_fast/vec_math.h"
#include "engine/op_checks.h"

namespace engine {

FastCpuBackend::FastCpuBackend() { fastcpu::make_blas_single_threaded(); }

std::string FastCpuBackend::name() const { return "cpu"; }

std::string FastCpuBackend::device_label() const {
  return "cpu (" + std::to_string(cpu_threads()) + " threads, " + fastcpu::blas_config() + ")";
}

namespace {

constexpr int64_t kPiece = 1 << 14;      // elements per parallel piece of AdamW
constexpr int64_t kNormPiece = 1 << 12;  // elements per partial sum of the norm

ENGINE_FAST_CLONES float sum_squares(const float* g, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += g[i] * g[i];
  return s;
}

struct AdamWConsts {
  float clip, b1, b2, one_minus_b1, one_minus_b2, lr, eps, bias1, bias2, decay;
  int64_t decay_end;
};

// Elements [begin, end) of the update; with kWorking, `working` (f32) receives the new parameters
// (a template parameter, not a test in the loop: a conditional store keeps the loop scalar).
template <bool kWorking>
ENGINE_FAST_CLONES void adamw_range(float* p, const float* g_in, float* m, float* v, float* working,
                                    const AdamWConsts& k, int64_t begin, int64_t end) {
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    const float g = g_in[i] * k.clip;
    float pi = p[i] * (i < k.decay_end ? k.decay : 1.f);
    const float mi = k.b1 * m[i] + k.one_minus_b1 * g;
    const float vi = k.b2 * v[i] + k.one_minus_b2 * g * g;
    pi -= k.lr * (mi / k.bias1) / (std::sqrt(vi / k.bias2) + k.eps);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    if (kWorking) working[i] = pi;
  }
}

}  // namespace

void FastCpuBackend::global_norm(Tensor norm, Tensor grads) {
  check_global_norm(OpCheck("global_norm", *this), norm, grads);
  const int64_t n = grads.numel(), pieces = (n + kNormPiece - 1) / kNormPiece;
  float* partial = fastcpu::thread_scratch(size_t(pieces), 3);
  const float* g = grads.as<const float>();
  fastcpu::parallel_blocks(pieces, double(n), [&](int64_t b) {
    partial[b] = sum_squares(g + b * kNormPiece, std::min(n, (b + 1) * kNormPiece) - b * kNormPiece);
  });
  double sum = 0;
  for (int64_t b = 0; b < pieces; ++b) sum += partial[b];
  norm.as<float>()[0] = float(std::sqrt(sum));
}

void FastCpuBackend::adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                           const AdamWArgs& args) {
  const int64_t n = check_adamw(OpCheck("adamw", *this), params, grads, m, v, working, norm, args);
  AdamWConsts k{};
  k.clip = 1.f;
  if (args.max_grad_norm > 0.f) k.clip = std::min(1.0f, args.max_grad_norm / (norm.as<const float>()[0] + 1e-6f));
  k.b1 = args.beta1;
  k.b2 = args.beta2;
  k.one_minus_b1 = float(1.0 - double(args.beta1));
  k.one_minus_b2 = float(1.0 - double(args.beta2));
  k.lr = args.lr;
  k.eps = args.eps;
  k.bias1 = float(1.0 - std::pow(double(args.beta1), double(args.step)));
  k.bias2 = float(1.0 - std::pow(double(args.beta2), double(args.step)));
  k.decay = float(1.0 - double(args.lr) * double(args.weight_decay));
  k.decay_end = args.decay_end;
  float* working_f32 = !working.empty() && working.dtype == DType::f32 ? working.as<float>() : nullptr;
  float* p = params.as<float>();
  fastcpu::parallel_ranges(n, kPiece, 10.0, [&](int64_t i0, int64_t i1) {
    if (working_f32)
      adamw_range<true>(p, grads.as<const float>(), m.as<float>(), v.as<float>(), working_f32, k, i0, i1);
    else
      adamw_range<false>(p, grads.as<const float>(), m.as<float>(), v.as<float>(), nullptr, k, i0, i1);
  });
  if (working.empty() || working_f32) return;
  for (int64_t i = 0; i < n; ++i) {  // a 16-bit working copy (not used by the CPU model; kept for the contract)
    if (working.dtype == DType::bf16) working.as<uint16_t>()[i] = float_to_bf16(p[i]);
    if (working.dtype == DType::f16) working.as<uint16_t>()[i] = float_to_fp16(p[i]);
  }
}

}  // namespace engine
