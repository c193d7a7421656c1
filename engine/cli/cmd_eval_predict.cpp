// engine eval and engine predict: load a fine-tuned model directory (or a base model with a LoRA
// adapter directory, --adapter) and score a labelled file, or
// predict for a file or for lines on standard input (one JSON object per input, in input order).
// Standard output holds only the results; progress (rows done, rows/s, time left) goes to standard
// error, as the trainer's does, unless --quiet.
#include <cmath>
#include <filesystem>
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/cli/data_flags.h"
#include "engine/io/result_path.h"
#include "engine/serve/predictor.h"
#include "engine/train/metrics.h"
#include "engine/train/progress.h"
#include "engine/train/trainer.h"

namespace engine::cli {

namespace {

namespace fs = std::filesystem;

struct ModelFlags {
  std::string model_dir, adapter_dir, data_file, task, backend = "auto", precision = "auto", attention = "auto";
  std::string output_dir;  // eval --task qa: where predictions.json and null_odds.json go
  int max_length = 0;  // 0: 128, or max_position_embeddings when smaller
  int64_t batch_size = 64;
  bool quiet = false;
};

void add_model_flags(CLI::App* cmd, ModelFlags& f) {
  cmd->add_option("--model", f.model_dir, "fine-tuned model directory (config.json, vocab.txt, model.safetensors)")
      ->required();
  cmd->add_option("--adapter", f.adapter_dir,
                  "LoRA adapter directory (adapter_config.json, adapter_model.safetensors; from `engine finetune "
                  "--peft lora` or Hugging Face peft) applied to --model, the base it was trained on");
  cmd->add_option("--task", f.task, "classify, regress, tokens or qa (default: what the model was trained for)");
  cmd->add_option("--max-length", f.max_length,
                  "tokens per sequence (default: 128, qa 384, or the model's max_position_embeddings when smaller)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", f.batch_size, "sequences per batch")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--backend", f.backend, "cpu, cpu-ref, cuda or auto")->capture_default_str();
  cmd->add_option("--precision", f.precision, "bf16, fp32 or auto")->capture_default_str();
  cmd->add_option("--attention", f.attention, "cuda attention: auto (flash for bf16, simple for fp32), flash, cudnn (dropout 0 only) or simple")->capture_default_str();
  cmd->add_flag("--quiet", f.quiet, "no progress on standard error");
}

DataOptions data_options(const DataFlags& flags, const ModelFlags& f, const BertConfig& config, Task task);

// A fine-tuned model directory (engine/serve/predictor.h, shared with `engine serve`) and how its
// data is read. The model itself is built once the data is read, sized for its longest sequence.
struct ModelDir : serve::ModelDir {
  DataOptions data;

  ModelDir(const ModelFlags& f, const DataFlags& flags) : serve::ModelDir(f.model_dir, f.task, f.adapter_dir) {
    data = data_options(flags, f, config, task);
  }

