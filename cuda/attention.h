// The attention kernels behind Backend::attention_forward/backward, in three implementations that
// share one argument block: "simple" (attention_simple.cu: a first correct kernel, the GPU
// reference), "flash" (attention_flash.cu: the fused FlashAttention-style kernel, the default) and
// "cudnn" (attention_cudnn.cpp: cuDNN's fused attention, a baseline and fallback).
// Layout (see engine/backend.h): qkv [T, 3H] = [q | k | v], heads contiguous, out [T, H],
// lse f32 [T, heads], cu_seqlens i32 [B+1] on the device. Dropout on probabilities uses
// engine/philox.h attention_dropout_index(), so every implementation drops the same elements.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/philox.h"

namespace engine::cuda {

struct AttentionArgs {
  bool bf16 = true;       // activations bf16 (else f32)
  const void* qkv = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  const int32_t* cu_seqlens = nullptr;  // device
  const int32_t* cu_seqlens_host = nullptr;  // host copy when the caller has one (may be null)
  int64_t tokens = 0;     // T
  int sequences = 0;      // B
  int max_seqlen = 0;
  int heads = 0;
  int head_dim = 0;
  float scale = 0.f;
  float dropout_p = 0.f;
  DropoutRng rng{};
  // Scratch the implementation asked for via *_workspace_bytes(), used by forward and backward.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  // backward only
  const void* dout = nullptr;
  void* dqkv = nullptr;
};

void attention_simple_forward(const AttentionArgs& a, cudaStream_t stream);
void attention_simple_backward(const AttentionArgs& a, cudaStream_t stream);
size_t attention_simple_workspace_bytes(const AttentionArgs& a);

void attention_flash_forward(const AttentionArgs& a, cudaStream_t stream);
void attention_flash_backward(const AttentionArgs& a, cudaStream_t stream);
size_t attention_flash_workspace_bytes(const AttentionArgs& a);

void attention_cudnn_forward(const AttentionArgs& a, cudaStream_t stream);
void attention_cudnn_backward(const AttentionArgs& a, cudaStream_t stream);
size_t attention_cudnn_workspace_bytes(const AttentionArgs& a);

}  // namespace engine::cuda
