// LoRA adapter directories in Hugging Face peft's layout, so that
//   PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(BASE), DIR)
// loads what the engine trained, and the engine loads what peft saved:
//   adapter_config.json         peft_type LORA, task_type, r, lora_alpha, lora_dropout,
//                               target_modules, bias, modules_to_save, base_model_name_or_path
//   adapter_model.safetensors   base_model.model.<module>.lora_A.weight [r, in],
//                               base_model.model.<module>.lora_B.weight [out, r] and the head
//                               peft saves with them (modules_to_save: base_model.model.classifier.*)
// The engine also writes config.json (labels, architecture) and the vocabulary next to them, and
// records in config.json a fingerprint of the base weights the adapters were trained on, which
// loading checks. `engine merge` folds the adapters into the base: W += (alpha / r) B A.
#pragma once
#include <string>

#include "engine/model/bert.h"

namespace engine {

constexpr const char* kAdapterConfigFile = "adapter_config.json";
constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";
// config.json key of the base fingerprint (base_fingerprint()).
constexpr const char* kAdapterBaseKey = "engine_adapter_base_fnv1a64";

// True when dir holds adapter_config.json.
bool is_adapter_dir(const std::string& dir);
// The LoRA settings of an adapter directory. Clear errors for a directory without its config, a
// config that is not LoRA, or peft options the engine does not implement (rsLoRA, DoRA, per-layer
// ranks, regex targets, fan_in_fan_out, biases).
LoraConfig read_adapter_config(const std::string& dir);
// A digest of BASE/model.safetensors (FNV-1a, 64 bits, hex): which base an adapter belongs to.
std::string base_fingerprint(const std::string& base_dir);
// Checks dir/config.json's recorded base fingerprint (when it has one) against the base directory.
void check_adapter_base(const std::string& adapter_dir, const std::string& base_dir);

// Writes adapter_config.json and adapter_model.safetensors of `model` (built with adapters) into dir.
void write_adapter_files(BertModel& model, const std::string& dir, const std::string& base_name);
// Loads every adapter and the classifier from dir into `model` (built with the directory's LoRA
// settings, base weights already loaded). Every tensor must be there with the model's shape: a
// missing or misshapen one is an error naming the file, the tensor and the shapes.
void load_adapter_weights(BertModel& model, const std::string& dir);
// The config of a base model with an adapter: the adapter directory's config.json (the engine
// writes one, with the labels) or, for a directory peft wrote, the base's.
BertConfig adapted_model_config(const std::string& base_dir, const std::string& adapter_dir);
// Checks the base (check_adapter_base), then loads the base's weights (its own classifier, if any,
// ignored) and the adapter's into `model`, built with read_adapter_config(adapter_dir).
void load_base_and_adapter(BertModel& model, const std::string& base_dir, const std::string& adapter_dir);
// Copies `adapted`'s weights into `plain` (same config and head, no adapters), with each adapted
// weight merged: W + scale * B A, summed in double.
void merge_adapters(BertModel& adapted, BertModel& plain);

}  // namespace engine
