// The op interface. One abstract Backend with one method per op the BERT fine-tune pass needs,
// forward and backward, taking non-owning Tensor views. Two implementations: engine/cpu/ (the
// fp32 reference, plain loops) and cuda/ (the fast path, bf16 or fp32 activations). The model is
// written once against this interface, so CPU-vs-GPU parity of a whole step is one test.
//
// Conventions every implementation follows:
// - Packed layout: a batch of B sequences is T = sum(len_i) token rows; `cu_seqlens` (i32[B+1],
//   prefix sums, on the backend's device) keeps sequences apart. No op ever sees padding.
// - Activations ("act" below) are f32 on the CPU and f32 or bf16 on the GPU; statistics (layernorm
//   mean/rstd, attention log-sum-exp), losses, gradients of parameters and optimizer state are f32.
// - Parameter gradients are ACCUMULATED (+=) so gradient accumulation over micro-batches is free;
//   the trainer zeroes them before each optimizer step. Activation gradients are overwritten unless
//   the method says otherwise.
// - Linear weights use the Hugging Face layout W[out, in]; y = x W^T + b.
// - Dropout masks are regenerated from (DropoutRng, element index) with engine/philox.h: element
//   index of a [T, C] tensor is t*C + c; attention probabilities use attention_dropout_index().
//   p is in [0, 1); kept elements are multiplied by float(1.0 / (1.0 - p)) (rounded once, so both
//   backends scale by the same number). p == 0 means identity.
// - Elementwise ops (dropout, tanh, their backwards) may run in place (y == x, dx == dy).
// - Tensors passed as "optional" may be empty (data == nullptr).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "engine/philox.h"
#include "engine/tensor.h"

namespace engine {

enum class Activation : uint8_t { none, gelu };

// Shape of a packed batch, known on the host.
struct BatchShape {
  int64_t tokens = 0;      // T
  int64_t sequences = 0;   // B
  int64_t max_seqlen = 0;  // longest sequence in the batch
};

// Arguments of one AdamW update over a flat f32 parameter buffer (see adamw()).
struct AdamWArgs {
  float lr = 0.f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.f;
  int64_t decay_end = 0;   // elements [0, decay_end) get weight decay, the rest (biases, LayerNorm) none
  int64_t step = 1;        // 1-based step for bias correction
  float max_grad_norm = 0.f;  // <= 0: no clipping
};

// The scalars of a low-rank adapter's path (see Backend::lora_forward).
struct LoraArgs {
  float scale = 1.f;  // alpha / r
  float p = 0.f;      // dropout on the adapter's input (its own mask, from rng)
  DropoutRng rng{};
  int64_t col = 0;    // the path adds into columns [col, col + out) of y (a slice of the fused QKV output)
};

// ---- measurement (the step bench in engine/perf/ and profilers) ----

// Timestamps taken in a backend's stream order: mark(i) records timestamp i once all work queued
// before it has run (a CUDA event on the stream; on the CPU, whose ops run synchronously, the host
// clock). elapsed_ms(a, b) waits for mark b and returns b - a in milliseconds. All marks are made
// when the timer is, so timing allocates nothing inside the timed region.
class StepTimer {
 public:
  virtual ~StepTimer() = default;
  virtual int size() const = 0;
  virtual void mark(int i) = 0;
  virtual double elapsed_ms(int a, int b) = 0;
};

// Work recorded once (a CUDA graph) and replayed on the backend's stream with the same kernel
// arguments and buffer addresses: new data is picked up only through the buffers' contents.
class CapturedWork {
 public:
  virtual ~CapturedWork() = default;
  virtual void replay() = 0;
};

// Told where an op that runs pieces of different kinds (a matrix product, then a GELU) passes from
// one piece to the next, so that the step bench's per-op breakdown can charge each piece to its
// kind. Set with Backend::set_op_piece_listener; nothing is called when none is set.
class OpPieceListener {
 public:
  virtual ~OpPieceListener() = default;
  // The work queued from here to the end of the op (or to the next piece) is `piece` ("gelu").
  virtual void on_op_piece(const char* piece) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  // The activation dtypes this backend can run ops in.
  virtual bool supports(DType act) const = 0;

