// Optimizer: AdamW with decoupled weight decay over a model's flat parameter buffer, with global
// gradient-norm clipping, in two launches (norm, update) and no host round trip. The gradient norm
// of the last step can be read back when logging, and a non-finite norm is how a divergent step is
// detected (the update of such a step is skipped when the trainer asks).
#pragma once
#include <cstdint>

#include "engine/arena.h"
#include "engine/model/params.h"

namespace engine {

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.f;
  float max_grad_norm = 1.f;  // <= 0: no clipping
};

class Optimizer {
 public:
  Optimizer(Backend& backend, ParamStore& params, const AdamWConfig& config);

  // Computes the global gradient norm on the device (call before step()).
  void compute_grad_norm();
  // Reads the norm computed by compute_grad_norm() (a 4-byte device-to-host copy).
  float grad_norm();
  // Applies one AdamW update with learning rate lr; the step counter advances.
  void step(float lr);

  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  const AdamWConfig& config() const { return config_; }

 private:
  Backend& backend_;
  ParamStore& params_;
  AdamWConfig config_;
  Arena arena_;
  Tensor norm_;
  int64_t step_ = 0;
};

}  // namespace engine
