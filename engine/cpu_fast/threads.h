// The CPU thread count of the whole run: the fast CPU backend's per-token loops and its matrix
// products (split over the same threads, engine/cpu_fast/blas.h) use it. Set once at start
// (`engine --threads N`); 0 means all cores.
#pragma once
#include <cstdint>
#include <cstddef>
#include <functional>

namespace engine {

// n >= 0; 0 = all cores. Applies to every op started afterwards.
void set_cpu_threads(int n);
// The threads ops use now: the value set, or the number of cores when none was.
int cpu_threads();

namespace fastcpu {

// Below this much work (rough count of element operations) a loop runs on the calling thread:
// waking threads costs more.
constexpr double kSerialWork = 1 << 17;

// Runs fn(b) for every b in [0, blocks) on up to `threads` threads of the process's pool (the
// calling thread is one of them) and returns when all are done. static_split: thread i takes the
// i-th contiguous run of blocks; otherwise threads take the next block as they come free (for
// blocks of uneven cost). Either way a block is computed whole by one thread, so which thread ran
// it never changes its result. Waiting threads sleep (no spinning), so the pool costs nothing when
// the cores are shared with other work. A call from inside a block runs serially.
void run_blocks(int threads, int64_t blocks, bool static_split, const std::function<void(int64_t)>& fn);

// Runs fn(b) for b in [0, blocks) on cpu_threads() threads (static split), or on the calling
// thread when `work` is below kSerialWork.
template <typename Fn>
void parallel_blocks(int64_t blocks, double work, Fn&& fn) {
  if (blocks <= 1 || work < kSerialWork || cpu_threads() <= 1) {
    for (int64_t b = 0; b < blocks; ++b) fn(b);
    return;
  }
  run_blocks(cpu_threads(), blocks, true, fn);
}

// Runs fn(begin, end) over [0, n) in fixed pieces of `grain` items (the last may be shorter);
// work_per_item as for parallel_blocks.
template <typename Fn>
void parallel_ranges(int64_t n, int64_t grain, double work_per_item, Fn&& fn) {
  const int64_t blocks = (n + grain - 1) / grain;
  parallel_blocks(blocks, double(n) * work_per_item,
                  [&](int64_t b) { fn(b * grain, b * grain + grain < n ? b * grain + grain : n); });
}

// A per-thread scratch buffer of at least n floats; `slot` tells apart buffers used at the same time.
// Grows to the largest request once and is reused, so a step allocates nothing after the first.
// Slots 0-2 are for work inside a parallel loop (each thread its own), slots 3-5 for buffers the
// calling thread shares with the loop's threads (they must not be a slot the loop bodies use,
// since the calling thread runs loop bodies too).
float* thread_scratch(std::size_t n, int slot);

}  // namespace fastcpu

}  // namespace engine
