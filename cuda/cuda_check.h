// Turning CUDA, cuBLASLt and CUB status codes into engine::Error with the call site and the
// library's own error string, so a failure on the GPU machine reads like any other engine error:
//   "cuda/layernorm.cu:212: cudaLaunchKernel failed: invalid configuration argument".
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "engine/error.h"

namespace engine::cuda {

[[noreturn]] inline void cuda_fail(cudaError_t err, const char* what, const char* file, int line) {
  fail(file, ":", line, ": ", what, " failed: ", cudaGetErrorString(err), " (", cudaGetErrorName(err), ")");
}

[[noreturn]] inline void cublas_fail(cublasStatus_t st, const char* what, const char* file, int line) {
  fail(file, ":", line, ": ", what, " failed: cuBLASLt status ", int(st), " (", cublasLtGetStatusName(st), ": ", cublasLtGetStatusString(st), ")");
}

}  // namespace engine::cuda

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    cudaError_t engine_cuda_err_ = (call);                                                 \
    if (engine_cuda_err_ != cudaSuccess)                                                   \
      ::engine::cuda::cuda_fail(engine_cuda_err_, #call, __FILE__, __LINE__);              \
  } while (0)

// After a kernel launch: launch-configuration errors surface here (asynchronous faults surface at
// the next synchronising call, as always with CUDA).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUBLAS_CHECK(call)                                                                 \
  do {                                                                                     \
    cublasStatus_t engine_cublas_st_ = (call);                                             \
    if (engine_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                        \
      ::engine::cuda::cublas_fail(engine_cublas_st_, #call, __FILE__, __LINE__);           \
  } while (0)
