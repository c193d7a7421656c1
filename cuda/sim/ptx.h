// The inline-PTX wrappers of cuda/ptx.cuh for the sim build, each with the semantics the PTX ISA
// gives the instruction (sections "cp.async", "ldmatrix", "mma" / "Matrix Fragments for
// mma.m16n8k16 with floating point type", "ex2"), written from those tables, not from the kernels:
//   cp.async.cg.shared.global 16 bytes: queued per thread; commit_group closes a group; wait_group N
//     performs every group but the N most recent (so a read of the tile before the wait sees the old
//     bytes, as it may on a GPU). Both addresses must be 16-byte aligned; src-size 0 zero-fills.
//   ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: a warp collective. Lanes 8j..8j+7 give the
//     addresses of rows 0..7 of matrix j (16 bytes each, 16-byte aligned). Register j of lane t holds
//     row t/4, columns 2(t%4) and 2(t%4)+1 of matrix j (the lower column in the low half); with
//     .trans, row and column swap: elements (2(t%4), t/4) and (2(t%4)+1, t/4).
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: a warp collective; with g = lane/4 and
//     q = lane%4, A (16x16) element a_i (i = 0..7, two per register, low half first) sits at row
//     g + 8*((i/2)&1), column 2q + (i&1) + 8*(i/4); B (16x8, k by n) element b_i (i = 0..3) at
//     k = 2q + (i&1) + 8*(i/2), column g; C and D element c_i (i = 0..3) at row g + 8*(i/2), column
//     2q + (i&1). Products of bf16 are exact in f32; the sum runs in f32, k in order, onto C.
//   ex2.approx.ftz.f32: 2^x with subnormal inputs and results flushed to zero (exp2f is within the
//     instruction's documented error).
#pragma once
#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>

#include "cuda/sim/simt.h"

namespace engine::cuda {

namespace ptx_sim {
inline constexpr char kLdmatrix[] = "ldmatrix.x4", kLdmatrixTrans[] = "ldmatrix.x4.trans",
                      kMma[] = "mma.sync.m16n8k16";

inline void require_aligned16(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16)
    ::cudasim::fault(std::string(what) + ": address not 16-byte aligned");
}

inline uint16_t b16_at(const void* row, int col) {
  uint16_t v;
  std::memcpy(&v, static_cast<const unsigned char*>(row) + 2 * col, 2);
  return v;
}

struct Regs4 {
  uint32_t r[4];
};

template <bool TRANS>
void ldmatrix_x4(uint32_t (&r)[4], const void* p, const char* kind) {
  require_aligned16(p, kind);
  const Regs4 out = ::cudasim::warp_collective<const void*, Regs4>(
      0xffffffffu, kind, p, [](const void* const* const* rows, Regs4* const* regs, unsigned) {
        for (int t = 0; t < 32; ++t)
          for (int j = 0; j < 4; ++j) {
            const int a = t / 4, b = 2 * (t % 4);
            // Row addresses of matrix j come from lanes 8j..8j+7.
            const uint16_t lo = TRANS ? b16_at(*rows[8 * j + b], a) : b16_at(*rows[8 * j + a], b);
            const uint16_t hi = TRANS ? b16_at(*rows[8 * j + b + 1], a) : b16_at(*rows[8 * j + a], b + 1);
            regs[t]->r[j] = uint32_t(lo) | uint32_t(hi) << 16;
          }
      });
  for (int j = 0; j < 4; ++j) r[j] = out.r[j];
}

struct MmaIn {
  uint32_t a[4], b[2];
  float c[4];
};
struct MmaOut {
  float d[4];
};

inline float bf16_lo(uint32_t reg) { return ::cudasim::bf16_bits_to_f32(uint16_t(reg & 0xffffu)); }
inline float bf16_hi(uint32_t reg) { return ::cudasim::bf16_bits_to_f32(uint16_t(reg >> 16)); }
inline float bf16_half(uint32_t reg, int i) { return (i & 1) ? bf16_hi(reg) : bf16_lo(reg); }

inline void mma_m16n8k16(const MmaIn* const* in, MmaOut* const* out, unsigned) {
  float A[16][16], B[16][8], C[16][8];
  for (int t = 0; t < 32; ++t) {
    const int g = t / 4, q = t % 4;
    for (int i = 0; i < 8; ++i) A[g + 8 * ((i / 2) & 1)][2 * q + (i & 1) + 8 * (i / 4)] = bf16_half(in[t]->a[i / 2], i);
    for (int i = 0; i < 4; ++i) B[2 * q + (i & 1) + 8 * (i / 2)][g] = bf16_half(in[t]->b[i / 2], i);
    for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * q + (i & 1)] = in[t]->c[i];
  }
  for (int t = 0; t < 32; ++t) {
    const int g = t / 4, q = t % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i / 2), col = 2 * q + (i & 1);
      float acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      out[t]->d[i] = acc;
    }
  }
}

}  // namespace ptx_sim

inline void cp_async16(void* dst, const void* src, bool valid) {
  ptx_sim::require_aligned16(dst, "cp.async (shared destination)");
  if (valid) ptx_sim::require_aligned16(src, "cp.async (global source)");
  ::cudasim::async_copies().uncommitted.push_back({dst, valid ? src : nullptr});
}

inline void cp_async_commit() {
  ::cudasim::AsyncCopies& q = ::cudasim::async_copies();
  q.groups.push_back(std::move(q.uncommitted));
  q.uncommitted.clear();
}

template <int N>
void cp_async_wait() {
  ::cudasim::AsyncCopies& q = ::cudasim::async_copies();
  while (q.groups.size() > size_t(N)) {
    for (const ::cudasim::AsyncCopy& c : q.groups.front()) {
      if (c.src)
        std::memcpy(c.dst, c.src, 16);
      else
        std::memset(c.dst, 0, 16);
    }
    q.groups.erase(q.groups.begin());
  }
}

inline void ldsm_x4(uint32_t (&r)[4], const void* p) { ptx_sim::ldmatrix_x4<false>(r, p, ptx_sim::kLdmatrix); }
inline void ldsm_x4_trans(uint32_t (&r)[4], const void* p) {
  ptx_sim::ldmatrix_x4<true>(r, p, ptx_sim::kLdmatrixTrans);
}

inline void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  ptx_sim::MmaIn in{{a[0], a[1], a[2], a[3]}, {b0, b1}, {c[0], c[1], c[2], c[3]}};
  const ptx_sim::MmaOut out = ::cudasim::warp_collective<ptx_sim::MmaIn, ptx_sim::MmaOut>(
      0xffffffffu, ptx_sim::kMma, in,
      [](const ptx_sim::MmaIn* const* ins, ptx_sim::MmaOut* const* outs, unsigned m) { ptx_sim::mma_m16n8k16(ins, outs, m); });
  for (int i = 0; i < 4; ++i) c[i] = out.d[i];
}

inline float fast_exp2(float x) {
  if (std::fpclassify(x) == FP_SUBNORMAL) x = 0.f;
  const float y = exp2f(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? 0.f : y;
}

}  // namespace engine::cuda
