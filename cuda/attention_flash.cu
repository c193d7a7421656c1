// "flash": the hand-written fused attention over the packed (varlen) layout, FlashAttention-2 style.
//
// Computes, per sequence b (rows cu_seqlens[b] .. cu_seqlens[b+1]-1) and head h, with no mask but
// the sequence boundary:
//   S = scale * Q K^T,  lse = logsumexp(S) per row,  P = exp(S - lse),  out = dropout(P) V
// and the backward dQ, dK, dV, recomputing P from the saved lse (nothing of size L x L is stored).
//
// Layout: qkv bf16 [T, 3H] = [q | k | v], head h at columns h*d .. h*d+d-1 of each part, read in
// place (no transposes); out bf16 [T, H]; lse f32 [T, heads] (natural log); dqkv bf16 [T, 3H].
// Rows outside [cu_seqlens[b], cu_seqlens[b+1]) are never read or written: partial tiles are
// zero-filled by cp.async with a source size of 0 and their scores masked.
//
// Precision: bf16 operands on tensor cores (mma.sync m16n8k16, fp32 accumulate); scores, the online
// softmax (max, sum, rescale) and lse in fp32 with exp2 on pre-scaled scores; P and dS rounded to
// bf16 only as operands of the next product. Dropout on probabilities uses engine/philox.h with
// attention_dropout_index(global query token, head, heads, key index in the sequence), exactly like
// the CPU reference, so both drop the same elements; backward regenerates the mask.
//
// Kernels (head dims 32, 64, 128; 4 warps per CTA; grid = (tiles of 64 rows, heads, sequences)):
//   flash_fwd:       one CTA per 64 query rows; each warp owns 16 rows; K/V tiles of 64 keys
//                    double-buffered with cp.async; online softmax kept in registers.
//   flash_bwd_dot:   Dsum[t, h] = rowsum(dO * O) (the softmax-backward correction), f32 workspace.
//   flash_bwd_dkdv:  one CTA per 64 keys; each warp owns 16 keys and loops over all query tiles of
//                    the sequence, accumulating dK and dV in registers (works on S^T, so P^T and
//                    dS^T come out of one product directly as the A operand of the next).
//   flash_bwd_dq:    one CTA per 64 query rows, loops over key tiles, accumulates dQ in registers.
// dQ is computed by its own kernel instead of float atomics from the dK/dV kernel: two extra
// products per tile (S and dP recomputed), but every output element is written by exactly one
// thread in a fixed order, so results are bitwise deterministic run to run.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention.h"
#include "cuda/launch.cuh"
#include "cuda/ptx.cuh"
#include "engine/error.h"
#include "engine/philox.h"

namespace engine::cuda {
namespace {

typedef __nv_bfloat16 bf16;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kTile = 64;  // rows of a query tile and keys of a key tile (CTA granularity)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Shared-memory tiles are [rows][D + 8] bf16: the 16-byte pad moves consecutive rows 4 banks apart,
// so the 8 row addresses of an ldmatrix phase and the 4-byte fragment stores are conflict-free.
template <int D>
struct Pad {
  static constexpr int ld = D + 8;
};

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo: the lower column
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---------------------------------------------------------------------------------------------
// Fragment loaders. Fragment layout of m16n8k16 (g = lane / 4, q = lane % 4):
//   A (16x16): a0 = (row g, k 2q..2q+1), a1 = (g+8, 2q..), a2 = (g, 8+2q..), a3 = (g+8, 8+2q..)
//   B (16x8):  b0 = (k 2q..2q+1, col g), b1 = (k 8+2q.., col g)
//   C (16x8):  c0,c1 = (row g, cols 2q, 2q+1), c2,c3 = (row g+8, cols 2q, 2q+1)
// ---------------------------------------------------------------------------------------------

// A operand rows [row0, row0+16), k [k0, k0+16) of a row-major smem tile.
template <int LD>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16* s, int row0, int k0, int lane) {
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4(a, s + (row0 + (i & 1) * 8 + r) * LD + k0 + (i >> 1) * 8);
}

// B operands of two n-tiles (n0, n0+8) at k [k0, k0+16) from a tile stored [n][k] (B^T row-major,
// e.g. K for Q K^T): b[0], b[1] for n-tile n0 and b[2], b[3] for n-tile n0+8.
template <int LD>
__device__ __forceinline__ void load_b_nk(uint32_t (&b)[4], const bf16* s, int n0, int k0, int lane) {
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4(b, s + (n0 + (i >> 1) * 8 + r) * LD + k0 + (i & 1) * 8);
}

// Same two n-tiles from a tile stored [k][n] (e.g. V for P V): ldmatrix.trans does the transpose.
template <int LD>
__device__ __forceinline__ void load_b_kn(uint32_t (&b)[4], const bf16* s, int k0, int n0, int lane) {
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4_trans(b, s + (k0 + (i & 1) * 8 + r) * LD + n0 + (i >> 1) * 8);
}

// acc[NT][4] (16 x 8*NT) += A(16 x 16*KSTEPS, rows row0.. of sA) * B, with B stored [n][k] in sB.
template <int LD_A, int LD_B, int KSTEPS, int NT>
__device__ __forceinline__ void mma_a_smem_b_nk(float (&acc)[NT][4], const bf16* sA, int row0, const bf16* sB,
                                                int lane) {
#pragma unroll
  for (int kk = 0; kk < KSTEPS; ++kk) {
    uint32_t a[4];
    load_a<LD_A>(a, sA, row0, kk * 16, lane);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_b_nk<LD_B>(b, sB, np * 16, kk * 16, lane);
      mma_bf16(acc[2 * np], a, b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a, b[2], b[3]);
    }
  }
}

