// ParamStore: every parameter of a model in flat buffers, addressed by Hugging Face name.
// One f32 master buffer, one f32 gradient buffer, the two AdamW moments (f32) and, when the
// activations are bf16, a bf16 working copy the forward pass reads. Flat buffers make AdamW, the
// gradient norm, zeroing and (later) an all-reduce single launches.
//
// Layout: trainable parameters that get weight decay come first (every weight matrix and embedding
// table), then trainable ones that do not (biases and LayerNorm parameters, as Hugging Face's
// Trainer groups them), so AdamW takes one boundary; frozen parameters (the base model under LoRA
// adapters, freeze()) come last. The gradient buffer and the AdamW moments cover the trainable
// prefix only: a frozen parameter has no gradient and no optimizer state, and AdamW, the gradient
// norm and zeroing never touch it. Offsets are assigned by plan(); each parameter starts on a
// 64-element boundary (vector loads).
// Registration order is memory order: the model registers query, key and value weights back to
// back, unaligned (follows_previous), so they form one fused [3H, H] QKV matrix; the same for biases.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/backend.h"

namespace engine {

struct ParamInfo {
  std::string name;            // HF name, e.g. bert.encoder.layer.0.attention.self.query.weight
  std::vector<int64_t> shape;  // HF shape
  int64_t offset = 0;          // in elements, into every flat buffer
  int64_t numel = 0;
  bool decay = true;
  bool trainable = true;         // false: frozen (freeze()), no gradient or optimizer state
  bool follows_previous = false;
};

class ParamStore {
 public:
  static constexpr int64_t kAlign = 64;

  // Declare in two groups: all decayed parameters first, then call begin_no_decay().
  // follows_previous: place directly after the previous parameter, with no alignment gap, so the
  // two form one contiguous span (the fused QKV weight and bias).
  void add(const std::string& name, std::vector<int64_t> shape, bool follows_previous = false);
  void begin_no_decay();
  // A trainable weight matrix that gets weight decay, whichever group is open (LoRA adapters,
  // declared after the base model).
  void add_decayed(const std::string& name, std::vector<int64_t> shape);
  // Marks a declared parameter frozen (before plan()). Parameters that follow one another
  // (follows_previous) must be frozen together.
  void freeze(const std::string& name);
  // Places the flat buffers in `arena` (call once all parameters are added, before arena.allocate()).
  // working_dtype f32 means the forward pass reads the master copy directly.
  void plan(Arena& arena, DType working_dtype);

  const std::vector<ParamInfo>& list() const { return params_; }
  const ParamInfo* find(const std::string& name) const;
  const ParamInfo& get(const std::string& name) const;
  int64_t size() const { return total_; }       // elements in the master buffer (with alignment gaps)
  int64_t count() const;                         // real parameters, without gaps
  int64_t trainable_count() const;               // real trainable parameters, without gaps
  // Elements of the trainable prefix: the size of the gradient and moment buffers.
  int64_t trainable_size() const { return trainable_end_; }
  int64_t decay_end() const { return decay_end_; }
  // Bytes of the gradient buffer and the two AdamW moments (the training state that scales with
  // what trains; the master weights and working copy are the same under full fine-tuning and LoRA).
  int64_t optimizer_state_bytes() const { return 3 * int64_t(sizeof(float)) * trainable_end_; }

  // Views of one parameter (or `rows` consecutive parameters' worth: see fused()).
  Tensor master(const std::string& name) const { return view(master_, get(name)); }
  // Empty (data == nullptr) for a frozen parameter.
  Tensor grad(const std::string& name) const;
  Tensor working(const std::string& name) const { return view(working(), get(name)); }
  // A view of `count` elements starting at parameter `name` in buffer `flat`, shaped `dims`:
  // used for the fused QKV weight and bias, which span three parameters.
  static Tensor span(Tensor flat, const ParamInfo& first, std::initializer_list<int64_t> dims);

  Tensor master() const { return master_; }
  // The trainable prefix of the master buffer and of the working copy: what AdamW updates.
  Tensor trainable_master() const { return master_.rows(trainable_end_); }
  Tensor trainable_working() const { return working_.empty() ? Tensor{} : working_.rows(trainable_end_); }
  Tensor grads() const { return grads_; }
  Tensor adam_m() const { return m_; }
  Tensor adam_v() const { return v_; }
  Tensor working() const { return working_.empty() ? master_ : working_; }
  bool has_separate_working_copy() const { return !working_.empty(); }

  // Host transfers by name, in f32 (used by checkpoints and tests; grad_host of a frozen parameter
  // is an error). set_host() refreshes the
  // working copy of that parameter too.
  std::vector<float> get_host(Backend& backend, const std::string& name) const;
  std::vector<float> grad_host(Backend& backend, const std::string& name) const;
  void set_host(Backend& backend, const std::string& name, const std::vector<float>& values);
  // Whole master buffer to and from the host (training state, tests).
  std::vector<float> master_host(Backend& backend) const;
  // Rewrites the working copy from the master buffer (after loading or initialising).
  void sync_working(Backend& backend);

 private:
  static Tensor view(Tensor flat, const ParamInfo& p);

  std::vector<ParamInfo> params_;
  std::map<std::string, size_t> index_;
  bool no_decay_ = false;  // begin_no_decay() was called
  int64_t total_ = 0, decay_end_ = 0, trainable_end_ = 0;
  Tensor master_, grads_, m_, v_, working_;
};

}  // namespace engine
