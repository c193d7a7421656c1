// Learning-rate schedules (see schedule.h): the formulas of transformers/optimization.py, written
// in the same order of operations in double so the values match HF bit for bit.
#include "engine/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace engine {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "linear") return ScheduleKind::linear;
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "constant") return ScheduleKind::constant;
  if (name == "constant_with_warmup") return ScheduleKind::constant_with_warmup;
  fail("unknown learning-rate schedule '", name, "' (known: linear, cosine, constant, constant_with_warmup)");
}

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::linear: return "linear";
    case ScheduleKind::cosine: return "cosine";
    case ScheduleKind::constant: return "constant";
    case ScheduleKind::constant_with_warmup: return "constant_with_warmup";
  }
  return "?";
}

int64_t resolve_warmup_steps(int64_t warmup_steps, double warmup_ratio, int64_t total_steps) {
  ENGINE_CHECK(warmup_steps >= 0, "warmup steps must not be negative, got ", warmup_steps);
  ENGINE_CHECK(warmup_ratio >= 0 && warmup_ratio <= 1, "warmup ratio must be in [0, 1], got ", warmup_ratio);
  if (warmup_steps > 0) return warmup_steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

LrSchedule::LrSchedule(ScheduleKind kind_, double base_lr_, int64_t warmup_steps_, int64_t total_steps_)
    : kind(kind_), base_lr(base_lr_), warmup_steps(warmup_steps_), total_steps(total_steps_) {
  ENGINE_CHECK(total_steps > 0, "learning-rate schedule: total steps must be positive, got ", total_steps);
  ENGINE_CHECK(warmup_steps >= 0 && warmup_steps <= total_steps, "learning-rate schedule: warmup of ", warmup_steps,
               " steps does not fit in ", total_steps, " total steps");
  ENGINE_CHECK(std::isfinite(base_lr) && base_lr >= 0, "learning-rate schedule: learning rate ", base_lr,
               " is not a finite non-negative number");
}

double LrSchedule::factor(int64_t step) const {
  ENGINE_CHECK(step >= 0, "learning-rate schedule: negative step ", step);
  if (kind == ScheduleKind::constant) return 1.0;
  if (step < warmup_steps) return double(step) / double(std::max<int64_t>(1, warmup_steps));
  const double decay_span = double(std::max<int64_t>(1, total_steps - warmup_steps));
  switch (kind) {
    case ScheduleKind::linear: return std::max(0.0, double(total_steps - step) / decay_span);
    case ScheduleKind::cosine: {
      constexpr double kPi = 3.141592653589793;  // Python's math.pi
      constexpr double kCycles = 0.5;            // HF's default num_cycles: half a cosine, down to 0
      const double progress = double(step - warmup_steps) / decay_span;
      return std::max(0.0, 0.5 * (1.0 + std::cos(kPi * kCycles * 2.0 * progress)));
    }
    case ScheduleKind::constant_with_warmup: return 1.0;
    case ScheduleKind::constant: return 1.0;
  }
  return 1.0;
}

}  // namespace engine
