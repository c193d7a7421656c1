// Which backends this build has. The CUDA backend lives in cuda/ and is linked in only when the
// build found nvcc; engine/ itself never includes a CUDA header.
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu_fast/fast_cpu_backend.h"

namespace engine {

#if ENGINE_HAS_CUDA
std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options);  // cuda/cuda_backend.cu
bool cuda_device_present();                    // cuda/cuda_backend.cu
#endif

bool cuda_available() {
#if ENGINE_HAS_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& options) {
  if (name == "cpu") return std::make_unique<FastCpuBackend>();
  if (name == "cpu-ref") return std::make_unique<CpuBackend>();
  (void)options;
  if (name == "cuda") {
#if ENGINE_HAS_CUDA
    ENGINE_CHECK(cuda_device_present(), "backend 'cuda': no CUDA GPU is visible on this machine");
    return make_cuda_backend(options);
#else
    fail("backend 'cuda': this build has no CUDA backend (nvcc was not found when it was configured)");
#endif
  }
  fail("unknown backend '", name, "' (expected cpu, cpu-ref or cuda)");
}

}  // namespace engine