// C-layout fragments c[2*KSTEPS][4] (16 x 16*KSTEPS, f32) as bf16 A fragments a[KSTEPS][4]: two
// C tiles of 16x8 side by side are exactly one A tile of 16x16, so no data moves between lanes.
template <int KSTEPS>
__device__ __forceinline__ void cfrag_to_a(uint32_t (&a)[KSTEPS][4], const float (&c)[2 * KSTEPS][4]) {
#pragma unroll
  for (int kk = 0; kk < KSTEPS; ++kk) {
    a[kk][0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
    a[kk][1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
    a[kk][2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[kk][3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
}

// acc[NT][4] += A * B where A (16 x 16*KSTEPS) is in registers and B is stored [k][n] in sB.
template <int LD_B, int KSTEPS, int NT>
__device__ __forceinline__ void mma_areg_b_kn(float (&acc)[NT][4], const uint32_t (&a)[KSTEPS][4], const bf16* sB,
                                              int lane) {
#pragma unroll
  for (int kk = 0; kk < KSTEPS; ++kk)
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t b[4];
      load_b_kn<LD_B>(b, sB, kk * 16, np * 16, lane);
      mma_bf16(acc[2 * np], a[kk], b[0], b[1]);
      mma_bf16(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
}

// ---------------------------------------------------------------------------------------------
// Tile movement
// ---------------------------------------------------------------------------------------------

// Async-loads ROWS x D bf16 from global rows g (stride ld elements) into smem [ROWS][D+8]; rows at
// or past `valid` are zero-filled without being read (g itself, row 0, is in range).
template <int ROWS, int D>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int64_t ld, int valid, int tid) {
  constexpr int chunks = D / 8;  // 16-byte pieces per row
  // Not unrolled: unrolled, the compiler keeps every piece's address live across the main loop.
#pragma unroll 1
  for (int i = tid; i < ROWS * chunks; i += kThreads) {
    const int r = i / chunks, c = i % chunks;
    const bool ok = r < valid;
    cp_async16(s + r * Pad<D>::ld + c * 8, ok ? g + r * ld + c * 8 : g, ok);
  }
}

// Writes a warp's 16 x D C-layout accumulator (times row scales) to global rows [row0, row0+16) of
// g (stride ld), through the warp's own 16 smem rows so the global stores are 16 bytes wide.
template <int D>
__device__ __forceinline__ void store_rows(bf16* g, int64_t ld, int row0, int valid_end, const float (&acc)[D / 8][4],
                                           float scale0, float scale1, bf16* s, int lane) {
  const int gq = lane >> 2, q = lane & 3;
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<uint32_t*>(s + gq * Pad<D>::ld + n * 8 + 2 * q) = pack_bf16(acc[n][0] * scale0, acc[n][1] * scale0);
    *reinterpret_cast<uint32_t*>(s + (gq + 8) * Pad<D>::ld + n * 8 + 2 * q) =
        pack_bf16(acc[n][2] * scale1, acc[n][3] * scale1);
  }
  __syncwarp();
  constexpr int chunks = D / 8;
#pragma unroll
  for (int i = lane; i < 16 * chunks; i += 32) {
    const int r = i / chunks, c = i % chunks;
    if (row0 + r < valid_end)
      *reinterpret_cast<uint4*>(g + int64_t(row0 + r) * ld + c * 8) =
          *reinterpret_cast<const uint4*>(s + r * Pad<D>::ld + c * 8);
  }
}

// ---------------------------------------------------------------------------------------------
// Dropout masks in fragment layout. One Philox call gives the keep bits of 4 consecutive keys of one
// query row; lanes that share such a block split the calls and swap results with shuffles, so each
// lane makes one call per n-tile instead of two (row layout) or four (transposed layout).
// Result: keep0 (fragment row g) and keep1 (row g+8), bit 2n+c = element (n-tile n, column 2q+c).
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t keep_nibble(DropoutRng rng, uint64_t index, uint32_t threshold) {
  // index and rng.offset are multiples of 4 here (keys in blocks of 4; the offset of whole query rows)
  const Philox4 r = dropout_block(rng, (index + rng.offset) >> 2);
  return uint32_t(r.v[0] >= threshold) | uint32_t(r.v[1] >= threshold) << 1 | uint32_t(r.v[2] >= threshold) << 2 |
         uint32_t(r.v[3] >= threshold) << 3;
}

// Rows are query tokens (tok0 for row g, tok1 for row g+8), columns keys key0 + n*8 + 2q + c.
// Lanes q and q^1 cover the same 4-key block: the even one draws for row g, the odd one for g+8.
template <int NT>
__device__ __forceinline__ void dropout_mask_rows(uint32_t& keep0, uint32_t& keep1, DropoutRng rng,
                                                  uint32_t threshold, int64_t tok0, int64_t tok1, int head,
                                                  int heads, int key0, int lane) {
  static_assert(NT <= 8, "32 mask bits per lane");
  const int q = lane & 3, odd = q & 1;
  const uint64_t base = attention_dropout_index(odd ? tok1 : tok0, head, heads, 0);
  uint32_t mine = 0;
#pragma unroll
  for (int n = 0; n < NT; ++n) mine |= keep_nibble(rng, base + uint64_t(key0 + n * 8 + (q >> 1) * 4), threshold) << (4 * n);
  const uint32_t other = __shfl_xor_sync(0xffffffffu, mine, 1);
  const uint32_t w0 = odd ? other : mine, w1 = odd ? mine : other;
  const int off = 2 * odd;
  keep0 = keep1 = 0;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    keep0 |= ((w0 >> (4 * n + off)) & 3u) << (2 * n);
    keep1 |= ((w1 >> (4 * n + off)) & 3u) << (2 * n);
  }
}

// Transposed: rows are keys (key_row0 + g and +8, positions in the sequence, key_row0 % 4 == 0),
// columns query tokens tok_col0 + n*8 + 2q + c. The 4 lanes with the same q and g / 4 need the same
// four blocks (2 columns x 2 row groups); lane g % 4 == r draws block r, then all four swap.
template <int NT>
__device__ __forceinline__ void dropout_mask_cols(uint32_t& keep0, uint32_t& keep1, DropoutRng rng,
                                                  uint32_t threshold, int key_row0, int64_t tok_col0, int head,
                                                  int heads, int lane) {
  static_assert(NT <= 8, "32 mask bits per lane");
  const int g = lane >> 2, q = lane & 3, r = g & 3;
  const int key_block = key_row0 + (g & ~3) + (r >> 1) * 8;
  uint32_t mine = 0;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const int64_t tok = tok_col0 + n * 8 + 2 * q + (r & 1);
    mine |= keep_nibble(rng, attention_dropout_index(tok, head, heads, key_block), threshold) << (4 * n);
  }
  uint32_t w[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) w[j] = __shfl_sync(0xffffffffu, mine, (lane & 0x13) | (j << 2));
  keep0 = keep1 = 0;
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const int bit = 4 * n + r;
    keep0 |= ((w[0] >> bit) & 1u) << (2 * n) | ((w[1] >> bit) & 1u) << (2 * n + 1);
    keep1 |= ((w[2] >> bit) & 1u) << (2 * n) | ((w[3] >> bit) & 1u) << (2 * n + 1);
  }
}

// ---------------------------------------------------------------------------------------------
// Parameters shared by the kernels
// ---------------------------------------------------------------------------------------------

struct FlashParams {
  const bf16* qkv;
  bf16* out;
  float* lse;
  const bf16* dout;
  bf16* dqkv;
  float* dsum;  // workspace f32 [T, heads]: rowsum(dO * O)
  const int32_t* cu_seqlens;
  int heads;
  int hidden;           // H = heads * D
  float scale;          // softmax scale (1/sqrt(D) for BERT)
  float scale_log2;     // scale * log2(e): scores go straight into exp2
  uint32_t threshold;   // dropout threshold (0: no dropout)
  float keep_scale;     // 1 / (1 - p)
  DropoutRng rng;
};

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <int D>
constexpr int fwd_smem_bytes() {
  return (kTile + 4 * kTile) * Pad<D>::ld * int(sizeof(bf16));  // Q + 2 x (K, V)
}

// CTAs per SM each kernel is built for (caps registers at 65536 / (128 * n)); see bench/NOTES.md.
template <int D> struct MinBlocks { static constexpr int fwd = D >= 128 ? 2 : 3, dq = D >= 128 ? 2 : 3, dkdv = D >= 128 ? 1 : 2; };

template <int D>
__global__ void __launch_bounds__(kThreads, MinBlocks<D>::fwd) flash_fwd(FlashParams p) {
  constexpr int LD = Pad<D>::ld;
  constexpr int NT = kTile / 8;  // score n-tiles per warp row block
  constexpr int DT = D / 8;      // output n-tiles
  const int b = blockIdx.z, h = blockIdx.y;
  const int start = p.cu_seqlens[b], len = p.cu_seqlens[b + 1] - start;
  const int q_begin = blockIdx.x * kTile;
  if (q_begin >= len) return;  // this sequence is shorter than the longest one

  unsigned char* smem_raw = dynamic_smem<unsigned char>();
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + kTile * LD;      // [2][kTile][LD]
  bf16* sV = sK + 2 * kTile * LD;  // [2][kTile][LD]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gq = lane >> 2, qd = lane & 3;
  const int64_t ld = 3 * int64_t(p.hidden);
  const bf16* q_g = p.qkv + int64_t(start) * ld + h * D;
  const bf16* k_g = q_g + p.hidden;
  const bf16* v_g = q_g + 2 * p.hidden;

  load_tile<kTile, D>(sQ, q_g + q_begin * ld, ld, len - q_begin, tid);
  load_tile<kTile, D>(sK, k_g, ld, len, tid);
  load_tile<kTile, D>(sV, v_g, ld, len, tid);
  cp_async_commit();

  const int row0 = warp * 16;  // this warp's rows inside the tile
  const int64_t tok0 = start + q_begin + row0 + gq, tok1 = tok0 + 8;
  uint32_t qf[D / 16][4];
  float o[DT][4] = {};
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;  // running max (log2 units) and sum

  const int n_tiles = (len + kTile - 1) / kTile;
  for (int t = 0; t < n_tiles; ++t) {
    const int buf = t & 1;
    if (t + 1 < n_tiles) {  // prefetch the next K/V tile while this one is used
      const int k1 = (t + 1) * kTile;
      load_tile<kTile, D>(sK + (buf ^ 1) * kTile * LD, k_g + k1 * ld, ld, len - k1, tid);
      load_tile<kTile, D>(sV + (buf ^ 1) * kTile * LD, v_g + k1 * ld, ld, len - k1, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) load_a<LD>(qf[kk], sQ, row0, kk * 16, lane);
    }
    const bf16* k_s = sK + buf * kTile * LD;
    const bf16* v_s = sV + buf * kTile * LD;

    // S = Q K^T for this warp's 16 rows x 64 keys.
    float s[NT][4] = {};
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t bb[4];
        load_b_nk<LD>(bb, k_s, np * 16, kk * 16, lane);
        mma_bf16(s[2 * np], qf[kk], bb[0], bb[1]);
        mma_bf16(s[2 * np + 1], qf[kk], bb[2], bb[3]);
      }

    // Scale into log2 units; keys past the end of the sequence get -inf (only the last tile).
    const int key0 = t * kTile;
    const bool partial = key0 + kTile > len;
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + n * 8 + 2 * qd + (e & 1);
        s[n][e] = (partial && key >= len) ? -INFINITY : s[n][e] * p.scale_log2;
      }

    // Online softmax: new row max, rescale of what was accumulated, exp2 of the new scores.
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
      mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
    }
    // The 4 lanes of a quad hold one row between them.
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    // Every row has at least one real key in the first tile, so mx is finite from t = 0 on.
    const float alpha0 = fast_exp2(m0 - mx0), alpha1 = fast_exp2(m1 - mx1);
    m0 = mx0;
    m1 = mx1;
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      s[n][0] = fast_exp2(s[n][0] - m0);
      s[n][1] = fast_exp2(s[n][1] - m0);
      s[n][2] = fast_exp2(s[n][2] - m1);
      s[n][3] = fast_exp2(s[n][3] - m1);
      sum0 += s[n][0] + s[n][1];
      sum1 += s[n][2] + s[n][3];
    }
    l0 = l0 * alpha0 + sum0;  // per-lane partial sums: reduced across the quad once, at the end
    l1 = l1 * alpha1 + sum1;
