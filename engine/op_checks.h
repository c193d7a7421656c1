// The argument contract of the Backend ops (engine/backend.h), written once. Every backend method
// starts by calling its op's check_<op>() with an OpCheck made for that backend; the function
// throws engine::Error naming the op and the tensor ("linear_forward: w is f32[3,4]@cpu, expected
// shape [5,4]") and returns the sizes the backend needs (activation dtype, T, H, ...). Because both
// backends run the same function, they cannot drift apart on what a valid call is.
//
// What lives here: dtypes, shapes, devices, dropout probabilities, aliasing rules and scalar
// arguments, i.e. everything that can be checked from the tensor views alone. What does not:
// checks that read tensor contents (ids inside their table, cu_seqlens prefix sums, labels below
// the class count; the CPU backend does those, the CUDA backend cannot without a host round trip)
// and limits of one implementation (the CUDA row kernels' largest hidden size). Backends add those
// after the shared call, with the same OpCheck so the messages read alike.
//
// Plain C++: engine/ has no CUDA headers, and cuda/cuda_backend.cu includes this file.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "engine/backend.h"

namespace engine {

// Validation for one op on one backend; every message is prefixed with the op's name.
class OpCheck {
 public:
  // `backend` fixes the device every tensor must be on and the activation dtypes it accepts
  // (Backend::supports), so the checks follow the backend's own declaration.
  OpCheck(const char* op, const Backend& backend);

  // Any condition, with a message made of parts.
  template <typename... Parts>
  void that(bool cond, const Parts&... parts) const {
    if (!cond) fail(op_, ": ", parts...);
  }
  // On this backend's device and pointing at memory (unless it has no elements).
  void on_device(const char* name, const Tensor& t) const;
  // The op's activation dtype, read from its main input; must be one the backend runs.
  DType act_of(const char* name, const Tensor& t) const;
  // Another activation of the op: on the device and of the op's activation dtype `act`.
  void act(const char* name, const Tensor& t, DType act) const;
  // On the device with exactly this dtype.
  void dtype(const char* name, const Tensor& t, DType want) const;
  // Exactly these dimensions.
  void shape(const char* name, const Tensor& t, std::initializer_list<int64_t> dims) const;
  // Exactly this many elements, any shape.
  void numel(const char* name, const Tensor& t, int64_t n) const;
  // A 2-D tensor; the caller reads its dims afterwards.
  void matrix(const char* name, const Tensor& t) const;
  // Dropout probability in [0, 1).
  void probability(float p) const;
  // Every value of the i32 tensor `ids` lies in [0, limit). Reads the values on the host, so only
  // a backend whose memory the host can read (the CPU) calls it.
  void host_indices(const char* name, const Tensor& ids, int64_t limit, const char* what) const;

  const char* op() const { return op_; }

