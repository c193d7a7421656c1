// engine info DIR|NAME: what a model is: its config, parameter count, training FLOPs per token,
// what its model.safetensors holds, and whether those weights fit the config (the loader's own
// check: every problem is listed and the exit status is non-zero, after the rest of the report).
#include <cstdio>
#include <filesystem>
#include <map>

#include "engine/cli/commands.h"
#include "engine/io/safetensors.h"
#include "engine/model/checkpoint.h"
#include "engine/train/task.h"

namespace engine::cli {

namespace {

// Whether the weights fit the config, as eval and finetune will load them (the head the config's
// architecture names; a head or pooler the file lacks is initialised, as the loader does).
void report_fit(const BertConfig& c, const io::SafetensorsFile& file) {
  ParamStore needed;
  declare_parameters(needed, c, task_head(task_of_model(c)));
  WeightFit fit = fit_weights(needed.list(), file, false);
  if (fit.problems.empty()) {
    std::printf("fit          every parameter the config needs is in the file with its shape (%zu loaded",
                fit.loads.size());
    if (!fit.initialised.empty()) std::printf(", %zu initialised when fine-tuning", fit.initialised.size());
    if (!fit.unused.empty()) std::printf(", %zu tensors unused, e.g. %s", fit.unused.size(), fit.unused[0].c_str());
    std::printf(")\n");
    return;
  }
  for (const std::string& p : fit.problems) std::printf("problem      %s\n", p.c_str());
  std::fflush(stdout);  // the report first, then the error main prints on stderr
  fail(file.path(), ": ", fit.problems.size(), fit.problems.size() == 1 ? " problem" : " problems",
       ": the weights do not fit config.json (eval and finetune would refuse this checkpoint)");
}

void print_info(const std::string& what) {
  namespace fs = std::filesystem;
  // A name with a path separator is a directory the user meant, even if it does not exist.
  bool is_dir = fs::is_directory(what) || what.find('/') != std::string::npos;
  BertConfig c = is_dir ? read_model_config(what) : BertConfig::named(what);
  const bool pooler = true;
  std::printf("model        %s\n", what.c_str());
  std::printf("layers       %lld\nhidden       %lld\nheads        %lld (head dim %lld)\nintermediate %lld\n",
              (long long)c.num_hidden_layers, (long long)c.hidden_size, (long long)c.num_attention_heads,
              (long long)c.head_dim(), (long long)c.intermediate_size);
  std::printf("vocab        %lld\npositions    %lld\ntoken types  %lld\nlabels       %lld\n", (long long)c.vocab_size,
              (long long)c.max_position_embeddings, (long long)c.type_vocab_size, (long long)c.num_labels);
  std::printf("dropout      hidden %.3g, attention %.3g\n", c.hidden_dropout_prob, c.attention_probs_dropout_prob);
  int64_t params = c.parameter_count(pooler, c.num_labels);
  std::printf("parameters   %lld (BertForSequenceClassification with %lld labels)\n", (long long)params,
              (long long)c.num_labels);
  std::printf("train FLOPs  %.3g per token at seq 128, %.3g at seq 512 (forward + backward)\n",
              c.train_flops_per_token(128), c.train_flops_per_token(512));
  std::printf("train memory %.1f MB for f32 weights, gradients and AdamW moments\n", 16.0 * double(params) / 1e6);
  if (!is_dir) return;
  fs::path weights = fs::path(what) / "model.safetensors";
  if (!fs::exists(weights)) {
    std::printf("weights      none (no model.safetensors)\n");
    return;
  }
  io::SafetensorsFile file = io::SafetensorsFile::open(weights.string());
  std::map<std::string, int64_t> by_dtype;
  bool has_head = false, prefixed = false;
  for (const auto& t : file.tensors()) {
    by_dtype[io::st_dtype_name(t.dtype)] += t.numel();
    has_head = has_head || t.name.rfind("classifier.", 0) == 0;
    prefixed = prefixed || t.name.rfind("bert.", 0) == 0;
  }
  std::printf("weights      %zu tensors in %s:", file.tensors().size(), weights.c_str());
  for (auto& [dtype, n] : by_dtype) std::printf(" %lld %s", (long long)n, dtype.c_str());
  std::printf("\n             %s names, %s\n", prefixed ? "bert.-prefixed" : "unprefixed (bare BertModel)",
              has_head ? "with a classifier head" : "no classifier head (one is initialised when fine-tuning)");
  report_fit(c, file);
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Describe a model: a Hugging Face BERT directory (config.json, "
                                         "model.safetensors) or a named shape (bert-tiny, bert-mini, bert-base, "
                                         "bert-large)");
  auto what = std::make_shared<std::string>();
  cmd->add_option("model", *what, "model directory or named config")->required();
  cmd->callback([what] { print_info(*what); });
}

}  // namespace engine::cli