  // Builds the model on the chosen backend, loads its weights, and predicts for `examples`, showing
  // progress as `what` ("eval", "predict").
  Predictions predict_all(const ModelFlags& f, const TaskData& examples, const std::string& what) const {
    serve::LoadedModel m = serve::load_model(*this, {f.backend, f.precision, f.attention},
                                             f.batch_size * std::max<int64_t>(examples.max_length(), 1), f.batch_size);
    if (f.quiet) return predict(*m.model, examples, labels, f.batch_size, 0);
    RowProgress progress(std::cerr, what, int64_t(examples.examples.size()));
    return predict(*m.model, examples, labels, f.batch_size, 0, [&](int64_t rows) { progress.update(rows); });
  }
};

DataOptions data_options(const DataFlags& flags, const ModelFlags& f, const BertConfig& config, Task task) {
  DataOptions d = flags.resolve();
  ENGINE_CHECK(f.max_length <= config.max_position_embeddings, "--max-length ", f.max_length,
               " exceeds the model's max_position_embeddings ", config.max_position_embeddings);
  const int64_t default_length = task == Task::qa ? 384 : 128;  // qa: run_qa.py's max_seq_length
  d.encode.max_length =
      f.max_length > 0 ? f.max_length : int(std::min<int64_t>(default_length, config.max_position_embeddings));
  return d;
}

nlohmann::json metric_json(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

void print_predictions(const Predictions& p, const TaskData& data, const LabelMap& labels, std::ostream& out) {
  const size_t n = p.task == Task::tokens ? p.tags.size() : p.task == Task::qa ? p.answers.size() : p.logits.size();
  for (size_t i = 0; i < n; ++i) {
    nlohmann::json j;
    if (p.task == Task::qa) {
      const QaAnswer& a = p.answers[i];
      j["id"] = data.qa->file.examples[i].id;
      j["answer"] = a.text;
      j["score"] = a.probability;
      j["start"] = a.start;
      j["end"] = a.end;
      if (data.qa->version_2) j["null_odds"] = a.null_odds;
    } else if (p.task == Task::tokens) {
      j["tags"] = p.tags[i];
    } else if (p.task == Task::regress) {
      j["value"] = p.logits[i][0];
    } else {
      const std::vector<float>& z = p.logits[i];
      std::vector<double> probs = serve::softmax(z);
      size_t best = size_t(std::max_element(z.begin(), z.end()) - z.begin());
      j["label"] = labels.name(int32_t(best));
      j["probabilities"] = probs;
      j["logits"] = z;
    }
    out << j.dump() << "\n";
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Score a fine-tuned model on a labelled file (metrics as one JSON line)");
  auto f = std::make_shared<ModelFlags>();
  add_model_flags(cmd, *f);
  cmd->add_option("--data", f->data_file, "labelled file (.tsv, .csv, .jsonl; CoNLL for tokens; SQuAD .json/.jsonl for qa)")->required();
  cmd->add_option("--output-dir", f->output_dir,
                  "qa: write predictions.json (and null_odds.json for SQuAD v2) here");
  auto flags = add_data_flags(cmd);
  cmd->callback([f, flags] {
    ModelDir m(*f, *flags);
    TaskData data = load_task_data(f->data_file, m.task, *m.tok, m.label_map(), true, m.data);
    Predictions p = m.predict_all(*f, data, "eval");
    nlohmann::json j = {
        {"data", io::result_path(f->data_file)}, {"examples", data.examples.size()}, {"task", task_name(m.task)}};
    for (const auto& [k, v] : p.metrics) j[k] = metric_json(v);
    if (data.qa) j["qa"] = data.qa->describe();
    if (m.task == Task::qa && !f->output_dir.empty()) {
      std::filesystem::create_directories(f->output_dir);
      write_qa_predictions(p, data, f->output_dir);
    }
    std::cout << j.dump() << "\n";
  });
}

void add_predict_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "predict",
      "Predict with a fine-tuned model for a file (--data) or for standard input (one text per line; a tab\n"
      "separates a pair; for tokens, whitespace separates words; for qa, a JSON object {\"question\", \"context\"}).\n"
      "Prints one JSON object per input, in order: {label, probabilities, logits} (classify), {value} (regress),\n"
      "{tags} (tokens) or {id, answer, score, start, end} (qa: start and end are character offsets into the\n"
      "context, score the answer's probability among the n-best; with SQuAD v2 also null_odds, and answer \"\"\n"
      "with start = end = 0 for no answer; answer \"empty\", as run_qa.py's, when no span qualifies).");
  auto f = std::make_shared<ModelFlags>();
  add_model_flags(cmd, *f);
  cmd->add_option("--data", f->data_file, "input file (labels, if present, are ignored); default: standard input");
  auto flags = add_data_flags(cmd);
  cmd->callback([f, flags] {
    ModelDir m(*f, *flags);
    TaskData data;
    if (f->data_file.empty()) {
      std::vector<std::string> lines;
      for (std::string line; std::getline(std::cin, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(line);
      }
      ENGINE_CHECK(!lines.empty(), "predict: no input on standard input");
      for (size_t i = 0; i < lines.size(); ++i) check_utf8(lines[i], "<stdin>", int64_t(i) + 1);
      data = task_data_from_lines(lines, m.task, *m.tok, m.data);
    } else {
      data = load_task_data(f->data_file, m.task, *m.tok, nullptr, false, m.data);
      data.has_labels = false;
    }
    print_predictions(m.predict_all(*f, data, "predict"), data, m.labels, std::cout);
  });
}

}  // namespace engine::cli