#pragma unroll
    for (int n = 0; n < DT; ++n) {
      o[n][0] *= alpha0;
      o[n][1] *= alpha0;
      o[n][2] *= alpha1;
      o[n][3] *= alpha1;
    }

    // Dropout after the sum: lse and the normaliser are of the undropped probabilities.
    if (p.threshold) {
      uint32_t keep0, keep1;
      dropout_mask_rows<NT>(keep0, keep1, p.rng, p.threshold, tok0, tok1, h, p.heads, key0, lane);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        if (!((keep0 >> (2 * n)) & 1)) s[n][0] = 0.f;
        if (!((keep0 >> (2 * n + 1)) & 1)) s[n][1] = 0.f;
        if (!((keep1 >> (2 * n)) & 1)) s[n][2] = 0.f;
        if (!((keep1 >> (2 * n + 1)) & 1)) s[n][3] = 0.f;
      }
    }

    // O += P V.
    uint32_t pa[kTile / 16][4];
    cfrag_to_a<kTile / 16>(pa, s);
    mma_areg_b_kn<LD, kTile / 16, DT>(o, pa, v_s, lane);
    __syncthreads();  // everyone is done with this buffer before the next prefetch overwrites it
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const int r0 = q_begin + row0 + gq, r1 = r0 + 8;
  if (qd == 0) {
    if (r0 < len) p.lse[tok0 * p.heads + h] = (m0 + __log2f(l0)) * kLn2;
    if (r1 < len) p.lse[tok1 * p.heads + h] = (m1 + __log2f(l1)) * kLn2;
  }
  const float keep = p.threshold ? p.keep_scale : 1.f;
  // The warp's own Q rows in smem are free now (its Q fragments live in registers).
  store_rows<D>(p.out + int64_t(start) * p.hidden + h * D, p.hidden, q_begin + row0, len, o, keep / l0, keep / l1,
                sQ + row0 * LD, lane);
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// dsum[t, h] = sum_e dO[t, h, e] * O[t, h, e] in fp32; D/8 lanes per (token, head), 16 bytes each.
template <int D>
__global__ void __launch_bounds__(256) flash_bwd_dot(FlashParams p, int64_t rows) {
  constexpr int lanes = D / 8;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = idx / lanes;  // row = token * heads + head: dO/O rows of H are heads x D
  const int part = int(idx % lanes);
  float acc = 0.f;
  if (row < rows) {
    const uint4 a = *reinterpret_cast<const uint4*>(p.dout + row * D + part * 8);
    const uint4 c = *reinterpret_cast<const uint4*>(p.out + row * D + part * 8);
    const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(&a);
    const __nv_bfloat162* c2 = reinterpret_cast<const __nv_bfloat162*>(&c);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __bfloat1622float2(a2[i]), y = __bfloat1622float2(c2[i]);
      acc += x.x * y.x + x.y * y.y;
    }
  }
