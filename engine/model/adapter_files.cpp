#include "engine/model/adapter_files.h"

#include <cstdio>
#include <filesystem>

#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "engine/model/checkpoint.h"

namespace engine {

namespace fs = std::filesystem;

namespace {

// peft keeps the wrapped model under base_model.model.
const std::string kPeftPrefix = "base_model.model.";

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The parameters an adapter directory holds: the adapters and the head (modules_to_save).
bool saved_with_adapter(const ParamInfo& p) { return is_lora_parameter(p.name) || is_lora_head_parameter(p.name); }

nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(io::read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace

bool is_adapter_dir(const std::string& dir) { return fs::exists(fs::path(dir) / kAdapterConfigFile); }

LoraConfig read_adapter_config(const std::string& dir) {
  ENGINE_CHECK(fs::is_directory(dir), "adapter directory '", dir, "' does not exist");
  const std::string path = (fs::path(dir) / kAdapterConfigFile).string();
  ENGINE_CHECK(fs::exists(path), "adapter directory '", dir, "' has no ", kAdapterConfigFile,
               fs::exists(fs::path(dir) / "model.safetensors") ? " (it holds a whole model: pass it as --model)" : "");
  const nlohmann::json j = read_json(path);
  ENGINE_CHECK(j.value("peft_type", std::string()) == "LORA", path, ": peft_type is ",
               j.value("peft_type", nlohmann::json(nullptr)).dump(), ", the engine loads LORA adapters only");
  auto unsupported = [&](const char* key, bool bad, const char* what) {
    ENGINE_CHECK(!bad, path, ": ", key, " = ", j[key].dump(), ": ", what, " is not supported");
  };
  unsupported("use_rslora", j.value("use_rslora", false), "rank-stabilised LoRA");
  unsupported("use_dora", j.value("use_dora", false), "DoRA");
  unsupported("lora_bias", j.value("lora_bias", false), "a trainable bias on lora_B");
  unsupported("fan_in_fan_out", j.value("fan_in_fan_out", false), "transposed (Conv1D) weights");
  unsupported("rank_pattern", j.contains("rank_pattern") && !j["rank_pattern"].empty() && !j["rank_pattern"].is_null(),
              "a rank per layer");
  unsupported("alpha_pattern",
              j.contains("alpha_pattern") && !j["alpha_pattern"].empty() && !j["alpha_pattern"].is_null(),
              "an alpha per layer");
  unsupported("layers_to_transform", j.contains("layers_to_transform") && !j["layers_to_transform"].is_null(),
              "adapting only some layers");
  LoraConfig l;
  try {
    l.r = j.at("r").get<int64_t>();
    l.alpha = j.at("lora_alpha").get<float>();
    l.dropout = j.value("lora_dropout", 0.f);
    l.bias = j.value("bias", std::string("none"));
    ENGINE_CHECK(j.at("target_modules").is_array(), path, ": target_modules is ", j["target_modules"].dump(),
                 ": a regular expression is not supported, only a list of module names");
    l.target_modules = j.at("target_modules").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": ", e.what());
  }
  try {
    l.validate();
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  return l;
}

std::string base_fingerprint(const std::string& base_dir) {
  const std::string bytes = io::read_file((fs::path(base_dir) / "model.safetensors").string());
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
  return hex;
}

void check_adapter_base(const std::string& adapter_dir, const std::string& base_dir) {
  const fs::path config = fs::path(adapter_dir) / "config.json";
  if (!fs::exists(config)) return;
  const nlohmann::json j = read_json(config.string());
  if (!j.contains(kAdapterBaseKey)) return;
  const std::string want = j[kAdapterBaseKey].get<std::string>(), got = base_fingerprint(base_dir);
  ENGINE_CHECK(want == got, adapter_dir, ": the adapter was trained on another base model (its config.json records ",
               kAdapterBaseKey, " ", want, ", ", base_dir, "/model.safetensors has ", got, ")");
}

void write_adapter_files(BertModel& model, const std::string& dir, const std::string& base_name) {
  const LoraConfig& l = model.options().lora;
  ENGINE_CHECK(l.enabled(), "write_adapter_files: the model has no adapters");
  const Head head = model.options().head;
  // peft's task types and the head each keeps trainable (modules_to_save), as PeftModelFor* set them.
  const char* task_type = head == Head::token_classification ? "TOKEN_CLS"
                          : head == Head::question_answering ? "QUESTION_ANS"
                                                             : "SEQ_CLS";
  const nlohmann::json head_modules = head == Head::question_answering ? nlohmann::json({"qa_outputs"})
                                                                       : nlohmann::json({"classifier", "score"});
  nlohmann::json config = {{"peft_type", "LORA"},
                           {"task_type", task_type},
                           {"base_model_name_or_path", base_name},
                           {"r", l.r},
                           {"lora_alpha", l.alpha},
                           {"lora_dropout", l.dropout},
                           {"target_modules", l.target_modules},
                           {"bias", l.bias},
                           {"modules_to_save", head_modules},
                           {"fan_in_fan_out", false},
                           {"init_lora_weights", true},
                           {"inference_mode", true},
                           {"use_rslora", false},
                           {"use_dora", false},
                           {"layers_to_transform", nullptr},
                           {"layers_pattern", nullptr},
                           {"rank_pattern", nlohmann::json::object()},
                           {"alpha_pattern", nlohmann::json::object()},
                           {"revision", nullptr}};
  io::write_file_atomic((fs::path(dir) / kAdapterConfigFile).string(), config.dump(2) + "\n");

  std::vector<const ParamInfo*> saved;
  for (const ParamInfo& p : model.params().list())
    if (saved_with_adapter(p)) saved.push_back(&p);
  std::vector<std::vector<float>> values;
  std::vector<std::string> names;
  for (const ParamInfo* p : saved) {
    values.push_back(model.params().get_host(model.backend(), p->name));
    names.push_back(kPeftPrefix + p->name);
  }
  std::vector<io::SafetensorsWriteEntry> entries;
  for (size_t i = 0; i < saved.size(); ++i) entries.push_back({names[i], DType::f32, saved[i]->shape, values[i].data()});
  io::write_safetensors((fs::path(dir) / kAdapterWeightsFile).string(), entries, {{"format", "pt"}});
}

void load_adapter_weights(BertModel& model, const std::string& dir) {
  const std::string path = (fs::path(dir) / kAdapterWeightsFile).string();
  ENGINE_CHECK(fs::exists(path), "adapter directory '", dir, "' has no ", kAdapterWeightsFile);
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  for (const ParamInfo& p : model.params().list()) {
    if (!saved_with_adapter(p)) continue;
    const std::string key = kPeftPrefix + p.name;
    ENGINE_CHECK(file.has(key), path, ": no tensor '", key, "' (the adapter config targets this layer)");
    const io::SafetensorsTensor& t = file.get(key);
    ENGINE_CHECK(t.shape == p.shape, path, ": tensor '", key, "' has shape ", shape_str(t.shape), " but the model needs ",
                 shape_str(p.shape), " (an adapter for another base model or rank?)");
    model.params().set_host(model.backend(), p.name, file.to_f32(key));
  }
}

BertConfig adapted_model_config(const std::string& base_dir, const std::string& adapter_dir) {
  read_adapter_config(adapter_dir);  // a clear error first when adapter_dir is not an adapter
  return read_model_config(fs::exists(fs::path(adapter_dir) / "config.json") ? adapter_dir : base_dir);
}

void load_base_and_adapter(BertModel& model, const std::string& base_dir, const std::string& adapter_dir) {
  ENGINE_CHECK(!is_adapter_dir(base_dir), base_dir,
               " is a LoRA adapter directory: the base model it adapts goes in --model, the adapter in --adapter");
  check_adapter_base(adapter_dir, base_dir);
  load_weights(model, base_dir, true, 0);  // the head (and fresh adapters) are then the adapter's
  load_adapter_weights(model, adapter_dir);
}

void merge_adapters(BertModel& adapted, BertModel& plain) {
  Backend& backend = adapted.backend();
  const ParamStore& from = adapted.params();
  const double scale = adapted.options().lora.scale();
  for (const ParamInfo& p : plain.params().list()) {
    std::vector<float> w = from.get_host(backend, p.name);
    const std::string suffix = ".weight";
    const bool is_weight = p.name.size() > suffix.size() &&
                           p.name.compare(p.name.size() - suffix.size(), suffix.size(), suffix) == 0;
    const std::string module = is_weight ? p.name.substr(0, p.name.size() - suffix.size()) : "";
    const ParamInfo* a_info = is_weight ? from.find(module + ".lora_A.weight") : nullptr;
    if (a_info) {
      const std::vector<float> A = from.get_host(backend, module + ".lora_A.weight");
      const std::vector<float> B = from.get_host(backend, module + ".lora_B.weight");
      const int64_t r = a_info->shape[0], in = a_info->shape[1], out = p.shape[0];
      for (int64_t o = 0; o < out; ++o)
        for (int64_t i = 0; i < in; ++i) {
          double sum = 0;
          for (int64_t k = 0; k < r; ++k) sum += double(B[o * r + k]) * A[k * in + i];
          w[o * in + i] = float(double(w[o * in + i]) + scale * sum);
        }
    }
    plain.params().set_host(plain.backend(), p.name, w);
  }
}

}  // namespace engine
