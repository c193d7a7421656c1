// Deterministic normal (and uniform) samples for weight initialisation: a 64-bit Mersenne Twister with our own
// Box-Muller transform, because std::normal_distribution's output differs between standard
// libraries and a seed must mean the same weights everywhere.
#pragma once
#include <cmath>
#include <cstdint>
#include <random>

namespace engine {

class NormalSampler {
 public:
  explicit NormalSampler(uint64_t seed) : engine_(seed) {}
  float operator()(float stddev) {
    if (has_spare_) {
      has_spare_ = false;
      return float(spare_ * stddev);
    }
    double u1 = (double(engine_() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]: log(u1) is finite
    double u2 = double(engine_() >> 11) * 0x1.0p-53;
    double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return float(r * std::cos(2.0 * M_PI * u2) * stddev);
  }
  // Uniform in [lo, hi), from the same generator (LoRA's Kaiming-uniform A).
  double uniform(double lo, double hi) { return lo + (hi - lo) * (double(engine_() >> 11) * 0x1.0p-53); }

 private:
  std::mt19937_64 engine_;
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace engine