#pragma unroll
  for (int off = lanes / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (row < rows && part == 0) p.dsum[row] = acc;
}

// Query tile of the dK/dV kernel: 64 rows, 32 for D = 128 so S^T and dP^T fit next to dK and dV.
template <int D>
struct DkdvCfg {
  static constexpr int BQ = D >= 128 ? 32 : 64;
  static constexpr int smem_bytes =
      (2 * kTile + 4 * BQ) * Pad<D>::ld * int(sizeof(bf16)) + 4 * BQ * int(sizeof(float));
};

template <int D>
__global__ void __launch_bounds__(kThreads, MinBlocks<D>::dkdv) flash_bwd_dkdv(FlashParams p) {
  constexpr int LD = Pad<D>::ld;
  constexpr int BQ = DkdvCfg<D>::BQ;
  constexpr int NT = BQ / 8;  // n-tiles of S^T (columns = queries)
  constexpr int DT = D / 8;
  const int b = blockIdx.z, h = blockIdx.y;
  const int start = p.cu_seqlens[b], len = p.cu_seqlens[b + 1] - start;
  const int k_begin = blockIdx.x * kTile;
  if (k_begin >= len) return;

  unsigned char* smem_raw = dynamic_smem<unsigned char>();
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // [kTile][LD]
  bf16* sV = sK + kTile * LD;                     // [kTile][LD]
  bf16* sQ = sV + kTile * LD;                     // [2][BQ][LD]
  bf16* sdO = sQ + 2 * BQ * LD;                   // [2][BQ][LD]
  float* sL = reinterpret_cast<float*>(sdO + 2 * BQ * LD);  // [2][BQ] lse in log2 units
  float* sDs = sL + 2 * BQ;                                  // [2][BQ] rowsum(dO * O)

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int qd = lane & 3;
  const int64_t ld = 3 * int64_t(p.hidden);
  const bf16* q_g = p.qkv + int64_t(start) * ld + h * D;
  const bf16* do_g = p.dout + int64_t(start) * p.hidden + h * D;

  // Loads query tile `qt` (Q, dO, lse, dsum) into buffer `buf`; lse/dsum of missing rows are unused.
  auto load_q_tile = [&](int qt, int buf) {
    const int q0 = qt * BQ;
    load_tile<BQ, D>(sQ + buf * BQ * LD, q_g + q0 * ld, ld, len - q0, tid);
    load_tile<BQ, D>(sdO + buf * BQ * LD, do_g + int64_t(q0) * p.hidden, p.hidden, len - q0, tid);
    if (tid < BQ) {
      const bool ok = q0 + tid < len;
      const int64_t t = int64_t(start) + q0 + tid;
      sL[buf * BQ + tid] = ok ? p.lse[t * p.heads + h] * kLog2e : 0.f;
      sDs[buf * BQ + tid] = ok ? p.dsum[t * p.heads + h] : 0.f;
    }
  };

  load_tile<kTile, D>(sK, q_g + p.hidden + int64_t(k_begin) * ld, ld, len - k_begin, tid);
  load_tile<kTile, D>(sV, q_g + 2 * p.hidden + int64_t(k_begin) * ld, ld, len - k_begin, tid);
  load_q_tile(0, 0);
  cp_async_commit();

  const int row0 = warp * 16;                  // this warp's keys inside the tile
  const int key_row0 = k_begin + row0;         // their positions in the sequence
  float dk[DT][4] = {}, dv[DT][4] = {};

  const int n_tiles = (len + BQ - 1) / BQ;
  for (int t = 0; t < n_tiles; ++t) {
    const int buf = t & 1;
    if (t + 1 < n_tiles) {
      load_q_tile(t + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* q_s = sQ + buf * BQ * LD;
    const bf16* do_s = sdO + buf * BQ * LD;
    const float* l_s = sL + buf * BQ;
    const float* ds_s = sDs + buf * BQ;
    const int q0 = t * BQ;

    // S^T = K Q^T (16 keys x BQ queries), then P^T = exp2(S^T * scale_log2 - lse2[query]).
    float pt[NT][4] = {};
    mma_a_smem_b_nk<LD, LD, D / 16, NT>(pt, sK, row0, q_s, lane);
    const bool partial = q0 + BQ > len;
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int col = n * 8 + 2 * qd + c;
        const float l2 = l_s[col];
        const bool dead = partial && q0 + col >= len;  // query rows that do not exist
        pt[n][c] = dead ? 0.f : fast_exp2(pt[n][c] * p.scale_log2 - l2);
        pt[n][2 + c] = dead ? 0.f : fast_exp2(pt[n][2 + c] * p.scale_log2 - l2);
      }

    uint32_t keep0 = ~0u, keep1 = ~0u;
    if (p.threshold)
      dropout_mask_cols<NT>(keep0, keep1, p.rng, p.threshold, key_row0, int64_t(start) + q0, h, p.heads, lane);

    // dV += dropout(P)^T dO  (the 1/(1-p) factor is applied once at the end).
    {
      uint32_t pa[BQ / 16][4];
#pragma unroll
      for (int kk = 0; kk < BQ / 16; ++kk)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          // a[j] holds n-tile 2kk + j/2, fragment row j%2 (g or g+8), columns 2q and 2q+1.
          const int n = 2 * kk + (j >> 1);
          const uint32_t keep = (j & 1) ? keep1 : keep0;
          const float* v = pt[n] + 2 * (j & 1);
          pa[kk][j] = pack_bf16((keep >> (2 * n)) & 1 ? v[0] : 0.f, (keep >> (2 * n + 1)) & 1 ? v[1] : 0.f);
        }
      mma_areg_b_kn<LD, BQ / 16, DT>(dv, pa, do_s, lane);
    }

    // dP^T = V dO^T; dS^T = P^T * (dropout(dP^T) - dsum[query]).
    float dpt[NT][4] = {};
    mma_a_smem_b_nk<LD, LD, D / 16, NT>(dpt, sV, row0, do_s, lane);
    const float ks = p.threshold ? p.keep_scale : 1.f;
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float dsum = ds_s[n * 8 + 2 * qd + c];
        const float d0 = (keep0 >> (2 * n + c)) & 1 ? dpt[n][c] * ks : 0.f;
        const float d1 = (keep1 >> (2 * n + c)) & 1 ? dpt[n][2 + c] * ks : 0.f;
        dpt[n][c] = pt[n][c] * (d0 - dsum);
        dpt[n][2 + c] = pt[n][2 + c] * (d1 - dsum);
      }

    // dK += dS^T Q (times scale at the end).
    uint32_t dsa[BQ / 16][4];
    cfrag_to_a<BQ / 16>(dsa, dpt);
    mma_areg_b_kn<LD, BQ / 16, DT>(dk, dsa, q_s, lane);
    __syncthreads();
  }

  // This warp's K and V rows in smem are read by no other warp: reuse them to stage the stores.
  const float ks = p.threshold ? p.keep_scale : 1.f;
  bf16* dk_g = p.dqkv + int64_t(start) * 3 * p.hidden + p.hidden + h * D;
  store_rows<D>(dk_g, 3 * int64_t(p.hidden), key_row0, len, dk, p.scale, p.scale, sK + row0 * LD, lane);
  store_rows<D>(dk_g + p.hidden, 3 * int64_t(p.hidden), key_row0, len, dv, ks, ks, sV + row0 * LD, lane);
}

