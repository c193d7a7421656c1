// The "cudnn" attention in the sim build: cuDNN is a closed library the sim does not emulate, so
// this path refuses with a clear error (the GPU tests skip their cuDNN cases in the sim, saying so).
// The sim build compiles this file in place of cuda/attention_cudnn.cpp.
#include "cuda/attention.h"
#include "engine/error.h"

namespace engine::cuda {

namespace {
[[noreturn]] void not_emulated() {
  fail("attention 'cudnn': cuDNN is not emulated by the sim build (cuda/sim); it runs on a GPU only");
}
}  // namespace

void attention_cudnn_forward(const AttentionArgs&, cudaStream_t) { not_emulated(); }
void attention_cudnn_backward(const AttentionArgs&, cudaStream_t) { not_emulated(); }
size_t attention_cudnn_workspace_bytes(const AttentionArgs&) { not_emulated(); }

}  // namespace engine::cuda
