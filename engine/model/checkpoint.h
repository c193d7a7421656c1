// Hugging Face model directories in and out: config.json, vocab.txt, tokenizer_config.json and
// model.safetensors. Loading accepts parameter names with or without the `bert.` prefix (a bare
// BertModel checkpoint, as sentence-transformers ships, has none), the old LayerNorm gamma/beta
// spelling, and a missing classifier or pooler (initialised as Hugging Face does, and reported).
// Saving writes a directory that transformers' BertForSequenceClassification /
// BertForTokenClassification loads back, staged next to the target and swapped in atomically.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "engine/model/bert.h"

namespace engine {

struct LoadReport {
  int loaded = 0;
  std::vector<std::string> initialised;  // model parameters not in the file, freshly initialised
  std::vector<std::string> unused;       // tensors in the file the model does not use
  std::string summary() const;
};

// The config.json of a model directory (a clear error when the directory or file is missing).
BertConfig read_model_config(const std::string& dir);
// True when dir/model.safetensors has classifier (or qa_outputs) weights of `num_labels` rows.
bool checkpoint_head_matches(const std::string& dir, int64_t num_labels);

// How the tensors of a checkpoint file fit the parameters a model needs: the loader's check, also
// run by `engine info`. Every parameter is looked up under the names candidate_names allows; a
// classifier (and pooler) absent from the file, or present with the wrong number of labels when
// reinit_head is set, is to be initialised; any other missing parameter or any shape mismatch is a
// problem, and every one is listed (a message naming the file, the tensor and what was expected).
struct WeightFit {
  struct Load {
    const ParamInfo* param;
    const io::SafetensorsTensor* tensor;
  };
  std::vector<Load> loads;               // parameters that load, and from which tensor
  std::vector<std::string> initialised;  // parameters to initialise (a head or pooler the file lacks)
  std::vector<std::string> unused;       // tensors in the file no parameter uses
  std::vector<std::string> problems;     // empty: the file fits
};
WeightFit fit_weights(const std::vector<ParamInfo>& params, const io::SafetensorsFile& file, bool reinit_head);

// Loads dir/model.safetensors into the model. A classifier (and pooler) absent from the file, or
// present with the wrong number of labels when reinit_head is set, is initialised from seed; any
// other missing parameter or any shape mismatch is an error naming the tensor.
LoadReport load_weights(BertModel& model, const std::string& dir, bool reinit_head, uint64_t seed);

struct SaveOptions {
  std::string vocab_path;       // copied as vocab.txt (empty: none)
  bool do_lower_case = true;    // written to tokenizer_config.json
  nlohmann::json extra_config;  // merged into config.json (labels, the engine's training summary)
  // Writes more files into the staging directory before it is swapped in (training state).
  std::function<void(const std::string& staged_dir)> extra_files;
  std::string adapter_base;  // a model with LoRA adapters: base_model_name_or_path of adapter_config.json
};
// Writes a complete HF directory at `dir` atomically: a crash leaves the previous one intact. A
// model with LoRA adapters gets peft's adapter files (engine/model/adapter_files.h) instead of
// model.safetensors: the adapters and the head, not the frozen base.
void save_pretrained(BertModel& model, const std::string& dir, const SaveOptions& options);

}  // namespace engine