template <int D>
constexpr int dq_smem_bytes() {
  return (2 * kTile + 4 * kTile) * Pad<D>::ld * int(sizeof(bf16));  // Q, dO + 2 x (K, V)
}

template <int D>
__global__ void __launch_bounds__(kThreads, MinBlocks<D>::dq) flash_bwd_dq(FlashParams p) {
  constexpr int LD = Pad<D>::ld;
  constexpr int NT = kTile / 8;
  constexpr int DT = D / 8;
  const int b = blockIdx.z, h = blockIdx.y;
  const int start = p.cu_seqlens[b], len = p.cu_seqlens[b + 1] - start;
  const int q_begin = blockIdx.x * kTile;
  if (q_begin >= len) return;

  unsigned char* smem_raw = dynamic_smem<unsigned char>();
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sdO = sQ + kTile * LD;
  bf16* sK = sdO + kTile * LD;     // [2][kTile][LD]
  bf16* sV = sK + 2 * kTile * LD;  // [2][kTile][LD]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int gq = lane >> 2, qd = lane & 3;
  const int64_t ld = 3 * int64_t(p.hidden);
  const bf16* q_g = p.qkv + int64_t(start) * ld + h * D;
  const bf16* k_g = q_g + p.hidden;
  const bf16* v_g = q_g + 2 * p.hidden;

  load_tile<kTile, D>(sQ, q_g + q_begin * ld, ld, len - q_begin, tid);
  load_tile<kTile, D>(sdO, p.dout + (int64_t(start) + q_begin) * p.hidden + h * D, p.hidden, len - q_begin, tid);
  load_tile<kTile, D>(sK, k_g, ld, len, tid);
  load_tile<kTile, D>(sV, v_g, ld, len, tid);
  cp_async_commit();

  const int row0 = warp * 16;
  const int r0 = q_begin + row0 + gq, r1 = r0 + 8;
  const int64_t tok0 = start + r0, tok1 = tok0 + 8;
  // Rows past the end: any finite values (their Q and dO are zero and their dQ is not stored).
  const float lse0 = r0 < len ? p.lse[tok0 * p.heads + h] * kLog2e : 0.f;
  const float lse1 = r1 < len ? p.lse[tok1 * p.heads + h] * kLog2e : 0.f;
  const float dsum0 = r0 < len ? p.dsum[tok0 * p.heads + h] : 0.f;
  const float dsum1 = r1 < len ? p.dsum[tok1 * p.heads + h] : 0.f;
  const float ks = p.threshold ? p.keep_scale : 1.f;
  float dq[DT][4] = {};

  const int n_tiles = (len + kTile - 1) / kTile;
  for (int t = 0; t < n_tiles; ++t) {
    const int buf = t & 1;
    if (t + 1 < n_tiles) {
      const int k1 = (t + 1) * kTile;
      load_tile<kTile, D>(sK + (buf ^ 1) * kTile * LD, k_g + k1 * ld, ld, len - k1, tid);
      load_tile<kTile, D>(sV + (buf ^ 1) * kTile * LD, v_g + k1 * ld, ld, len - k1, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* k_s = sK + buf * kTile * LD;
    const bf16* v_s = sV + buf * kTile * LD;
    const int key0 = t * kTile;
    const bool partial = key0 + kTile > len;

    // P = exp2(S * scale_log2 - lse2), zero for keys past the end.
    float s[NT][4] = {};
    mma_a_smem_b_nk<LD, LD, D / 16, NT>(s, sQ, row0, k_s, lane);
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const bool dead = partial && key0 + n * 8 + 2 * qd + c >= len;
        s[n][c] = dead ? 0.f : fast_exp2(s[n][c] * p.scale_log2 - lse0);
        s[n][2 + c] = dead ? 0.f : fast_exp2(s[n][2 + c] * p.scale_log2 - lse1);
      }

    // dP = dO V^T; dS = P * (dropout(dP) - dsum).
    float dp[NT][4] = {};
    mma_a_smem_b_nk<LD, LD, D / 16, NT>(dp, sdO, row0, v_s, lane);
    uint32_t keep0 = ~0u, keep1 = ~0u;
    if (p.threshold) dropout_mask_rows<NT>(keep0, keep1, p.rng, p.threshold, tok0, tok1, h, p.heads, key0, lane);
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const float d0 = (keep0 >> (2 * n + c)) & 1 ? dp[n][c] * ks : 0.f;
        const float d1 = (keep1 >> (2 * n + c)) & 1 ? dp[n][2 + c] * ks : 0.f;
        dp[n][c] = s[n][c] * (d0 - dsum0);
        dp[n][2 + c] = s[n][2 + c] * (d1 - dsum1);
      }

    // dQ += dS K (times scale at the end).
    uint32_t dsa[kTile / 16][4];
    cfrag_to_a<kTile / 16>(dsa, dp);
    mma_areg_b_kn<LD, kTile / 16, DT>(dq, dsa, k_s, lane);
    __syncthreads();
  }

  store_rows<D>(p.dqkv + int64_t(start) * ld + h * D, ld, q_begin + row0, len, dq, p.scale, p.scale,
                sQ + row0 * LD, lane);
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

void check_args(const AttentionArgs& a, const char* what) {
  ENGINE_CHECK(a.bf16, what, ": flash attention needs bf16 activations; use --attention simple for fp32");
  ENGINE_CHECK(a.head_dim == 32 || a.head_dim == 64 || a.head_dim == 128, what, ": head dim ", a.head_dim,
               " is not supported by flash attention (32, 64 or 128)");
  ENGINE_CHECK(a.heads > 0 && a.sequences >= 0 && a.tokens >= 0, what, ": bad shape (heads ", a.heads,
               ", sequences ", a.sequences, ", tokens ", a.tokens, ")");
  ENGINE_CHECK(a.max_seqlen >= 0 && a.max_seqlen < 65536, what, ": max_seqlen ", a.max_seqlen,
               " (dropout indexes keys below 65536)");
  ENGINE_CHECK(a.sequences <= 65535, what, ": ", a.sequences, " sequences in one batch (at most 65535)");
  ENGINE_CHECK(a.heads <= 65535, what, ": ", a.heads, " heads (at most 65535)");
  ENGINE_CHECK(a.tokens * 3 * int64_t(a.heads) * a.head_dim < (int64_t(1) << 31) * 8, what,
               ": batch too large");
  ENGINE_CHECK(a.qkv && a.cu_seqlens && a.lse, what, ": null qkv, cu_seqlens or lse");
  // Every global access is 16 bytes wide (cp.async, uint4 stores and loads); rows are multiples of 16
  // bytes for d in {32, 64, 128}, so only the base pointers can break it (e.g. a sliced view).
  const auto misaligned = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) != 0; };
  ENGINE_CHECK(!misaligned(a.qkv) && !misaligned(a.out) && !misaligned(a.dout) && !misaligned(a.dqkv), what,
               ": qkv, out, dout and dqkv must be 16-byte aligned");
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  ENGINE_CHECK(e == cudaSuccess, what, ": kernel launch failed: ", cudaGetErrorString(e));
}

