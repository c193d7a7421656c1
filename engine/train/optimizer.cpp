#include "engine/train/optimizer.h"

namespace engine {

Optimizer::Optimizer(Backend& backend, ParamStore& params, const AdamWConfig& config)
    : backend_(backend), params_(params), config_(config), arena_(backend, "optimizer") {
  arena_.plan(&norm_, DType::f32, {1}, "optimizer.grad_norm");
  arena_.allocate();
  backend_.fill(norm_, 0.f);
}

void Optimizer::compute_grad_norm() { backend_.global_norm(norm_, params_.grads()); }

float Optimizer::grad_norm() {
  float norm = 0.f;
  backend_.copy_to_host(&norm, norm_);
  return norm;
}

void Optimizer::step(float lr) {
  AdamWArgs args;
  args.lr = lr;
  args.beta1 = config_.beta1;
  args.beta2 = config_.beta2;
  args.eps = config_.eps;
  args.weight_decay = config_.weight_decay;
  args.decay_end = params_.decay_end();
  args.step = ++step_;
  args.max_grad_norm = config_.max_grad_norm;
  backend_.adamw(params_.trainable_master(), params_.grads(), params_.adam_m(), params_.adam_v(), params_.trainable_working(), norm_, args);
}

}  // namespace engine
