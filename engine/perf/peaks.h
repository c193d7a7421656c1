// Datasheet peaks of the GPUs the engine is benchmarked on, looked up by the name the CUDA runtime
// reports (cudaDeviceProp::name), for MFU against the datasheet. Dense (no 2:4 sparsity) tensor-core
// bf16, and fp32 without tensor cores (the engine's fp32 mode turns TF32 off). 0 = unknown device:
// MFU is then reported against the peak measured in the same run only.
#pragma once
#include <string>

#include "engine/tensor.h"

namespace engine::perf {

// TFLOP/s for activations of dtype `act` (bf16 or f32) on the device named `device_name`.
double datasheet_peak_tflops(const std::string& device_name, DType act);

}  // namespace engine::perf
