// Where a GPU test runs: on a GPU, or through the sim (tests/CMakeLists.txt builds every
// tests/cuda/ file twice, the second time against cuda/ compiled for the host, cuda/sim/). The sim
// runs a block's threads one after another on one core, so the largest sizes are cut there to ones
// that take the same code paths (every tile edge, head dim, dtype and row shape stays covered);
// each cut is named where it is made.
#pragma once
#include <cstdint>

namespace engine::test {

#if defined(ENGINE_CUDA_SIM)
inline constexpr bool kSim = true;
#else
inline constexpr bool kSim = false;
#endif

// `gpu` on a GPU, `sim` in the sim.
constexpr int64_t gpu_or_sim(int64_t gpu, int64_t sim) { return kSim ? sim : gpu; }

}  // namespace engine::test
