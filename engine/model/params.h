// ParamStore: every parameter of a model in flat buffers, addressed by Hugging Face name.
// One f32 master buffer, one f32 gradient buffer, the two AdamW moments (f32) and, when the
// activations are bf16, a bf16 working copy the forward pass reads. Flat buffers make AdamW, the
// gradient norm, zeroing and (later) an all-reduce single launches.
//
// Layout: parameters that get weight decay come first (every weight matrix and embedding table),
// then those that do not (biases and LayerNorm parameters, as Hugging Face's Trainer groups them),
// so AdamW takes one boundary. Each parameter starts on a 64-element boundary (vector loads).
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
};

class ParamStore {
 public:
  static constexpr int64_t kAlign = 64;

  // Declare in two groups: all decayed parameters first, then call begin_no_decay().
  // follows_previous: place directly after the previous parameter, with no alignment gap, so the
  // two form one contiguous span (the fused QKV weight and bias).
  void add(const std::string& name, std::vector<int64_t> shape, bool follows_previous = false);
  void begin_no_decay();
  // Places the flat buffers in `arena` (call once all parameters are added, before arena.allocate()).
  // working_dtype f32 means the forward pass reads the master copy directly.
  void plan(Arena& arena, DType working_dtype);

  const std::vector<ParamInfo>& list() const { return params_; }
  const ParamInfo* find(const std::string& name) const;
  const ParamInfo& get(const std::string& name) const;
  int64_t size() const { return total_; }       // elements in each flat buffer (with alignment gaps)
  int64_t count() const;                         // real parameters, without gaps
  int64_t decay_end() const { return decay_end_; }

  // Views of one parameter (or `rows` consecutive parameters' worth: see fused()).
  Tensor master(const std::string& name) const { return view(master_, get(name)); }
  Tensor grad(const std::string& name) const { return view(grads_, get(name)); }
  Tensor working(const std::string& name) const { return view(working(), get(name)); }
  // A view of `count` elements starting at parameter `name` in buffer `flat`, shaped `dims`:
  // used for the fused QKV weight and bias, which span three parameters.
  static Tensor span(Tensor flat, const ParamInfo& first, std::initializer_list<int64_t> dims);

  Tensor master() const { return master_; }
  Tensor grads() const { return grads_; }
  Tensor adam_m() const { return m_; }
  Tensor adam_v() const { return v_; }
  Tensor working() const { return working_.empty() ? master_ : working_; }
  bool has_separate_working_copy() const { return !working_.empty(); }

  // Host transfers by name, in f32 (used by checkpoints and tests). set_host() refreshes the
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
  int64_t total_ = 0;
  int64_t decay_end_ = -1;
  Tensor master_, grads_, m_, v_, working_;
};

}  // namespace engine
