// LoRA adapters (Hu et al., 2021) on a frozen BERT, as Hugging Face peft defines them: an adapted
// linear layer computes y = x W^T + b + (alpha / r) * dropout(x) A^T B^T with A [r, in] drawn
// Kaiming-uniform (a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))) and B [out, r] zero, so step 0 is
// the base model exactly. Every base parameter is frozen except the head: peft's sequence- and
// token-classification task types save and train `classifier` (modules_to_save) and leave the
// pooler frozen, and so does the engine. Frozen parameters have no gradient and no optimizer state
// (engine/model/params.h), and the backward pass skips their weight-gradient products and the
// embeddings' backward (frozen LayerNorms' dgamma/dbeta, which the layernorm op always writes, land
// in one 2H scratch that nothing reads: BertModel::frozen_ln_sink_).
//
// Target modules are matched as peft matches a list: the module's full name equals the target or
// ends with "." + target, over the six linear layers of each encoder layer
// (attention.self.query/key/value, attention.output.dense, intermediate.dense, output.dense).
// "output.dense" thus also matches attention.output.dense, as in peft.
//
// Parameter names are peft's keys without its "base_model.model." prefix:
//   bert.encoder.layer.<i>.attention.self.query.lora_A.weight   [r, in]
//   bert.encoder.layer.<i>.attention.self.query.lora_B.weight   [out, r]
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/backend.h"
#include "engine/model/config.h"
#include "engine/model/params.h"

namespace engine {

struct LoraConfig {
  int64_t r = 0;  // rank; 0: no adapters (full fine-tuning)
  float alpha = 8.f;
  float dropout = 0.f;
  std::vector<std::string> target_modules{"query", "value"};
  std::string bias = "none";  // the only kind supported: biases stay frozen
  bool enabled() const { return r > 0; }
  float scale() const { return alpha / float(r); }
  // Throws a clear error for r < 1, a dropout outside [0, 1), a bias other than none, or a target
  // that matches none of the six linear layers of an encoder layer (or matches the pooler, which
  // peft would adapt and the engine does not).
  void validate() const;
};

// Splits "query,value" into names (spaces ignored).
std::vector<std::string> split_target_modules(const std::string& list);

// The six linear layers of an encoder layer an adapter can sit on, in forward order.
enum class LoraSite : int { query, key, value, attention_output, intermediate, output, count };
// Path inside an encoder layer ("attention.self.query").
const char* lora_site_path(LoraSite site);
// Full module name of a site in layer i ("bert.encoder.layer.3.attention.self.query").
std::string lora_module_name(int layer, LoraSite site);

// True for the parameters an adapter adds (".lora_A." / ".lora_B." in the name).
bool is_lora_parameter(const std::string& name);
// True for the head peft trains and saves with the adapters (modules_to_save: classifier).
bool is_lora_head_parameter(const std::string& name);

// The adapters of one model: their parameters in the store, their saved activations, and the two
// backend calls per adapted layer. The model calls forward() after each adapted layer's base
// product and backward() after its base backward.
class LoraAdapters {
 public:
  LoraAdapters(const LoraConfig& lora, const BertConfig& config);

  const LoraConfig& config() const { return lora_; }
  // Whether `site` is adapted (the same sites in every encoder layer).
  bool has(LoraSite site) const { return adapted_[size_t(site)]; }
  int adapted_layers_per_encoder_layer() const;

  // Adds every A and B to `params` (decayed, trainable) and freezes every other parameter but the
  // classifier. Call after declare_parameters(), before params.plan().
  void declare(ParamStore& params) const;
  // Plans the saved z = dropout(x) A^T of each adapter and the shared scratch in `arena`.
  void plan(Arena& arena, DType act, int64_t max_tokens);
  // Takes the views of A, B and their gradients once the parameter arena is allocated.
  void bind(const ParamStore& params);
  // The batch's first token in the global batch of a data-parallel step (BertModel::set_global_offset):
  // the adapter dropout of token t then draws what one process would draw for that token.
  void set_token_offset(int64_t token_offset) { token_offset_ = token_offset; }

  // The adapter's path of layer `layer`'s `site` over the first T rows: adds into y (columns
  // [col, col + out): the fused QKV output takes query at 0, key at H, value at 2H), or into pre
  // and then y = gelu(pre) for the intermediate layer. p: the adapter dropout of this pass (0 in
  // evaluation), seed: the step's dropout seed.
  void forward(Backend& backend, int layer, LoraSite site, Tensor y, Tensor x, int64_t T, float p, uint64_t seed,
               Activation act = Activation::none, Tensor pre = {});
  // Accumulates dA, dB and adds the path's input gradient into dx (may be empty).
  void backward(Backend& backend, int layer, LoraSite site, Tensor dx, Tensor dy, Tensor x, int64_t T, float p,
                uint64_t seed, Activation act_of_x = Activation::none, Tensor pre_of_x = {});

 private:
  struct Adapter {
    Tensor a, b, da, db;  // working weights (act) and f32 gradients
    Tensor z;             // saved [T, r]
    int64_t in = 0, out = 0, col = 0;
  };
  Adapter& at(int layer, LoraSite site) { return adapters_[size_t(layer) * size_t(LoraSite::count) + size_t(site)]; }
  LoraArgs args(int layer, LoraSite site, int64_t in, int64_t col, float p, uint64_t seed) const;

  LoraConfig lora_;
  BertConfig config_;
  bool adapted_[size_t(LoraSite::count)] = {};
  std::vector<Adapter> adapters_;  // [layer][site], only adapted ones have tensors
  Tensor dz_, u_;                  // backward scratch [T, r]; dropped input [T, max(H, I)] when dropout > 0
  int64_t token_offset_ = 0;
};

}  // namespace engine
