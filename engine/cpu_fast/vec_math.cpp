// Vectorised Philox for dropout masks (vec_math.h): eight counter blocks at a time in
// structure-of-arrays form, compiled for AVX2 and for plain x86-64 and picked at run time.
#include "engine/cpu_fast/vec_math.h"

namespace engine::fastcpu {

namespace {

constexpr int kLanes = 8;

// Philox4x32-10 of counters (block + lane, stream, 0) for kLanes consecutive blocks; words[w][lane].
inline void philox_lanes(uint32_t words[4][kLanes], uint64_t block, DropoutRng rng) {
  uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    const uint64_t b = block + uint64_t(l);
    c0[l] = uint32_t(b);
    c1[l] = uint32_t(b >> 32);
    c2[l] = rng.stream;
    c3[l] = 0u;
  }
  uint32_t k0 = uint32_t(rng.seed), k1 = uint32_t(rng.seed >> 32);
  for (int round = 0; round < 10; ++round) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) {
      const uint64_t p0 = uint64_t(0xD2511F53u) * c0[l];
      const uint64_t p1 = uint64_t(0xCD9E8D57u) * c2[l];
      const uint32_t n0 = uint32_t(p1 >> 32) ^ c1[l] ^ k0;
      const uint32_t n2 = uint32_t(p0 >> 32) ^ c3[l] ^ k1;
      c1[l] = uint32_t(p1);
      c3[l] = uint32_t(p0);
      c0[l] = n0;
      c2[l] = n2;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int l = 0; l < kLanes; ++l) {
    words[0][l] = c0[l];
    words[1][l] = c1[l];
    words[2][l] = c2[l];
    words[3][l] = c3[l];
  }
}

}  // namespace

__attribute__((target_clones("arch=x86-64-v3", "default"))) void dropout_multipliers(
    float* out, DropoutRng rng, uint64_t first, int64_t n, uint32_t threshold, float keep_scale) {
  if (n <= 0) return;
  uint32_t words[4][kLanes];
  first += rng.offset;  // the element's index in the global batch (engine/philox.h)
  const uint64_t last = first + uint64_t(n);  // one past
  for (uint64_t block = first >> 2; block * 4 < last; block += kLanes) {
    philox_lanes(words, block, rng);
    for (int l = 0; l < kLanes; ++l)
      for (int w = 0; w < 4; ++w) {
        const uint64_t index = (block + uint64_t(l)) * 4 + uint64_t(w);
        if (index < first || index >= last) continue;
        out[index - first] = words[w][l] >= threshold ? keep_scale : 0.f;
      }
  }
}

}  // namespace engine::fastcpu