  // ---- memory (arenas call these once; nothing allocates inside a step) ----
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) = 0;
  virtual void copy_from_host(Tensor dst, const void* src) = 0;  // dst.bytes() bytes
  virtual void copy_to_host(void* dst, Tensor src) = 0;          // waits for the copy
  virtual void copy(Tensor dst, Tensor src) = 0;                 // same dtype and size, same device
  virtual void synchronize() = 0;
  // The stream ops are queued on (a cudaStream_t on the GPU; null where ops run synchronously), for
  // work that must follow them from another stream (engine/dist/: the gradient all-reduce).
  virtual void* native_stream() { return nullptr; }

  // The device's dense matrix-product peak in TFLOP/s for activations of dtype `act` (datasheet),
  // for MFU; 0 when unknown (the CPU), and MFU is then not reported.
  virtual double peak_tflops(DType /*act*/) const { return 0.0; }

  // Profiler ranges (NVTX on the GPU, nothing on the CPU): the timeline reads like the model.
  virtual void range_push(const char* /*name*/) {}
  virtual void range_pop() {}

  // ---- measurement: timing, work capture, profiler brackets, memory (engine/perf/) ----
  // A timer of `marks` timestamps. Default (engine/cpu/timing.cpp): synchronize(), then the host's
  // steady clock; right for any backend whose synchronize() waits for all of its work.
  virtual std::unique_ptr<StepTimer> make_timer(int marks);
  // Work capture (CUDA graphs). Between begin_capture() and end_capture() ops are recorded, not
  // run. Nothing may synchronize, copy to the host or allocate in between, so capture only after
  // a warm-up step has grown the workspace. Host copies (set_batch) belong before the capture.
  // Default: not supported; begin_capture() and end_capture() throw engine::Error.
  virtual bool can_capture() const { return false; }
  virtual void begin_capture();
  virtual std::unique_ptr<CapturedWork> end_capture();
  // Bracket for profilers that capture a range (cudaProfilerStart/Stop, so that
  // `nsys profile --capture-range=cudaProfilerApi` records exactly the steps in between).
  virtual void profiler_start() {}
  virtual void profiler_stop() {}
  // For reports: the device's name ("NVIDIA H100 80GB HBM3"; default name()), bytes in use on it
  // by every process and context (total - free; -1 when unknown), and the bytes of scratch the
  // backend owns beside the arenas (workspaces).
  virtual std::string device_label() const { return name(); }
  virtual int64_t device_bytes_in_use() const { return -1; }
  virtual size_t scratch_bytes() const { return 0; }
  // Where ops report their pieces (see OpPieceListener); nullptr: nobody listens (the default).
  void set_op_piece_listener(OpPieceListener* listener) { piece_listener_ = listener; }

  // ---- elementwise helpers ----
  virtual void fill(Tensor x, float value) = 0;   // any float dtype; i32 gets int(value)
  virtual void cast(Tensor dst, Tensor src) = 0;  // f32 <-> bf16 <-> f16, same numel; same dtype copies

