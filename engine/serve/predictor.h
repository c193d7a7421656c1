// What `engine predict`, `engine eval` and `engine serve` share: a fine-tuned model directory read
// for inference (config, task, labels, tokenizer), the model built on a backend with its weights,
// and logits turned into scores. Running batches is engine::predict (engine/train/task.h): the CLI
// runs it over a file, the server over each batch its batcher packs.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/train/task.h"
#include "tokenizer/encode.h"

namespace engine::serve {

// A fine-tuned model directory: what it was trained for, its labels and its tokenizer. Throws for a
// base checkpoint (no trained head) or a directory that is not a model.
struct ModelDir {
  std::string path;
  std::string adapter;  // a LoRA adapter directory applied to the model at `path` (its base), or empty
  BertConfig config;
  Task task = Task::classify;
  LabelMap labels;  // empty for regression
  std::unique_ptr<tokenizer::BertTokenizer> tok;

  // task: "classify", "regress", "tokens", "qa", or empty for what the model was trained for.
  // With an adapter, the labels and the vocabulary are the adapter directory's when it has them.
  ModelDir(const std::string& dir, const std::string& task, const std::string& adapter_dir = "");
  const LabelMap* label_map() const { return task == Task::regress ? nullptr : &labels; }
};

struct RuntimeOptions {
  std::string backend = "auto", precision = "auto", attention = "auto";
};

// The model of a directory on a backend, planned for batches of at most max_tokens tokens and
// max_sequences sequences, its weights (and adapter) loaded (a missing head is an error, not initialised).
struct LoadedModel {
  std::string backend_name;
  DType act = DType::f32;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<BertModel> model;
};
LoadedModel load_model(const ModelDir& dir, const RuntimeOptions& options, int64_t max_tokens,
                       int64_t max_sequences);

// Softmax of one row of logits, in double (the probabilities `engine predict` prints).
std::vector<double> softmax(const std::vector<float>& logits);

}  // namespace engine::serve
