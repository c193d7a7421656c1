// The run's CPU thread count (threads.h), applied to OpenMP loops by the ops (num_threads clauses).
#include "engine/cpu_fast/threads.h"

#include <omp.h>

#include <atomic>
#include <vector>

#include "engine/error.h"

namespace engine {

namespace {
std::atomic<int> g_threads{0};  // 0: all cores
}

void set_cpu_threads(int n) {
  ENGINE_CHECK(n >= 0, "--threads must be >= 0 (0: all cores), got ", n);
  g_threads = n;
}

int cpu_threads() {
  const int n = g_threads;
  return n > 0 ? n : omp_get_num_procs();
}

namespace fastcpu {
float* thread_scratch(size_t n, int slot) {
  constexpr int kSlots = 6;
  ENGINE_CHECK(slot >= 0 && slot < kSlots, "thread_scratch: slot ", slot, " outside [0, ", kSlots, ")");
  thread_local std::vector<float> buffers[kSlots];
  std::vector<float>& b = buffers[slot];
  if (b.size() < n) b.resize(n);
  return b.data();
}
}  // namespace fastcpu

}  // namespace engine