  // ---- embeddings + layernorm ----
  // s[t] = word[ids[t]] + pos[pos_ids[t]] + type[type_ids[t]]      (s: act [T, H], saved for backward)
  // y[t] = (s[t] - mean[t]) * rstd[t] * gamma + beta              (mean, rstd: f32 [T])
  // ids, pos_ids, type_ids: i32 [T]; tables: act [rows, H]; gamma, beta: act [H].
  virtual void embeddings_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids, Tensor pos_ids,
                                  Tensor type_ids, Tensor word, Tensor pos, Tensor type, Tensor gamma, Tensor beta,
                                  float eps) = 0;
  // Accumulates into dword, dpos, dtype (f32 tables) and dgamma, dbeta (f32 [H]). Deterministic:
  // the same inputs give bitwise the same gradients (no float atomics in a varying order).
  virtual void embeddings_backward(Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma, Tensor dbeta, Tensor dy,
                                   Tensor s, Tensor mean, Tensor rstd, Tensor gamma, Tensor ids, Tensor pos_ids,
                                   Tensor type_ids) = 0;

  // ---- residual + dropout + layernorm (the end of each attention and FFN block) ----
  // s = residual + dropout(branch); y = layernorm(s) with gamma, beta.  All act [T, H] but mean, rstd.
  virtual void add_dropout_layernorm_forward(Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor branch,
                                             Tensor residual, Tensor gamma, Tensor beta, float eps, float p,
                                             DropoutRng rng) = 0;
  // ds = d layernorm; d_residual = ds (overwritten); d_branch = dropout_backward(ds) (overwritten);
  // dgamma, dbeta accumulated (f32 [H]).
  virtual void add_dropout_layernorm_backward(Tensor d_branch, Tensor d_residual, Tensor dgamma, Tensor dbeta,
                                              Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma, float p,
                                              DropoutRng rng) = 0;

  // ---- dropout (after the embeddings, before the classifier); y may alias x ----
  virtual void dropout_forward(Tensor y, Tensor x, float p, DropoutRng rng) = 0;
  virtual void dropout_backward(Tensor dx, Tensor dy, float p, DropoutRng rng) = 0;

  // ---- linear layers ----
  // y = act(x W^T + b). x: act [N, in], w: act [out, in], b: act [out] (optional), y: act [N, out].
  // With Activation::gelu (exact erf GELU), pre = x W^T + b is written too (act [N, out]).
  virtual void linear_forward(Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre) = 0;
  // dx = dy W (overwrite, or += when accumulate). When x itself came out of a GELU, pass x's
  // pre-activation and Activation::gelu: dx is then multiplied by gelu'(pre) (the dX of the second
  // FFN matrix lands as the gradient of the first one's output before its GELU).
  virtual void linear_backward_dx(Tensor dx, Tensor dy, Tensor w, bool accumulate, Activation act_of_x,
                                  Tensor pre_of_x) = 0;
  // dw += dy^T x (f32 [out, in]); db += sum over rows of dy (f32 [out], optional).
  virtual void linear_backward_dw(Tensor dw, Tensor db, Tensor dy, Tensor x) = 0;

  // ---- low-rank adapters (LoRA, engine/model/lora.h) on a frozen linear layer ----
  // The adapter's path of y = x W^T + b + scale * dropout(x) A^T B^T, added after the base product:
  //   u = dropout(x) (written to u only when p > 0), z = u A^T (saved for backward),
  //   t[:, col:col+out] += scale * z B^T    with t = y, or t = pre when act is gelu: then
  //   y = gelu(pre) (col 0), for the FFN's first matrix whose base product wrote pre.
  // x: act [N, in]; a: act [r, in]; b: act [out, r]; z: act [N, r]; u: act [N, in] (may be empty
  // when p == 0); y (and pre): act [N, C] with C >= col + out.
  virtual void lora_forward(Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b, const LoraArgs& args,
                            Activation act, Tensor pre) = 0;
  // dz = scale * dy[:, col:col+out] B (act [N, r], scratch); da += dz^T u; db += scale * dy^T z
  // (da, db: f32); u is regenerated from x when p > 0. dx += dropout_backward(dz A), then, with
  // act_of_x gelu, dx *= gelu'(pre_of_x) (the base layer's dx was written without its GELU factor).
  // dx may be empty: nothing below needs it.
  virtual void lora_backward(Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy, Tensor x, Tensor z,
                             Tensor a, Tensor b, const LoraArgs& args, Activation act_of_x, Tensor pre_of_x) = 0;

  // ---- multi-head self-attention over the packed layout ----
  // qkv: act [T, 3H] as [q | k | v] with heads contiguous inside each (head h of q is columns
  // h*d .. h*d+d-1), as the fused QKV projection writes it. out: act [T, H] in the same head order.
  // lse: f32 [T, heads], log-sum-exp of each scaled score row, saved for backward.
  // Probabilities are dropped with p from rng (attention_dropout_index). scale is 1/sqrt(d) for BERT.
  virtual void attention_forward(Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens, const BatchShape& batch,
                                 int heads, float scale, float p, DropoutRng rng) = 0;
  // dqkv: act [T, 3H], overwritten.
  virtual void attention_backward(Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse, Tensor cu_seqlens,
                                  const BatchShape& batch, int heads, float scale, float p, DropoutRng rng) = 0;

  // ---- pooler pieces ----
  // out[b] = x[rows[b]]  (rows: i32 [B], e.g. the [CLS] row of each sequence, cu_seqlens[b]).
  virtual void gather_rows(Tensor out, Tensor x, Tensor rows) = 0;
  // dx[rows[b]] += dout[b]; rows are distinct.
  virtual void scatter_add_rows(Tensor dx, Tensor dout, Tensor rows) = 0;
  virtual void tanh_forward(Tensor y, Tensor x) = 0;
  virtual void tanh_backward(Tensor dx, Tensor dy, Tensor y) = 0;  // dx = dy * (1 - y^2)

  // ---- losses: forward and backward in one pass ----
  // Rows with label < 0 are ignored (loss 0, gradient 0). losses: f32 [N] per-row loss;
  // dlogits = scale * (softmax(logits) - onehot(label)), act [N, C] (scale is 1 / rows counted);
  // dlogits (dpred below) may be empty to compute the losses only, and may alias logits.
  virtual void cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor labels, float scale) = 0;
  // losses[n] = (pred[n] - target[n])^2; dpred = scale * 2 (pred - target). pred: act [N, 1], target f32 [N].
  virtual void mse(Tensor losses, Tensor dpred, Tensor pred, Tensor target, float scale) = 0;
  // Span loss of extractive question answering, per sequence of the packed batch. logits: act
  // [T, 2], column 0 the start and column 1 the end logit of every token; positions: i32 [B, 2], the
  // gold start and end token of sequence b counted from its first token (cu_seqlens[b]). For each
  // sequence b and column j, a softmax over that sequence's tokens:
  //   losses[b, j] = logsumexp_t logits[t, j] - logits[cu_seqlens[b] + pos, j]        (f32 [B, 2])
  //   dlogits[t, j] = scale_j * (softmax_t logits[., j] - [t == cu_seqlens[b] + pos])  (act [T, 2])
  // with scale_0 = scale_start, scale_1 = scale_end. As Hugging Face's BertForQuestionAnswering
  // clamps positions to [0, ignored_index]: a negative position counts as 0 ([CLS]); a position at
  // or past the sequence's length is ignored (loss 0, gradient 0). dlogits may be empty (losses only).
  virtual void span_cross_entropy(Tensor losses, Tensor dlogits, Tensor logits, Tensor cu_seqlens, Tensor positions,
                                  const BatchShape& batch, float scale_start, float scale_end) = 0;

  // ---- optimizer ----
  // norm[0] = sqrt(sum of grads^2) over the flat f32 buffer, reduced in a fixed order.
  virtual void global_norm(Tensor norm, Tensor grads) = 0;
  // AdamW with decoupled weight decay on the flat f32 master buffer `params` with moments m, v.
  // Gradients are multiplied by min(1, max_grad_norm / (norm[0] + 1e-6)) when max_grad_norm > 0;
  // norm is the f32 [1] tensor global_norm() wrote (read on the device: no host round trip).
  // When `working` is non-empty (a bf16 copy the forward pass reads) it is rewritten in the same pass.
  virtual void adamw(Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                     const AdamWArgs& args) = 0;

 protected:
  // Implementations call this inside an op where a piece of another kind begins (see above).
  void op_piece(const char* piece) {
    if (piece_listener_) piece_listener_->on_op_piece(piece);
  }

 private:
  OpPieceListener* piece_listener_ = nullptr;
};

// Choices a backend may offer. The CPU backend has one attention and ignores them.
struct BackendOptions {
  std::string attention = "auto";  // cuda: "flash" (hand-written fused, bf16), "cudnn" (cuDNN fused),
                                   // "simple", or "auto": flash for bf16, simple for fp32
  int device = 0;                   // cuda: which GPU
};

// The backends this build has. "cpu" (the fast CPU backend, engine/cpu_fast/) and "cpu-ref" (the
// plain-loop reference, engine/cpu/) always; "cuda" when built with CUDA and a GPU is present.
std::unique_ptr<Backend> make_backend(const std::string& name, const BackendOptions& options = {});
// True when the build has the CUDA backend and a GPU is visible (GPU tests skip otherwise).
bool cuda_available();

}  // namespace engine
