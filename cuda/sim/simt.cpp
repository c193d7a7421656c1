// The SIMT scheduler of the sim (see simt.h for the model): blocks in turn, the threads of a block as
// cooperative fibers, barriers and warp collectives with their real meeting rules.
//
// Fibers are Boost.Context's (fcontext: a context switch is a few register moves, about 10 ns,
// where ucontext's swapcontext makes a signal-mask system call on every switch; the flash attention
// tests switch tens of millions of times). Stacks come from a pool mapped once, with a guard page
// under each; under AddressSanitizer every switch is announced to it so that it tracks the stack in
// use.
#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/fiber.hpp>
#include <boost/context/stack_context.hpp>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <vector>

#include "cuda/sim/launch.h"
#include "cuda/sim/simt.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define SIM_ASAN 1
#else
#define SIM_ASAN 0
#endif

namespace ctx = boost::context;

namespace cudasim {

const char kVote[] = "__ballot_sync";
const char kSyncwarp[] = "__syncwarp";

namespace {

constexpr size_t kStackBytes = size_t(256) << 10;  // per thread: ASan's redzones make frames large
constexpr int kMaxThreads = 1024;

// ---- stacks ----

class StackPool {
 public:
  ctx::stack_context take() {
    if (free_.empty()) grow();
    ctx::stack_context sc = free_.back();
    free_.pop_back();
    return sc;
  }
  void give(const ctx::stack_context& sc) { free_.push_back(sc); }

