#include "engine/model/lora.h"

#include <algorithm>

namespace engine {

namespace {

constexpr const char* kSitePaths[] = {"attention.self.query", "attention.self.key",  "attention.self.value",
                                      "attention.output.dense", "intermediate.dense", "output.dense"};

// peft's rule for a list of targets: the full module name equals the target or ends with "." + it.
bool target_matches(const std::string& module, const std::string& target) {
  if (module == target) return true;
  const std::string suffix = "." + target;
  return module.size() > suffix.size() && module.compare(module.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Dropout streams of the adapters, apart from the model's own (16 + 4 * layer + 0..2).
uint32_t adapter_stream(int layer, LoraSite site) {
  return 0x10000u + uint32_t(layer) * uint32_t(LoraSite::count) + uint32_t(site);
}

}  // namespace

const char* lora_site_path(LoraSite site) { return kSitePaths[size_t(site)]; }

std::string lora_module_name(int layer, LoraSite site) {
  return "bert.encoder.layer." + std::to_string(layer) + "." + lora_site_path(site);
}

bool is_lora_parameter(const std::string& name) {
  return name.find(".lora_A.") != std::string::npos || name.find(".lora_B.") != std::string::npos;
}

bool is_lora_head_parameter(const std::string& name) {
  return name.rfind("classifier.", 0) == 0 || name.rfind("qa_outputs.", 0) == 0;
}

std::vector<std::string> split_target_modules(const std::string& list) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : list + ",") {
    if (c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else if (c != ' ') {
      cur += c;
    }
  }
  return out;
}

void LoraConfig::validate() const {
  ENGINE_CHECK(r >= 1, "--lora-r must be at least 1 (got ", r, ")");
  ENGINE_CHECK(alpha > 0.f, "--lora-alpha must be positive (got ", alpha, ")");
  ENGINE_CHECK(dropout >= 0.f && dropout < 1.f, "--lora-dropout must lie in [0, 1) (got ", dropout, ")");
  ENGINE_CHECK(bias == "none", "--lora-bias: only none is supported (got '", bias, "')");
  ENGINE_CHECK(!target_modules.empty(), "--lora-target-modules is empty");
  for (const std::string& t : target_modules) {
    bool any = false;
    for (int s = 0; s < int(LoraSite::count); ++s) any = any || target_matches(lora_module_name(0, LoraSite(s)), t);
    ENGINE_CHECK(any, "--lora-target-modules: unknown module '", t,
                 "' (BERT's adaptable linear layers: query, key, value, attention.output.dense, intermediate.dense, "
                 "output.dense)");
    ENGINE_CHECK(!target_matches("bert.pooler.dense", t), "--lora-target-modules: '", t,
                 "' also matches bert.pooler.dense, which the engine does not adapt (name the layers: "
                 "attention.output.dense, intermediate.dense, output.dense)");
  }
}

LoraAdapters::LoraAdapters(const LoraConfig& lora, const BertConfig& config) : lora_(lora), config_(config) {
  lora_.validate();
  for (int s = 0; s < int(LoraSite::count); ++s)
    for (const std::string& t : lora_.target_modules)
      adapted_[s] = adapted_[s] || target_matches(lora_module_name(0, LoraSite(s)), t);
  adapters_.resize(size_t(config_.num_hidden_layers) * size_t(LoraSite::count));
  const int64_t H = config_.hidden_size, I = config_.intermediate_size;
  for (int layer = 0; layer < config_.num_hidden_layers; ++layer) {
    for (int s = 0; s < int(LoraSite::count); ++s) {
      Adapter& ad = at(layer, LoraSite(s));
      const LoraSite site = LoraSite(s);
      ad.in = site == LoraSite::output ? I : H;
      ad.out = site == LoraSite::intermediate ? I : H;
      ad.col = site == LoraSite::key ? H : site == LoraSite::value ? 2 * H : 0;
    }
  }
}

int LoraAdapters::adapted_layers_per_encoder_layer() const {
  return int(std::count(std::begin(adapted_), std::end(adapted_), true));
}

void LoraAdapters::declare(ParamStore& params) const {
  for (int layer = 0; layer < config_.num_hidden_layers; ++layer) {
    for (int s = 0; s < int(LoraSite::count); ++s) {
      if (!adapted_[s]) continue;
      const Adapter& ad = adapters_[size_t(layer) * size_t(LoraSite::count) + size_t(s)];
      const std::string m = lora_module_name(layer, LoraSite(s));
      params.add_decayed(m + ".lora_A.weight", {lora_.r, ad.in});
      params.add_decayed(m + ".lora_B.weight", {ad.out, lora_.r});
    }
  }
  for (const ParamInfo& p : params.list())
    if (!is_lora_parameter(p.name) && !is_lora_head_parameter(p.name)) params.freeze(p.name);
}

void LoraAdapters::plan(Arena& arena, DType act, int64_t max_tokens) {
  for (int layer = 0; layer < config_.num_hidden_layers; ++layer)
    for (int s = 0; s < int(LoraSite::count); ++s)
      if (adapted_[s])
        arena.plan(&at(layer, LoraSite(s)).z, act, {max_tokens, lora_.r},
                   "lora." + std::to_string(layer) + "." + lora_site_path(LoraSite(s)) + ".z");
  arena.plan(&dz_, act, {max_tokens, lora_.r}, "lora.grad_z");
  if (lora_.dropout > 0.f)
    arena.plan(&u_, act, {max_tokens * std::max(config_.hidden_size, config_.intermediate_size)}, "lora.dropped_input");
}

void LoraAdapters::bind(const ParamStore& params) {
  for (int layer = 0; layer < config_.num_hidden_layers; ++layer) {
    for (int s = 0; s < int(LoraSite::count); ++s) {
      if (!adapted_[s]) continue;
      Adapter& ad = at(layer, LoraSite(s));
      const std::string m = lora_module_name(layer, LoraSite(s));
      ad.a = params.working(m + ".lora_A.weight");
      ad.b = params.working(m + ".lora_B.weight");
      ad.da = params.grad(m + ".lora_A.weight");
      ad.db = params.grad(m + ".lora_B.weight");
    }
  }
}

LoraArgs LoraAdapters::args(int layer, LoraSite site, int64_t in, int64_t col, float p, uint64_t seed) const {
  LoraArgs a;
  a.scale = lora_.scale();
  a.p = p;
  // The dropped input is [T, in]: element t * in + c, shifted by the tokens before this batch.
  a.rng = DropoutRng{seed, adapter_stream(layer, site), uint64_t(token_offset_) * uint64_t(in)};
  a.col = col;
  return a;
}

void LoraAdapters::forward(Backend& backend, int layer, LoraSite site, Tensor y, Tensor x, int64_t T, float p,
                           uint64_t seed, Activation act, Tensor pre) {
  Adapter& ad = at(layer, site);
  Tensor u = p > 0.f ? Tensor(u_.data, u_.dtype, u_.device, {T, ad.in}) : Tensor{};
  backend.lora_forward(y, ad.z.rows(T), u, x, ad.a, ad.b, args(layer, site, ad.in, ad.col, p, seed), act, pre);
}

void LoraAdapters::backward(Backend& backend, int layer, LoraSite site, Tensor dx, Tensor dy, Tensor x, int64_t T,
                            float p, uint64_t seed, Activation act_of_x, Tensor pre_of_x) {
  Adapter& ad = at(layer, site);
  Tensor u = p > 0.f ? Tensor(u_.data, u_.dtype, u_.device, {T, ad.in}) : Tensor{};
  backend.lora_backward(dx, ad.da, ad.db, dz_.rows(T), u, dy, x, ad.z.rows(T), ad.a, ad.b,
                        args(layer, site, ad.in, ad.col, p, seed), act_of_x, pre_of_x);
}

}  // namespace engine
