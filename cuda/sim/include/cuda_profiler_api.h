// cudaProfilerStart/Stop for the sim build: there is no profiler to start.
#pragma once
#include <cuda_runtime.h>

inline cudaError_t cudaProfilerStart() { return cudaSuccess; }
inline cudaError_t cudaProfilerStop() { return cudaSuccess; }
