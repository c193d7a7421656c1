// Learning-rate schedules with Hugging Face's semantics (transformers/optimization.py, get_scheduler
// with a LambdaLR): the learning rate of optimizer step s (0-based: the first update uses s = 0) is
// base_lr * factor(s), with W warmup steps and N total steps:
//   warmup (s < W, every kind but constant)  factor = s / max(1, W)   (so the first update has lr 0
//                                            when there is any warmup)
//   linear                                   factor = max(0, (N - s) / max(1, N - W))
//   cosine                                   p = (s - W) / max(1, N - W);
//                                            factor = max(0, 0.5 (1 + cos(pi * 2 * 0.5 * p)))
//   constant_with_warmup                     factor = 1
//   constant                                 factor = 1 always: HF's "constant" ignores warmup
// Warmup given as a ratio r of the total becomes ceil(r * N) steps, with the same double product
// as Python's math.ceil(num_training_steps * ratio) (so 0.07 * 100 gives 8, as HF does).
#pragma once
#include <cstdint>
#include <string>

namespace engine {

enum class ScheduleKind { linear, cosine, constant, constant_with_warmup };

// "linear", "cosine", "constant", "constant_with_warmup"; anything else throws.
ScheduleKind parse_schedule_kind(const std::string& name);
const char* schedule_kind_name(ScheduleKind kind);

// HF TrainingArguments: warmup_steps if it is positive, else ceil(total_steps * warmup_ratio).
int64_t resolve_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total_steps);

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::linear;
  double base_lr = 0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;

  // Checks the numbers (positive total, warmup in [0, total], finite non-negative lr).
  LrSchedule(ScheduleKind kind, double base_lr, int64_t warmup_steps, int64_t total_steps);

  double factor(int64_t step) const;  // the LambdaLR multiplier at 0-based optimizer step
  double lr_at(int64_t step) const { return base_lr * factor(step); }
};

}  // namespace engine
