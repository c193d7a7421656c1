// The run's CPU thread count and the thread pool the fast CPU backend's loops run on (threads.h).
// A plain pool rather than OpenMP: OpenMP's idle threads spin between parallel regions (libgomp's
// default wait policy, settable only by environment variable before start), which on a machine
// whose cores are shared with other work cost a 2-layer toy model's training 3x the CPU time of the
// single-threaded reference; these workers sleep on a condition variable between jobs.
#include "engine/cpu_fast/threads.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/error.h"

namespace engine {

namespace {
std::atomic<int> g_threads{0};  // 0: all cores

int cores() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}
}  // namespace

void set_cpu_threads(int n) {
  ENGINE_CHECK(n >= 0, "--threads must be >= 0 (0: all cores), got ", n);
  g_threads = n;
}

int cpu_threads() {
  const int n = g_threads;
  return n > 0 ? n : cores();
}

namespace fastcpu {

namespace {

thread_local bool t_in_block = false;  // this thread is running a block of run_blocks()

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& w : workers_) w.join();
  }

  void run(int threads, int64_t blocks, bool static_split, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> one_job(job_mu_);  // one job at a time, whoever calls
    grow(threads - 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      blocks_ = blocks;
      team_ = threads;
      static_split_ = static_split;
      next_ = 0;
      pending_ = threads - 1;
      ++generation_;
    }
    start_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  void grow(int workers) {
    while (int(workers_.size()) < workers) {
      const int index = int(workers_.size()) + 1;
      workers_.emplace_back([this, index] { loop(index); });
    }
  }

  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        start_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (index >= team_) continue;  // not part of this job
      }
      work(index);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  // Participant `index` of the team does its blocks.
  void work(int index) {
    t_in_block = true;
    if (static_split_) {
      const int64_t b0 = blocks_ * index / team_, b1 = blocks_ * (index + 1) / team_;
      for (int64_t b = b0; b < b1; ++b) (*fn_)(b);
    } else {
      for (int64_t b = next_++; b < blocks_; b = next_++) (*fn_)(b);
    }
    t_in_block = false;
  }

  std::mutex job_mu_;
  std::mutex mu_;
  std::condition_variable start_, done_;
  std::vector<std::thread> workers_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  // The current job (written under mu_ before the generation changes).
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t blocks_ = 0;
  int team_ = 1;
  bool static_split_ = true;
  std::atomic<int64_t> next_{0};
  int pending_ = 0;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void run_blocks(int threads, int64_t blocks, bool static_split, const std::function<void(int64_t)>& fn) {
  if (t_in_block || threads <= 1 || blocks <= 1) {
    for (int64_t b = 0; b < blocks; ++b) fn(b);
    return;
  }
  pool().run(int(std::min<int64_t>(threads, blocks)), blocks, static_split, fn);
}

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