 private:
  void grow() {
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    void* base = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
      std::fprintf(stderr, "cudasim: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(base, page, PROT_NONE);  // guard page: stacks grow down into it
    ctx::stack_context sc;
    sc.size = kStackBytes;
    sc.sp = static_cast<char*>(base) + page + kStackBytes;
    free_.push_back(sc);
  }
  std::vector<ctx::stack_context> free_;
};

StackPool& stack_pool() {
  static StackPool pool;
  return pool;
}

// ---- block state ----

enum class Wait { none, barrier, warp };

struct Thread {
  uint3 idx{};
  int linear = 0, lane = 0, warp = 0;
  ctx::fiber fiber;  // the thread while it is suspended
  ctx::fiber sched;  // the scheduler while the thread runs
  ctx::stack_context stack{};
  bool started = false, done = false;
  Wait wait = Wait::none;
  const char* waiting_at = "";
  void* asan_fake_stack = nullptr;
  AsyncCopies copies;
};

// A warp collective in progress: the lanes of `mask` that have arrived so far.
struct Meeting {
  unsigned mask = 0, arrived = 0;
  const char* kind = nullptr;
  const void* in[kWarpSize] = {};
  void* out[kWarpSize] = {};
};

struct Warp {
  unsigned lanes = 0;   // lanes that exist (a block's last warp may be partial)
  unsigned exited = 0;  // lanes whose thread has returned
  std::vector<Meeting> open;
};

struct Block {
  const LaunchConfig* config = nullptr;
  uint3 idx{};
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  unsigned char* smem = nullptr;
  int at_barrier = 0, exited = 0;
  std::exception_ptr failure;
  // The scheduler's own stack, for AddressSanitizer's bookkeeping of switches back to it.
  const void* main_stack_bottom = nullptr;
  size_t main_stack_size = 0;
};

// The running block and thread. Plain globals, not thread_local: one host thread runs the sim (a
// launch from a second host thread would be a bug in a test), and a TLS lookup on every threadIdx
// was a tenth of the sim's time.
Block* t_block = nullptr;
Thread* t_thread = nullptr;

Block& block() { return *t_block; }
Thread& self() { return *t_thread; }

std::string where() {
  std::ostringstream s;
  const Block& b = block();
  s << b.config->name << " block (" << b.idx.x << "," << b.idx.y << "," << b.idx.z << ")";
  if (t_thread) s << " thread (" << self().idx.x << "," << self().idx.y << "," << self().idx.z << ")";
  return s.str();
}

// ---- switching ----

void switch_to_scheduler() {
  Thread& t = self();
#if SIM_ASAN
  __sanitizer_start_switch_fiber(&t.asan_fake_stack, block().main_stack_bottom, block().main_stack_size);
#endif
  t.sched = std::move(t.sched).resume();
#if SIM_ASAN
  __sanitizer_finish_switch_fiber(t.asan_fake_stack, nullptr, nullptr);
#endif
}

void wait_here(Wait kind, const char* at) {
  Thread& t = self();
  t.wait = kind;
  t.waiting_at = at;
  switch_to_scheduler();
}

void release(Thread& t) {
  t.wait = Wait::none;
  t.waiting_at = "";
}

std::string lanes_text(unsigned bits) {
  std::string s;
  for (int l = 0; l < kWarpSize; ++l)
    if (bits >> l & 1u) s += (s.empty() ? "" : ",") + std::to_string(l);
  return "{" + s + "}";
}

[[noreturn]] __attribute__((noinline, cold)) void fault_returned_during_collective(int lane, const Meeting& m) {
  fault(std::string("lane ") + std::to_string(lane) + " returned while lanes " + lanes_text(m.arrived) +
        " wait for it at " + m.kind + " (mask " + lanes_text(m.mask) + ")");
}
[[noreturn]] __attribute__((noinline, cold)) void fault_returned_during_barrier(int waiting) {
  fault("thread returned while " + std::to_string(waiting) + " threads of its block wait at __syncthreads");
}

// A thread that returns while others wait for it at a barrier or a collective is a divergence.
void check_exit(Thread& t) {
  Block& b = block();
  Warp& w = b.warps[t.warp];
  const unsigned bit = 1u << t.lane;
  w.exited |= bit;
  ++b.exited;
  for (const Meeting& m : w.open)
    if (m.mask & bit) fault_returned_during_collective(t.lane, m);
  if (b.at_barrier > 0) fault_returned_during_barrier(b.at_barrier);
}

void run_thread(Thread& t, const std::function<void()>& body) {
  try {
    body();
    check_exit(t);
  } catch (...) {
    if (!block().failure) block().failure = std::current_exception();
  }
  t.done = true;
}

void resume(Block& b, Thread& t, const std::function<void()>& body) {
  t_thread = &t;
  if (!t.started) {
    t.started = true;
    t.stack = stack_pool().take();
    struct OneStack {
      ctx::stack_context sc;
      ctx::stack_context allocate() { return sc; }
      void deallocate(ctx::stack_context&) {}  // the pool owns it; returned after the block
    };
    t.fiber = ctx::fiber(std::allocator_arg, OneStack{t.stack}, [&b, &t, &body](ctx::fiber&& sched) {
      t.sched = std::move(sched);
#if SIM_ASAN
      __sanitizer_finish_switch_fiber(nullptr, &b.main_stack_bottom, &b.main_stack_size);
#endif
      run_thread(t, body);
#if SIM_ASAN
      __sanitizer_start_switch_fiber(nullptr, b.main_stack_bottom, b.main_stack_size);
#endif
      return std::move(t.sched);
    });
  }
#if SIM_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, static_cast<char*>(t.stack.sp) - t.stack.size, t.stack.size);
#endif
  t.fiber = std::move(t.fiber).resume();
#if SIM_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  t_thread = nullptr;
}

std::string deadlock_report(const Block& b) {
  std::ostringstream s;
  s << "no thread can go on (barrier or collective divergence):";
  std::string last;
  int from = -1;
  auto flush = [&](int to) {
    if (from >= 0) s << "\n  threads " << from << ".." << to << ": waiting at " << last;
  };
  for (const Thread& t : b.threads) {
    const std::string state = t.done ? "returned" : t.waiting_at;
    if (state != last || from < 0) {
      flush(t.linear - 1);
      from = t.linear;
      last = state;
    }
  }
  flush(int(b.threads.size()) - 1);
  return s.str();
}

// Threads run until they wait, in thread order in even blocks and in reverse order in odd ones: a
// read of another thread's shared-memory write with no barrier between then goes wrong in one of the
// two (it sees the poison, or a value from before), whichever way the dependency points.
void run_block(Block& b, const std::function<void()>& body) {
  const bool reverse = (b.idx.x + b.idx.y + b.idx.z) % 2 == 1;
  const size_t n = b.threads.size();
  for (;;) {
    bool ran = false, all_done = true;
    for (size_t i = 0; i < n; ++i) {
      Thread& t = b.threads[reverse ? n - 1 - i : i];
      if (t.done) continue;
      all_done = false;
      if (t.wait != Wait::none) continue;
      resume(b, t, body);
      ran = true;
      if (b.failure) return;
    }
    if (all_done) return;
    if (!ran) {
      try {
        fault(deadlock_report(b));
      } catch (...) {
        b.failure = std::current_exception();
      }
      return;
    }
  }
}

void setup_block(Block& b, const LaunchConfig& c, uint3 idx) {
  b.idx = idx;
  const int n = int(c.block.x * c.block.y * c.block.z);
  b.threads.resize(size_t(n));
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[size_t(i)];
    t.started = t.done = false;
    t.wait = Wait::none;
    t.waiting_at = "";
    t.copies.uncommitted.clear();
    t.copies.groups.clear();
    t.linear = i;
    t.lane = i % kWarpSize;
    t.warp = i / kWarpSize;
    t.idx = uint3{unsigned(i) % c.block.x, unsigned(i) / c.block.x % c.block.y, unsigned(i) / (c.block.x * c.block.y)};
  }
  b.warps.assign(size_t((n + kWarpSize - 1) / kWarpSize), Warp{});
  for (int i = 0; i < n; ++i) b.warps[size_t(i / kWarpSize)].lanes |= 1u << (i % kWarpSize);
  b.at_barrier = b.exited = 0;
}

// Returns every stack to the pool. After a fault, threads still suspended are abandoned, not unwound:
// their fibers and stacks are kept forever (a few MiB, only when a test plants a bug), which keeps
// AddressSanitizer's view of the stacks simple.
void teardown_block(Block& b) {
  static std::vector<ctx::fiber>* abandoned = new std::vector<ctx::fiber>;
  for (Thread& t : b.threads) {
    if (t.fiber) {
      abandoned->push_back(std::move(t.fiber));
      continue;
    }
    if (t.started) stack_pool().give(t.stack);
  }
}

}  // namespace

[[noreturn]] __attribute__((noinline, cold)) static void fault_barrier_after_return(int exited) {
  fault("__syncthreads after " + std::to_string(exited) + " threads of the block returned");
}

// ---- the device API of simt.h ----

void fault(const std::string& what) {
  throw DeviceFault("cudasim: " + (t_block ? where() + ": " : std::string()) + what);
}

const uint3& thread_idx() { return self().idx; }
const uint3& block_idx() { return block().idx; }
const dim3& block_dim() { return block().config->block; }
const dim3& grid_dim() { return block().config->grid; }
int lane_id() { return self().lane; }
unsigned char* dynamic_smem() { return block().smem; }
AsyncCopies& async_copies() { return self().copies; }

void syncthreads() {
  Block& b = block();
  if (b.exited > 0) fault_barrier_after_return(b.exited);
  if (++b.at_barrier == int(b.threads.size())) {
    b.at_barrier = 0;
    for (Thread& t : b.threads)
      if (t.wait == Wait::barrier) release(t);
    return;
  }
  wait_here(Wait::barrier, "__syncthreads");
}

namespace {

// The fault paths of warp_collective, out of line: built inline, their strings gave the hot path a
// stack frame that AddressSanitizer poisoned and cleared on every call (a fifth of the sim's time).
[[noreturn]] __attribute__((noinline, cold)) void fault_lane_not_in_mask(const char* kind, unsigned mask) {
  fault(std::string(kind) + " with mask " + lanes_text(mask) + " that does not name the calling lane");
}
[[noreturn]] __attribute__((noinline, cold)) void fault_missing_lanes(const char* kind, unsigned mask) {
  fault(std::string(kind) + " mask " + lanes_text(mask) + " names lanes the block does not have");
}
[[noreturn]] __attribute__((noinline, cold)) void fault_divergence(int lane, const char* kind, unsigned mask,
                                                                  const Meeting& m) {
  fault(std::string("warp divergence: lane ") + std::to_string(lane) + " at " + kind + " (mask " +
        lanes_text(mask) + ") while lanes " + lanes_text(m.arrived) + " wait at " + m.kind + " (mask " +
        lanes_text(m.mask) + ")");
}
[[noreturn]] __attribute__((noinline, cold)) void fault_returned_lanes(const char* kind, unsigned mask,
                                                                      unsigned exited) {
  fault(std::string(kind) + " mask " + lanes_text(mask) + " names lanes that returned: " +
        lanes_text(mask & exited));
}

}  // namespace

void warp_collective(unsigned mask, const char* kind, const void* in, void* out, CollectiveFn fn, void* fn_ctx) {
  Block& b = block();
  Thread& t = self();
  Warp& w = b.warps[t.warp];
  const unsigned bit = 1u << t.lane;
  if (!(mask & bit)) fault_lane_not_in_mask(kind, mask);
  if (mask & ~w.lanes) fault_missing_lanes(kind, mask);
  Meeting* m = nullptr;
  for (Meeting& open : w.open)
    if (open.mask & mask) m = &open;
  if (m && (m->mask != mask || m->kind != kind)) fault_divergence(t.lane, kind, mask, *m);
  if (!m) {
    if (mask & w.exited) fault_returned_lanes(kind, mask, w.exited);
    m = &w.open.emplace_back();
    m->mask = mask;
    m->kind = kind;
  }
  m->in[t.lane] = in;
  m->out[t.lane] = out;
  m->arrived |= bit;
  if (m->arrived != mask) {
    wait_here(Wait::warp, kind);
    return;
  }
  // Last to arrive: compute for everyone, then let them go.
  fn(fn_ctx, m->in, m->out, mask);
  w.open.erase(w.open.begin() + (m - w.open.data()));
  for (int l = 0; l < kWarpSize; ++l)
    if ((mask >> l & 1u) && l != t.lane) release(b.threads[size_t(t.warp * kWarpSize + l)]);
}

// ---- launches (launch.h) ----

std::string kernel_name(const char* pretty) {
  std::string s(pretty);
  const std::string key = "Kernel = ";
  size_t at = s.find(key);
  if (at == std::string::npos) return s;
  at += key.size();
  size_t end = at;
  int depth = 0;
  for (; end < s.size(); ++end) {
    const char c = s[end];
    if (c == '<' || c == '(') ++depth;
    if (c == '>' || c == ')') --depth;
    if (depth == 0 && (c == ';' || c == ']')) break;
  }
  return s.substr(at, end - at);
}

bool launch_allowed(const LaunchConfig& c) {
  const unsigned long long threads = 1ull * c.block.x * c.block.y * c.block.z;
  const bool shape_ok = c.grid.x >= 1 && c.grid.x <= 0x7fffffffu && c.grid.y >= 1 && c.grid.y <= 65535 &&
                        c.grid.z >= 1 && c.grid.z <= 65535 && c.block.x >= 1 && c.block.y >= 1 && c.block.z >= 1 &&
                        c.block.x <= 1024 && c.block.y <= 1024 && c.block.z <= 64 && threads <= kMaxThreads;
  if (!shape_ok) {
    std::fprintf(stderr, "cudasim: %s: launch refused: grid (%u,%u,%u), block (%u,%u,%u) is over sm_90's limits\n",
                 c.name.c_str(), c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z);
    set_last_error(cudaErrorInvalidConfiguration);
    return false;
  }
  if (c.smem > max_dynamic_smem(c.func)) {
    std::fprintf(stderr, "cudasim: %s: launch refused: %zu bytes of dynamic shared memory, %zu allowed\n",
                 c.name.c_str(), c.smem, max_dynamic_smem(c.func));
    set_last_error(cudaErrorInvalidValue);
    return false;
  }
  return true;
}

void run_grid(const LaunchConfig& c, const std::function<void()>& body) {
  Block b;
  b.config = &c;
  Block* outer = t_block;
  t_block = &b;
  for (unsigned z = 0; z < c.grid.z && !b.failure; ++z)
    for (unsigned y = 0; y < c.grid.y && !b.failure; ++y)
      for (unsigned x = 0; x < c.grid.x && !b.failure; ++x) {
        setup_block(b, c, uint3{x, y, z});
        // Exactly the launch's bytes, filled with NaN bytes: an overrun is ASan's, a read before a
        // write is a NaN in the result.
        b.smem = c.smem ? static_cast<unsigned char*>(std::malloc(c.smem)) : nullptr;
        if (c.smem) std::memset(b.smem, 0xff, c.smem);
        run_block(b, body);
        teardown_block(b);
        std::free(b.smem);
        b.smem = nullptr;
      }
  t_block = outer;
  if (b.failure) std::rethrow_exception(b.failure);
}

}  // namespace cudasim
