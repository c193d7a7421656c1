// The CPU thread count of the whole run: the fast CPU backend's per-token loops and its matrix
// products (split over OpenMP threads, engine/cpu_fast/blas.h) use it. Set once at start
// (`engine --threads N`); 0 means all cores.
#pragma once
#include <cstdint>
#include <cstddef>

namespace engine {

// n >= 0; 0 = all cores. Applies to every op started afterwards.
void set_cpu_threads(int n);
// The threads ops use now: the value set, or the number of cores when none was.
int cpu_threads();

namespace fastcpu {

// Runs fn(b) for b in [0, blocks) on cpu_threads() OpenMP threads, each taking one contiguous run of
// blocks (static schedule): which thread computes a block never changes what the block computes.
template <typename Fn>
void parallel_blocks(int64_t blocks, Fn&& fn) {
  const int threads = cpu_threads();
#pragma omp parallel for schedule(static) num_threads(threads) if (blocks > 1 && threads > 1)
  for (int64_t b = 0; b < blocks; ++b) fn(b);
}

// Runs fn(begin, end) over [0, n) in fixed pieces of `grain` items (the last may be shorter).
template <typename Fn>
void parallel_ranges(int64_t n, int64_t grain, Fn&& fn) {
  const int64_t blocks = (n + grain - 1) / grain;
  parallel_blocks(blocks, [&](int64_t b) { fn(b * grain, b * grain + grain < n ? b * grain + grain : n); });
}

// A per-thread scratch buffer of at least n floats; `slot` tells apart buffers used at the same time.
// Grows to the largest request once and is reused, so a step allocates nothing after the first.
// Slots 0-2 are for work inside a parallel loop (each thread its own), slots 3-5 for buffers the
// calling thread shares with the loop's threads (they must not be a slot the loop bodies use,
// since the calling thread runs loop bodies too).
float* thread_scratch(std::size_t n, int slot);

}  // namespace fastcpu

}  // namespace engine