FlashParams make_params(const AttentionArgs& a) {
  FlashParams p{};
  p.qkv = static_cast<const bf16*>(a.qkv);
  p.out = static_cast<bf16*>(a.out);
  p.lse = a.lse;
  p.dout = static_cast<const bf16*>(a.dout);
  p.dqkv = static_cast<bf16*>(a.dqkv);
  p.cu_seqlens = a.cu_seqlens;
  p.heads = a.heads;
  p.hidden = a.heads * a.head_dim;
  p.scale = a.scale;
  p.scale_log2 = a.scale * kLog2e;
  p.threshold = dropout_threshold(a.dropout_p);
  // Rounded once from double, as engine/backend.h specifies (1.f / (1.f - p) rounds twice and can
  // differ from the CPU reference and the other CUDA kernels by an ulp).
  p.keep_scale = a.dropout_p < 1.f ? float(1.0 / (1.0 - double(a.dropout_p))) : 0.f;
  p.rng = a.rng;
  return p;
}

// Kernels above 48 KiB of dynamic shared memory must opt in once per kernel.
template <typename Kernel>
void set_smem(Kernel k, int bytes, const char* what) {
  if (bytes <= 48 * 1024) return;
  const cudaError_t e = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  ENGINE_CHECK(e == cudaSuccess, what, ": cannot reserve ", bytes, " bytes of shared memory: ",
               cudaGetErrorString(e));
}

