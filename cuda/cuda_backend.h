// The CUDA backend: engine::Backend on one GPU, one stream. Activations in bf16 (mixed precision:
// fp32 accumulation, statistics, losses, gradients and optimizer state) or f32 (TF32 off, for
// parity with the CPU reference). Hand-written kernels in cuda/*.cu, matrix products through
// cuBLASLt (matmul_cublaslt.h), attention through one of three implementations (attention.h)
// chosen by BackendOptions::attention.
// Memory: allocate() is cudaMalloc (arenas call it once); copies are cudaMemcpyAsync on the
// stream and copy_to_host waits for it. Scratch that kernels need (reduction partials, sort
// storage, attention workspace) comes from one backend-owned workspace that grows on first use
// (the warm-up step) and is then reused: a step after the first allocates nothing.
// Every op runs inside an NVTX range named after it; range_push/pop give the model's layers theirs.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "cuda/attention.h"
#include "engine/backend.h"

namespace engine::cuda {
class CublasLt;
}

namespace engine {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& options);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::cuda; }
  std::string name() const override { return "cuda"; }
  bool supports(DType act) const override { return act == DType::f32 || act == DType::bf16; }

  void* allocate(size_t bytes) override;
  void release(void* p) override;
  void copy_from_host(Tensor dst, const void* src) override;
  void copy_to_host(void* dst, Tensor src) override;
  void copy(Tensor dst, Tensor src) override;
  void synchronize() override;
  void* native_stream() override { return stream_; }
  void range_push(const char* name) override;
  void range_pop() override;

  void fill(Tensor x, float value) override;
  void cast(Tensor dst, Tensor src) override;
  void embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids, Tensor type_ids,
                          Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta, float eps) override;
  void embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta, Tensor dy, Tensor s,
                           Tensor mean, Tensor rstd, Tensor gamma, Tensor ids, Tensor pos_ids,
                           Tensor type_ids) override;
  void add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch, Tensor residual,
                                     Tensor gamma, Tensor beta, float eps, float p, DropoutRng rng) override;
  void add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta, Tensor dy,
                                      Tensor s, Tensor mean, Tensor rstd, Tensor gamma, float p,
                                      DropoutRng rng) override;
  void dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) override;
  void dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) override;
  void linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) override;
  void linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x,
                          Tensor pre_of_x) override;
  void linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) override;
  // lora.cu
  void lora_forward(Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b, const LoraArgs& args, Activation act,
                    Tensor pre) override;
  void lora_backward(Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy, Tensor x, Tensor z, Tensor a,
                     Tensor b, const LoraArgs& args, Activation act_of_x, Tensor pre_of_x) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch, int heads,
                         float scale, float p, DropoutRng rng) override;
  void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor cu_seqlens,
                          const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) override;
  void gather_rows(Tensor out, Tensor x, Tensor rows) override;
  void scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) override;
  void tanh_forward(Tensor y, Tensor x) override;
  void tanh_backward(Tensor dx, Tensor dy, Tensor y) override;
  void cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) override;
  void mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) override;
  void span_cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor cu_seqlens, Tensor positions,
                          const BatchShape& batch, float scale_start, float scale_end) override;
  void global_norm(Tensor norm, Tensor grads) override;
  void adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
             const AdamWArgs& args) override;

  // Measurement (cuda/cuda_measure.cu): CUDA-event timers, CUDA-graph capture of the stream,
  // cudaProfilerStart/Stop, the device's name and memory in use, and datasheet peaks by name.
  std::unique_ptr<StepTimer> make_timer(int marks) override;
  bool can_capture() const override { return true; }
  void begin_capture() override;
  std::unique_ptr<CapturedWork> end_capture() override;
  void profiler_start() override;
  void profiler_stop() override;
  std::string device_label() const override;
  int64_t device_bytes_in_use() const override;
  size_t scratch_bytes() const override;
  double peak_tflops(DType act) const override;

  // ---- for tests, benches and the step bench ----
  cudaStream_t stream() const { return stream_; }
  cuda::CublasLt& blas() { return *blas_; }
  const std::string& attention() const { return attention_; }
  // How many times the scratch workspace has grown (stays constant after the first step).
  int workspace_growths() const { return workspace_growths_; }
  size_t workspace_bytes() const { return workspace_bytes_; }
  // Use cuBLASLt's GELU_AUX_BIAS / DGELU epilogues instead of bias epilogue + exact-erf kernels
  // (faster, but cuBLASLt's GELU is not the erf form BERT uses; off by default).
  void set_gelu_epilogue(bool on) { gelu_epilogue_ = on; }

 private:
  // At least `bytes` of scratch, valid until the next call (ops run in stream order).
  void* scratch(size_t bytes);
  void run_attention(cuda::AttentionArgs& a, bool backward);

  int device_ = 0;
  std::string attention_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::CublasLt> blas_;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int workspace_growths_ = 0;
  bool gelu_epilogue_ = false;
  bool capturing_ = false;
};

}  // namespace engine
