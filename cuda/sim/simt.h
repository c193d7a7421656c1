// The device side of the sim: what a .cu file under nvcc gets without asking (the CUDA qualifiers,
// threadIdx and friends, vector types, barriers, warp collectives, atomics and the math
// intrinsics), for the same .cu sources compiled by the host C++ compiler.
//
// Execution model (simt.cpp): a launch runs its blocks one after another; the threads of a block
// run as cooperative fibers on one OS thread. A fiber runs until it must wait (at __syncthreads, or
// at a warp collective until every lane named in the mask has arrived) or until it returns. So:
//   - __syncthreads is a real barrier: every thread of the block must arrive; a thread that returns
//     while others wait at a barrier, or a barrier nobody can complete, is a fault (divergence).
//   - warp collectives (__shfl*_sync, __ballot_sync, __syncwarp, mma.sync, ldmatrix: see ptx.h)
//     complete when all lanes of the mask have arrived at the same collective with the same mask;
//     any other meeting is a fault, not a silently computed value.
//   - __shared__ variables are function statics (one per kernel instantiation, reused by the next
//     block); dynamic shared memory is a fresh heap buffer of exactly the launch's size per block,
//     so AddressSanitizer sees an overrun of either.
// Faults throw cudasim::DeviceFault out of the launch, with the kernel, block and thread.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

// ---- qualifiers ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __shared__ static
#define __constant__ static

// ---- vector types (the alignment is the point: a misaligned 16-byte access must show) ----
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) int2 {
  int x, y;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }

namespace cudasim {

constexpr int kWarpSize = 32;

// A fault a GPU would raise (or that CUDA leaves undefined and the sim refuses to guess).
struct DeviceFault : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Stops the running kernel with a fault naming the kernel, block and thread.
[[noreturn]] void fault(const std::string& what);

// The running thread, as the scheduler set it.
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
int lane_id();

void syncthreads();

// The generic warp collective. Every lane in `mask` calls it with the same `kind` and `mask`; when
// the last one arrives, `fn(ctx, in, out, mask)` runs once with each lane's in/out (null outside
// the mask), then all of them continue. `kind` is compared by address.
using CollectiveFn = void (*)(void* ctx, const void* const* in, void* const* out, unsigned mask);
void warp_collective(unsigned mask, const char* kind, const void* in, void* out, CollectiveFn fn, void* ctx);

// Typed form: f(const In* const in[32], Out* const out[32], unsigned mask).
template <typename In, typename Out, typename F>
Out warp_collective(unsigned mask, const char* kind, const In& in, F&& f) {
  Out out{};
  auto trampoline = [](void* ctx, const void* const* ins, void* const* outs, unsigned m) {
    (*static_cast<std::remove_reference_t<F>*>(ctx))(reinterpret_cast<const In* const*>(ins),
                                                     reinterpret_cast<Out* const*>(outs), m);
  };
  warp_collective(mask, kind, &in, &out, trampoline, const_cast<void*>(static_cast<const void*>(&f)));
  return out;
}

// Dynamic shared memory of the running block (see cuda/launch.cuh: dynamic_smem()).
unsigned char* dynamic_smem();

// cp.async bookkeeping of the running thread (ptx.h): 16-byte copies issued since the last commit,
// and the committed groups, oldest first. A copy happens when a wait retires its group.
struct AsyncCopy {
  void* dst;
  const void* src;  // null: zero-fill (src-size 0)
};
struct AsyncCopies {
  std::vector<AsyncCopy> uncommitted;
  std::vector<std::vector<AsyncCopy>> groups;
};
AsyncCopies& async_copies();

// ---- shuffles ----
extern const char kVote[], kSyncwarp[];
// One collective kind per value type, so lanes shuffling different types never meet.
template <typename T>
struct ShflKind {
  static constexpr char name[] = "__shfl_sync";
};

// Lane `src` of each lane's own segment of `width`, the value of every lane named in the mask.
template <typename T>
struct ShflIn {
  T v;
  int src;  // absolute source lane, or -1: keep own value
};

template <typename T>
T shfl(unsigned mask, T v, int src) {
  return warp_collective<ShflIn<T>, T>(mask, ShflKind<T>::name, ShflIn<T>{v, src},
                                       [](const ShflIn<T>* const* in, T* const* out, unsigned m) {
                                         for (int l = 0; l < kWarpSize; ++l) {
                                           if (!out[l]) continue;
                                           const int s = in[l]->src < 0 ? l : in[l]->src;
                                           if (!(m >> s & 1u))
                                             fault("__shfl_sync: lane " + std::to_string(l) + " reads lane " +
                                                   std::to_string(s) + ", which is not in the mask");
                                           *out[l] = in[s]->v;
                                         }
                                       });
}

}  // namespace cudasim

#define threadIdx (::cudasim::thread_idx())
#define blockIdx (::cudasim::block_idx())
#define blockDim (::cudasim::block_dim())
#define gridDim (::cudasim::grid_dim())
constexpr int warpSize = 32;

inline void __syncthreads() { ::cudasim::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::cudasim::warp_collective<int, int>(mask, ::cudasim::kSyncwarp, 0, [](const int* const*, int* const*, unsigned) {});
}
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  const int lane = ::cudasim::lane_id();
  return ::cudasim::shfl(mask, v, (lane & ~(width - 1)) + (src_lane & (width - 1)));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = ::cudasim::lane_id(), src = lane ^ lane_mask;
  // A source in a later segment of `width` lanes gives the caller its own value (CUDA docs).
  return ::cudasim::shfl(mask, v, src / width > lane / width ? -1 : src);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::cudasim::lane_id(), src = lane + int(delta);
  return ::cudasim::shfl(mask, v, src / width != lane / width ? -1 : src);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::cudasim::lane_id(), src = lane - int(delta);
  return ::cudasim::shfl(mask, v, src < 0 || src / width != lane / width ? -1 : src);
}

inline unsigned __ballot_sync(unsigned mask, int pred) {
  return ::cudasim::warp_collective<int, unsigned>(mask, ::cudasim::kVote, pred != 0,
                                                   [](const int* const* in, unsigned* const* out, unsigned) {
                                                     unsigned bits = 0;
                                                     for (int l = 0; l < 32; ++l)
                                                       if (in[l] && *in[l]) bits |= 1u << l;
                                                     for (int l = 0; l < 32; ++l)
                                                       if (out[l]) *out[l] = bits;
                                                   });
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// ---- atomics: one OS thread runs every fiber, so a plain read-modify-write is atomic ----
template <typename T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  const T old = *p;
  *p = old < v ? v : old;
  return old;
}
template <typename T>
T atomicMin(T* p, T v) {
  const T old = *p;
  *p = v < old ? v : old;
  return old;
}
template <typename T>
T atomicExch(T* p, T v) {
  const T old = *p;
  *p = v;
  return old;
}
template <typename T>
T atomicCAS(T* p, T compare, T v) {
  const T old = *p;
  if (old == compare) *p = v;
  return old;
}

// ---- math and bit intrinsics ----
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, 4);
  return i;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
template <typename T>
T __ldg(const T* p) {
  return *p;
}
inline size_t __cvta_generic_to_shared(const void* p) { return reinterpret_cast<size_t>(p); }
[[noreturn]] inline void __trap() { ::cudasim::fault("__trap()"); }