template <int D>
void forward(const AttentionArgs& a, cudaStream_t stream) {
  const dim3 grid((a.max_seqlen + kTile - 1) / kTile, a.heads, a.sequences);
  constexpr int smem = fwd_smem_bytes<D>();
  set_smem(flash_fwd<D>, smem, "attention_flash_forward");
  launch<flash_fwd<D>>(grid, kThreads, smem, stream, make_params(a));
  check_launch("attention_flash_forward");
}

template <int D>
void backward(const AttentionArgs& a, cudaStream_t stream) {
  FlashParams p = make_params(a);
  p.dsum = static_cast<float*>(a.workspace);
  const int64_t rows = a.tokens * a.heads;
  const int64_t threads = rows * (D / 8);
  launch<flash_bwd_dot<D>>(unsigned((threads + 255) / 256), 256, 0, stream, p, rows);
  check_launch("attention_flash_backward (dot)");

  const dim3 grid((a.max_seqlen + kTile - 1) / kTile, a.heads, a.sequences);
  constexpr int smem_kv = DkdvCfg<D>::smem_bytes;
  set_smem(flash_bwd_dkdv<D>, smem_kv, "attention_flash_backward");
  launch<flash_bwd_dkdv<D>>(grid, kThreads, smem_kv, stream, p);
  check_launch("attention_flash_backward (dK, dV)");

  constexpr int smem_q = dq_smem_bytes<D>();
  set_smem(flash_bwd_dq<D>, smem_q, "attention_flash_backward");
  launch<flash_bwd_dq<D>>(grid, kThreads, smem_q, stream, p);
  check_launch("attention_flash_backward (dQ)");
}

}  // namespace

