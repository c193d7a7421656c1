// Counter-based random numbers (Philox4x32-10) shared by the CPU reference and the CUDA kernels,
// so a dropout mask is a pure function of (seed, stream, element index): the GPU regenerates it in
// backward instead of storing it, and CPU and GPU draw the same mask for the same element.
// Plain C++; ENGINE_HD marks the functions __host__ __device__ when nvcc compiles them.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ENGINE_HD __host__ __device__ __forceinline__
#else
#define ENGINE_HD inline
#endif

namespace engine {

struct Philox4 {
  uint32_t v[4];
};

ENGINE_HD uint32_t philox_mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  *hi = uint32_t(p >> 32);
  return uint32_t(p);
}

// Ten rounds of Philox4x32 on counter c with key k.
ENGINE_HD Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, hi1;
    uint32_t lo0 = philox_mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = philox_mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Where a dropout site draws from: the step's seed and a stream id unique to the site
// (layer and position in the layer), so no two sites share a mask. offset is added to every element
// index: the index of the batch's first element in the global batch of a data-parallel step
// (engine/dist/sharded_batches.h), so an example draws the same mask on whichever rank it lands.
struct DropoutRng {
  uint64_t seed = 0;
  uint32_t stream = 0;
  uint64_t offset = 0;
};

// The four 32-bit words of block `block` (elements 4*block .. 4*block+3, offset included).
ENGINE_HD Philox4 dropout_block(DropoutRng rng, uint64_t block) {
  return philox4x32(uint32_t(block), uint32_t(block >> 32), rng.stream, 0u, uint32_t(rng.seed),
                    uint32_t(rng.seed >> 32));
}

// 32 random bits for element `index` of a site. One Philox call yields four words, so elements
// 4k..4k+3 (after the offset) share one call: a GPU thread handling four neighbours pays for one.
ENGINE_HD uint32_t dropout_bits(DropoutRng rng, uint64_t index) {
  const uint64_t i = index + rng.offset;
  return dropout_block(rng, i >> 2).v[i & 3];
}

// Drop probability p as a 32-bit threshold: an element is kept when its bits are >= threshold.
ENGINE_HD uint32_t dropout_threshold(float p) {
  if (p <= 0.f) return 0u;
  if (p >= 1.f) return 0xFFFFFFFFu;
  return uint32_t(double(p) * 4294967296.0);
}

ENGINE_HD bool dropout_keep(DropoutRng rng, uint64_t index, uint32_t threshold) {
  return threshold == 0u || dropout_bits(rng, index) >= threshold;
}

// Element index of attention-probability (query token q, head h, key j) in a batch: keys of one
// query row are consecutive (j < 65536, far above max_position_embeddings), query rows by token.
ENGINE_HD uint64_t attention_dropout_index(int64_t q_token, int head, int num_heads, int key) {
  return ((uint64_t(q_token) * uint64_t(num_heads) + uint64_t(head)) << 16) + uint64_t(key);
}

}  // namespace engine
