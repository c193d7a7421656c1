// Kernel launches in the sim build: what `kernel<<<grid, block, smem, stream>>>(args...)` does,
// as cuda/launch.cuh's launch<kernel>(grid, block, smem, stream, args...) calls it.
// The arguments are converted to the kernel's parameter types and copied at launch time (as
// cudaLaunchKernel copies them), the configuration is checked against sm_90's limits (a refused
// launch sets the error cudaGetLastError() returns, and runs nothing), and the grid runs in stream
// order through cudasim::enqueue, so a captured graph replays the launch with these arguments.
#pragma once
#include <cuda_runtime.h>

#include <string>
#include <tuple>
#include <utility>

namespace cudasim {

struct LaunchConfig {
  dim3 grid, block;
  size_t smem = 0;
  const void* func = nullptr;
  std::string name;
};

// "engine::cuda::layernorm_kernel<float>" out of launch<Kernel>'s __PRETTY_FUNCTION__.
std::string kernel_name(const char* pretty_function);
// False (and the last error set) when a GPU would refuse the launch.
bool launch_allowed(const LaunchConfig& config);
// The dynamic shared memory a launch of `func` may ask for: 48 KiB, or what
// cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raised it to (runtime.cpp).
size_t max_dynamic_smem(const void* func);
// sm_90's most dynamic shared memory per block, with the opt-in: 227 KiB.
size_t dynamic_smem_limit();
// Runs every block of the grid; each thread of each block calls body().
void run_grid(const LaunchConfig& config, const std::function<void()>& body);

template <typename... Params, typename... Args>
std::tuple<std::decay_t<Params>...> kernel_arguments(void (*)(Params...), Args&&... args) {
  return std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...);
}

template <auto Kernel, typename... Args>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  LaunchConfig config{grid, block, smem, reinterpret_cast<const void*>(Kernel), kernel_name(__PRETTY_FUNCTION__)};
  if (!launch_allowed(config)) return;
  auto arguments = kernel_arguments(Kernel, std::forward<Args>(args)...);
  enqueue(stream, [config = std::move(config), arguments] {
    // Each thread gets its own copy of the by-value parameters, as on a GPU.
    run_grid(config, [&arguments] { std::apply(Kernel, arguments); });
  });
}

}  // namespace cudasim
