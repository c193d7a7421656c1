// How every kernel in cuda/ is started: launch<kernel>(grid, block, smem_bytes, stream, args...)
// instead of kernel<<<grid, block, smem_bytes, stream>>>(args...), and dynamic_smem<T>() instead of
// an `extern __shared__` array. Under nvcc these are exactly the triple-chevron launch and the
// extern array; in the sim build (ENGINE_CUDA_SIM, see cuda/sim/) the sim's scheduler runs the
// kernel and hands out the block's dynamic shared memory. This file is the one place the two
// builds differ for launches.
#pragma once
#include <cuda_runtime.h>

#include <utility>

#if defined(ENGINE_CUDA_SIM)
#include "cuda/sim/launch.h"
#endif

namespace engine::cuda {

template <auto Kernel, typename... Args>
void launch(dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream, Args&&... args) {
#if defined(ENGINE_CUDA_SIM)
  ::cudasim::launch<Kernel>(grid, block, smem_bytes, stream, std::forward<Args>(args)...);
#else
  Kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
#endif
}

// The block's dynamic shared memory (the launch's smem_bytes), 16-byte aligned.
template <typename T>
__device__ __forceinline__ T* dynamic_smem() {
#if defined(ENGINE_CUDA_SIM)
  return reinterpret_cast<T*>(::cudasim::dynamic_smem());
#else
  extern __shared__ __align__(16) unsigned char engine_dynamic_smem[];
  return reinterpret_cast<T*>(engine_dynamic_smem);
#endif
}

}  // namespace engine::cuda