size_t attention_flash_workspace_bytes(const AttentionArgs& a) {
  return size_t(a.tokens) * size_t(a.heads) * sizeof(float);  // rowsum(dO * O) for backward
}

void attention_flash_forward(const AttentionArgs& a, cudaStream_t stream) {
  check_args(a, "attention_flash_forward");
  ENGINE_CHECK(a.out, "attention_flash_forward: null out");
  if (a.tokens == 0 || a.sequences == 0 || a.max_seqlen == 0) return;
  switch (a.head_dim) {
    case 32: forward<32>(a, stream); break;
    case 64: forward<64>(a, stream); break;
    case 128: forward<128>(a, stream); break;
  }
}

void attention_flash_backward(const AttentionArgs& a, cudaStream_t stream) {
  check_args(a, "attention_flash_backward");
  ENGINE_CHECK(a.out && a.dout && a.dqkv, "attention_flash_backward: null out, dout or dqkv");
  if (a.tokens == 0 || a.sequences == 0 || a.max_seqlen == 0) return;
  ENGINE_CHECK(a.workspace && a.workspace_bytes >= attention_flash_workspace_bytes(a),
               "attention_flash_backward: workspace of ", a.workspace_bytes, " bytes, needs ",
               attention_flash_workspace_bytes(a));
  switch (a.head_dim) {
    case 32: backward<32>(a, stream); break;
    case 64: backward<64>(a, stream); break;
    case 128: backward<128>(a, stream); break;
  }
}

}  // namespace engine::cuda

// ---------------------------------------------------------------------------------------------
// Small kernels for the cuDNN path (attention_cudnn.cpp is plain C++ and launches nothing itself):
// per-sequence lengths and ragged element offsets from cu_seqlens, and the conversion between
// cuDNN's padded softmax stats [B, heads, S, 1] and the packed lse [T, heads] of the interface.
// ---------------------------------------------------------------------------------------------
namespace engine::cuda {
namespace {

__global__ void cudnn_prepare_kernel(const int32_t* cu, int sequences, int32_t qkv_row, int32_t o_row,
                                     int32_t* seqlen, int32_t* off_qkv, int32_t* off_o) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b > sequences) return;
  if (b < sequences) seqlen[b] = cu[b + 1] - cu[b];
  off_qkv[b] = cu[b] * qkv_row;  // element offset of sequence b's first row (b = B: the end)
  off_o[b] = cu[b] * o_row;
}

// to_packed: lse[(cu[b] + s) * heads + h] = stats[(b * heads + h) * S + s]; else the reverse.
__global__ void cudnn_stats_kernel(float* stats, float* lse, const int32_t* cu, int heads, int S, bool to_packed) {
  const int b = blockIdx.y, s = blockIdx.x * blockDim.x + threadIdx.x;
  const int start = cu[b], len = cu[b + 1] - start;
  if (s >= len) return;
  for (int h = 0; h < heads; ++h) {
    float* st = stats + (int64_t(b) * heads + h) * S + s;
    float* ls = lse + (int64_t(start) + s) * heads + h;
    if (to_packed) *ls = *st;
    else *st = *ls;
  }
}

}  // namespace

void attention_cudnn_prepare(const int32_t* cu_seqlens, int sequences, int32_t qkv_row, int32_t o_row,
                             int32_t* seqlen, int32_t* off_qkv, int32_t* off_o, cudaStream_t stream) {
  launch<cudnn_prepare_kernel>((sequences + 1 + 255) / 256, 256, 0, stream, cu_seqlens, sequences, qkv_row, o_row, seqlen,
                                                                        off_qkv, off_o);
  check_launch("attention_cudnn (prepare)");
}

void attention_cudnn_stats(float* stats, float* lse, const int32_t* cu_seqlens, int sequences, int heads,
                           int max_seqlen, bool to_packed, cudaStream_t stream) {
  const dim3 grid((max_seqlen + 127) / 128, sequences);
  launch<cudnn_stats_kernel>(grid, 128, 0, stream, stats, lse, cu_seqlens, heads, max_seqlen, to_packed);
  check_launch("attention_cudnn (stats)");
}

}  // namespace engine::cuda
