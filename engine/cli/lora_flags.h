// The LoRA flags of `engine finetune`, named as peft.LoraConfig names them: --peft lora turns
// adapters on; --lora-r, --lora-alpha, --lora-dropout, --lora-target-modules, --lora-bias set them.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/model/lora.h"

namespace engine::cli {

struct LoraFlags {
  std::string peft = "none";
  int64_t r = 8;
  float alpha = 8.f;
  float dropout = 0.f;
  std::string target_modules = "query,value";
  std::string bias = "none";

  // r = 0 (no adapters) for --peft none; a checked LoraConfig for --peft lora.
  LoraConfig resolve() const {
    LoraConfig l;
    if (peft == "none") return l;
    ENGINE_CHECK(peft == "lora", "--peft must be none or lora (got '", peft, "')");
    l.r = r;
    l.alpha = alpha;
    l.dropout = dropout;
    l.target_modules = split_target_modules(target_modules);
    l.bias = bias;
    l.validate();
    return l;
  }
};

inline std::shared_ptr<LoraFlags> add_lora_flags(CLI::App* cmd) {
  auto f = std::make_shared<LoraFlags>();
  cmd->add_option("--peft", f->peft,
                  "none (full fine-tuning) or lora: low-rank adapters on a frozen --model, the classifier trained "
                  "too; the model directories saved are peft adapter directories")
      ->capture_default_str();
  cmd->add_option("--lora-r", f->r, "LoRA rank")->capture_default_str();
  cmd->add_option("--lora-alpha", f->alpha, "LoRA alpha (the adapters' output is scaled by alpha / r)")
      ->capture_default_str();
  cmd->add_option("--lora-dropout", f->dropout, "dropout on each adapter's input")->capture_default_str();
  cmd->add_option("--lora-target-modules", f->target_modules,
                  "comma-separated layers to adapt, matched as peft matches (a name or its ending): query, key, "
                  "value, attention.output.dense, intermediate.dense, output.dense (also matches "
                  "attention.output.dense)")
      ->capture_default_str();
  cmd->add_option("--lora-bias", f->bias, "none (the only kind supported: biases stay frozen)")->capture_default_str();
  return f;
}

}  // namespace engine::cli