 private:
  const char* op_;
  const Backend& backend_;
  Device device_;  // backend_.device(), read once
};

// ---- what the checks return: the sizes each family of ops runs with ----

// Row-wise ops over [T, H] activations (embeddings, residual + dropout + layernorm).
struct LayerNormShape {
  DType act;
  int64_t T, H;
};
// x [N, in] times w^T [in, out].
struct LinearShape {
  DType act;
  int64_t N, in, out;
};
// Packed multi-head attention: qkv [T, 3H], H = heads * head_dim, B sequences.
struct AttentionShape {
  DType act;
  int64_t T, H, B;
  int heads;
  int64_t head_dim;
};
// B rows of width C picked out of (or added into) a [rows, C] tensor.
struct GatherShape {
  DType act;
  int64_t B, C;
};
// N rows of C classes (C == 1 for mse).
struct LossShape {
  DType act;
  int64_t N, C;
};

// ---- one function per op; arguments as in Backend ----

void check_copy_from_host(const OpCheck& c, Tensor dst, const void* src);
void check_copy_to_host(const OpCheck& c, const void* dst, Tensor src);
void check_copy(const OpCheck& c, Tensor dst, Tensor src);
void check_fill(const OpCheck& c, Tensor x);
void check_cast(const OpCheck& c, Tensor dst, Tensor src);

LayerNormShape check_embeddings_forward(const OpCheck& c, Tensor y, Tensor s, Tensor mean, Tensor rstd, Tensor ids,
                                        Tensor pos_ids, Tensor type_ids, Tensor word, Tensor pos, Tensor type,
                                        Tensor gamma, Tensor beta, float eps);
LayerNormShape check_embeddings_backward(const OpCheck& c, Tensor dword, Tensor dpos, Tensor dtype, Tensor dgamma,
                                         Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd, Tensor gamma,
                                         Tensor ids, Tensor pos_ids, Tensor type_ids);
LayerNormShape check_add_dropout_layernorm_forward(const OpCheck& c, Tensor y, Tensor s, Tensor mean, Tensor rstd,
                                                   Tensor branch, Tensor residual, Tensor gamma, Tensor beta, float eps,
                                                   float p);
LayerNormShape check_add_dropout_layernorm_backward(const OpCheck& c, Tensor d_branch, Tensor d_residual, Tensor dgamma,
                                                    Tensor dbeta, Tensor dy, Tensor s, Tensor mean, Tensor rstd,
                                                    Tensor gamma, float p);

// Both return the activation dtype.
DType check_dropout_forward(const OpCheck& c, Tensor y, Tensor x, float p);
DType check_dropout_backward(const OpCheck& c, Tensor dx, Tensor dy, float p);

LinearShape check_linear_forward(const OpCheck& c, Tensor y, Tensor x, Tensor w, Tensor b, Activation act, Tensor pre);
LinearShape check_linear_backward_dx(const OpCheck& c, Tensor dx, Tensor dy, Tensor w, bool accumulate,
                                     Activation act_of_x, Tensor pre_of_x);
LinearShape check_linear_backward_dw(const OpCheck& c, Tensor dw, Tensor db, Tensor dy, Tensor x);

// A low-rank adapter's path: x [N, in], A [r, in], B [out, r], written into columns
// [col, col + out) of C-column outputs.
struct LoraShape {
  DType act;
  int64_t N, in, r, out, C;
};
LoraShape check_lora_forward(const OpCheck& c, Tensor y, Tensor z, Tensor u, Tensor x, Tensor a, Tensor b,
                             const LoraArgs& args, Activation act_fn, Tensor pre);
LoraShape check_lora_backward(const OpCheck& c, Tensor dx, Tensor da, Tensor db, Tensor dz, Tensor u, Tensor dy,
                              Tensor x, Tensor z, Tensor a, Tensor b, const LoraArgs& args, Activation act_of_x,
                              Tensor pre_of_x);

AttentionShape check_attention_forward(const OpCheck& c, Tensor out, Tensor lse, Tensor qkv, Tensor cu_seqlens,
                                       const BatchShape& batch, int heads, float scale, float p);
AttentionShape check_attention_backward(const OpCheck& c, Tensor dqkv, Tensor dout, Tensor qkv, Tensor out, Tensor lse,
                                        Tensor cu_seqlens, const BatchShape& batch, int heads, float scale, float p);

GatherShape check_gather_rows(const OpCheck& c, Tensor out, Tensor x, Tensor rows);
GatherShape check_scatter_add_rows(const OpCheck& c, Tensor dx, Tensor dout, Tensor rows);
// Both return the activation dtype.
DType check_tanh_forward(const OpCheck& c, Tensor y, Tensor x);
DType check_tanh_backward(const OpCheck& c, Tensor dx, Tensor dy, Tensor y);

LossShape check_cross_entropy(const OpCheck& c, Tensor losses, Tensor dlogits, Tensor logits, Tensor labels);
LossShape check_mse(const OpCheck& c, Tensor losses, Tensor dpred, Tensor pred, Tensor target);
// The span loss of question answering: T tokens of B sequences, two logit columns (start, end).
struct SpanLossShape {
  DType act;
  int64_t T, B;
};
SpanLossShape check_span_cross_entropy(const OpCheck& c, Tensor losses, Tensor dlogits, Tensor logits,
                                       Tensor cu_seqlens, Tensor positions, const BatchShape& batch);

void check_global_norm(const OpCheck& c, Tensor norm, Tensor grads);
// Returns the number of parameters.
int64_t check_adamw(const OpCheck& c, Tensor params, Tensor grads, Tensor m, Tensor v, Tensor working, Tensor norm,
                    const AdamWArgs& args);

}  // namespace engine
