// engine merge: fold a LoRA adapter directory into its base model and write a plain Hugging Face
// model directory (config.json, model.safetensors, vocab.txt) that transformers and `engine eval`
// load without peft: every adapted weight becomes W + (alpha / r) B A, the classifier is the
// adapter's, everything else the base's.
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/io/result_path.h"
#include "engine/model/adapter_files.h"
#include "engine/model/checkpoint.h"
#include "engine/train/task.h"
#include "tokenizer/encode.h"

namespace engine::cli {

namespace {

struct MergeFlags {
  std::string model_dir, adapter_dir, output_dir;
};

void merge(const MergeFlags& f) {
  const BertConfig config = adapted_model_config(f.model_dir, f.adapter_dir);
  // The adapter's vocabulary and labels when it has them (the engine saves them), else the base's.
  const std::string vocab_dir = std::filesystem::exists(f.adapter_dir + "/vocab.txt") ? f.adapter_dir : f.model_dir;
  std::unique_ptr<Backend> backend = make_backend("cpu");
  ModelOptions mo;
  mo.head = task_head(task_of_model(config));
  mo.max_tokens = 1;  // no batch runs: the models only hold weights
  mo.max_sequences = 1;
  ModelOptions adapted_options = mo;
  adapted_options.lora = read_adapter_config(f.adapter_dir);
  BertModel adapted(*backend, config, adapted_options), plain(*backend, config, mo);
  load_base_and_adapter(adapted, f.model_dir, f.adapter_dir);
  merge_adapters(adapted, plain);
  SaveOptions so;
  so.vocab_path = vocab_dir + "/vocab.txt";
  so.do_lower_case = tokenizer::BertTokenizer::from_model_dir(vocab_dir).lowercase();
  save_pretrained(plain, f.output_dir, so);
  std::cout << "merged " << io::result_path(f.adapter_dir) << " (LoRA r " << adapted_options.lora.r << ", alpha "
            << adapted_options.lora.alpha << ") into " << io::result_path(f.model_dir) << ": "
            << io::result_path(f.output_dir) << "\n";
}

}  // namespace

void add_merge_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "merge",
      "Merge a LoRA adapter directory into its base model: writes a plain model directory (W + alpha/r B A in\n"
      "every adapted layer, the adapter's classifier) that transformers and `engine eval` load without peft.");
  auto f = std::make_shared<MergeFlags>();
  cmd->add_option("--model", f->model_dir, "base model directory the adapter was trained on")->required();
  cmd->add_option("--adapter", f->adapter_dir, "LoRA adapter directory (adapter_config.json, adapter_model.safetensors)")
      ->required();
  cmd->add_option("--output-dir", f->output_dir, "where the merged model directory goes")->required();
  cmd->callback([f] { merge(*f); });
}

}  // namespace engine::cli
