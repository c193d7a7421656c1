// The embedded default fine-tune: a small randomly initialised BERT trained on the synthetic task
// (engine/train/synthetic.h) with AdamW and a linear schedule, printing the loss each step and the
// dev accuracy at the end. What `engine finetune` runs with no model and no data.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

namespace engine {

struct DefaultRunOptions {
  std::string backend = "cpu";
  int steps = 300;
  int batch_size = 32;
  float lr = 1e-3f;
  uint64_t seed = 42;
  int log_every = 1;
};

struct DefaultRunResult {
  float first_loss = 0, last_loss = 0;  // mean of the first and last 10 steps
  double dev_accuracy = 0;
  int dev_examples = 0;
  double seconds = 0;
};

DefaultRunResult run_default_finetune(const DefaultRunOptions& options, std::ostream& log);

}  // namespace engine
