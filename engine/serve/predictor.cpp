#include "engine/serve/predictor.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/model/adapter_files.h"
#include "engine/model/checkpoint.h"
#include "engine/train/trainer.h"

namespace engine::serve {

ModelDir::ModelDir(const std::string& dir, const std::string& task_name, const std::string& adapter_dir)
    : path(dir), adapter(adapter_dir) {
  namespace fs = std::filesystem;
  const bool adapted = !adapter.empty();
  ENGINE_CHECK(adapted || !is_adapter_dir(dir), dir,
               " is a LoRA adapter directory: pass the base model it adapts as --model and this directory as "
               "--adapter");
  config = adapted ? adapted_model_config(dir, adapter) : read_model_config(dir);
  // Before reading any data: a base checkpoint (no classifier, or one of another size) cannot score.
  ENGINE_CHECK(adapted || checkpoint_head_matches(dir, config.num_labels) || !fs::exists(dir + "/model.safetensors"),
               dir, ": the checkpoint has no trained head (no classifier with ", config.num_labels,
               " outputs): fine-tune it first");
  const std::string labels_dir = adapted && fs::exists(adapter + "/config.json") ? adapter : dir;
  const std::string vocab_dir = adapted && fs::exists(adapter + "/vocab.txt") ? adapter : dir;
  task = task_name.empty() ? task_of_model(config) : parse_task(task_name);
  if (task != Task::regress) labels = LabelMap::from_hf_config(config.to_json(), labels_dir + "/config.json");
  tok = std::make_unique<tokenizer::BertTokenizer>(tokenizer::BertTokenizer::from_model_dir(vocab_dir));
}

LoadedModel load_model(const ModelDir& dir, const RuntimeOptions& options, int64_t max_tokens,
                       int64_t max_sequences) {
  LoadedModel m;
  m.backend_name = resolve_backend(options.backend);
  BackendOptions bo;
  bo.attention = options.attention;
  m.backend = make_backend(m.backend_name, bo);
  ModelOptions mo;
  mo.head = task_head(dir.task);
  mo.act = m.act = resolve_precision(options.precision, m.backend_name);
  mo.max_sequences = max_sequences;
  mo.max_tokens = max_tokens;
  if (!dir.adapter.empty()) mo.lora = read_adapter_config(dir.adapter);
  m.model = std::make_unique<BertModel>(*m.backend, dir.config, mo);
  if (!dir.adapter.empty()) {
    load_base_and_adapter(*m.model, dir.path, dir.adapter);
    return m;
  }
  LoadReport report = load_weights(*m.model, dir.path, false, 0);
  ENGINE_CHECK(report.initialised.empty(), dir.path, ": the checkpoint has no trained head (missing ",
               report.initialised[0], "): fine-tune it first");
  return m;
}

std::vector<double> softmax(const std::vector<float>& z) {
  const float m = *std::max_element(z.begin(), z.end());
  double sum = 0;
  for (float v : z) sum += std::exp(double(v - m));
  std::vector<double> probs;
  for (float v : z) probs.push_back(std::exp(double(v - m)) / sum);
  return probs;
}

}  // namespace engine::serve
