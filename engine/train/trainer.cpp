#include "engine/train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <set>

#include "engine/dist/grad_sync.h"
#include "engine/dist/sharded_batches.h"
#include "engine/dist/world.h"
#include "engine/io/atomic_file.h"
#include "engine/io/result_path.h"
#include "engine/io/safetensors.h"
#include "engine/model/adapter_files.h"
#include "engine/model/checkpoint.h"
#include "engine/train/metrics.h"
#include "engine/train/optimizer.h"
#include "engine/train/progress.h"
#include "engine/train/schedule.h"

namespace engine {

namespace fs = std::filesystem;

std::string resolve_backend(const std::string& backend) {
  if (backend == "auto") return cuda_available() ? "cuda" : "cpu";
  ENGINE_CHECK(backend == "cpu" || backend == "cpu-ref" || backend == "cuda",
               "--backend must be cpu, cpu-ref, cuda or auto (got '", backend, "')");
  return backend;
}

DType resolve_precision(const std::string& precision, const std::string& backend) {
  if (precision == "auto") return backend == "cuda" ? DType::bf16 : DType::f32;
  if (precision == "fp32") return DType::f32;
  if (precision == "bf16") {
    ENGINE_CHECK(backend == "cuda", "--precision bf16 needs the cuda backend (the CPU reference runs fp32)");
    return DType::bf16;
  }
  fail("--precision must be bf16, fp32 or auto (got '", precision, "')");
}

namespace {

using Clock = std::chrono::steady_clock;

// The training data's identity for resume: a digest of the file's bytes (FNV-1a, 64 bits), not its
// path, so a run resumes from another directory or machine with the same data, refuses data that
// changed, and its checkpoints name no machine path.
std::string file_digest(const std::string& path) {
  const std::string bytes = io::read_file(path);
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)h);
  return hex;
}

nlohmann::json lora_json(const LoraConfig& l) {
  return {{"r", l.r}, {"alpha", l.alpha}, {"dropout", l.dropout}, {"target_modules", l.target_modules}, {"bias", l.bias}};
}

// The options that must not change between a run and its resumption: anything that changes which
// batches come, how they are scaled, or the arithmetic. The adapters' settings join it only when
// there are adapters, so the fingerprints of full fine-tunes stay what they were.
// batch_size is the global batch (per-rank batch x ranks): a checkpoint resumes with another world
// size when the global batch stays, e.g. 2 ranks x 16 from 1 rank x 32. A token budget or length
// grouping makes the plan depend on the per-rank batch, and then the world size must stay too.
nlohmann::json resume_fingerprint(const FinetuneOptions& o, const std::string& backend, DType act, int world) {
  nlohmann::json f = {{"train_data_fnv1a64", o.data_in_memory ? "in memory: " + o.data_in_memory->train.path : file_digest(o.train_file)},
          {"task", o.task},
          {"seed", o.seed},
          {"batch_size", o.batch_size * world},
          {"max_tokens", o.max_tokens},
          {"group_by_length", o.group_by_length},
          {"gradient_accumulation_steps", o.gradient_accumulation_steps},
          {"max_length", o.data.encode.max_length},
          {"learning_rate", o.learning_rate},
          {"lr_scheduler_type", o.lr_scheduler_type},
          {"weight_decay", o.weight_decay},
          {"backend", backend},
          {"precision", dtype_name(act)}};
  if (o.lora.enabled()) f["lora"] = lora_json(o.lora);
  if (o.task == "qa") f["doc_stride"] = o.data.qa.doc_stride;  // it cuts the windows the batches hold
  if (o.max_tokens > 0 || o.group_by_length) f["world_size"] = world;
  return f;
}


nlohmann::json options_json(const FinetuneOptions& o) {
  return {{"model", io::result_path(o.model_dir)},
          {"peft", o.lora.enabled() ? nlohmann::json(lora_json(o.lora)) : nlohmann::json(nullptr)},
          {"model_in_memory", o.model_in_memory ? o.model_in_memory->config.to_json() : nlohmann::json(nullptr)},
          {"train", io::result_path(o.train_file)},
          {"dev", io::result_path(o.dev_file)},
          {"data_in_memory", o.data_in_memory ? nlohmann::json(o.data_in_memory->train.path) : nlohmann::json(nullptr)},
          {"test", io::result_path(o.test_file)},
          {"task", o.task},
          {"output_dir", io::result_path(o.output_dir)},
          {"max_length", o.data.encode.max_length},
          {"truncation", tokenizer::truncation_name(o.data.encode.truncation)},
          {"doc_stride", o.data.qa.doc_stride},
          {"num_train_epochs", o.num_train_epochs},
          {"max_steps", o.max_steps},
          {"batch_size", o.batch_size},
          {"eval_batch_size", o.eval_batch_size},
          {"max_tokens", o.max_tokens},
          {"group_by_length", o.group_by_length},
          {"gradient_accumulation_steps", o.gradient_accumulation_steps},
          {"learning_rate", o.learning_rate},
          {"lr_scheduler_type", o.lr_scheduler_type},
          {"warmup_ratio", o.warmup_ratio},
          {"warmup_steps", o.warmup_steps},
          {"weight_decay", o.weight_decay},
          {"adam_beta1", o.adam_beta1},
          {"adam_beta2", o.adam_beta2},
          {"adam_epsilon", o.adam_epsilon},
          {"max_grad_norm", o.max_grad_norm},
          {"hidden_dropout", o.hidden_dropout},
          {"attention_dropout", o.attention_dropout},
          {"classifier_dropout", o.classifier_dropout},
          {"reinit_head", o.reinit_head},
          {"precision", o.precision},
          {"backend", o.backend},
          {"attention", o.attention},
          {"seed", o.seed},
          {"eval_steps", o.eval_steps},
          {"save_steps", o.save_steps},
          {"save_total_limit", o.save_total_limit},
          {"metric_for_best_model", o.metric_for_best_model},
          {"logging_steps", o.logging_steps},
          {"on_divergence", o.on_divergence},
          {"resume", io::result_path(o.resume)}};
}

// JSON cannot hold NaN; a NaN metric is written as null.
nlohmann::json metric_value(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The step of a directory named checkpoint-<digits>, the only name a complete checkpoint has (its
// staging directory checkpoint-<step>.tmp.<pid> and the old copy of a swap, .old.<pid>, are not);
// -1 for any other name.
int64_t checkpoint_step(const std::string& name) {
  const std::string prefix = "checkpoint-";
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = name.substr(prefix.size());
  return all_digits(digits) && digits.size() <= 18 ? std::stoll(digits) : -1;  // 18 digits fit an int64_t
}

// What keeps `dir` from being a checkpoint to resume from (a file missing, a file that does not
// read), or empty when it is complete. A checkpoint-<step> only ever appears by renaming a complete
// staging directory, but a crash in the middle of pruning an old one leaves it half deleted.
std::string checkpoint_defect(const fs::path& dir) {
  // A run with LoRA adapters saves peft's adapter files instead of the model's weights.
  const char* weights = fs::exists(dir / kAdapterConfigFile) ? kAdapterWeightsFile : "model.safetensors";
  for (const char* f : {"config.json", weights, "optimizer.safetensors", "trainer_state.json"})
    if (!fs::is_regular_file(dir / f)) return std::string("no ") + f;
  try {
    if (!nlohmann::json::accept(io::read_file((dir / "trainer_state.json").string())))
      return "trainer_state.json is not valid JSON";
    io::SafetensorsFile::open((dir / weights).string());
    io::SafetensorsFile::open((dir / "optimizer.safetensors").string());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Removes what writers that died left in a run directory: the staging (NAME.tmp.<pid>) and old
// (NAME.old.<pid>) copies of its checkpoints, best/, model/ and files, by the recovery rule of
// io::recover_directory (which leaves everything alone while a live engine process saves there, and
// restores a directory whose swap was cut between its two renames). Says what it removes.
void remove_stale_saves(const std::string& dir, std::ostream& log) {
  if (!fs::is_directory(dir)) return;
  std::set<std::string> bases;
  std::vector<fs::path> leftovers;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    for (const char* tag : {".tmp.", ".old."}) {
      const size_t at = name.rfind(tag);
      if (at == std::string::npos || at == 0) continue;
      if (!all_digits(name.substr(at + std::strlen(tag)))) continue;
      bases.insert(name.substr(0, at));
      leftovers.push_back(entry.path());
    }
  }
  if (leftovers.empty()) return;
  // Said before it is done, and flushed: a run killed right here still leaves the line in its log.
  log << "  removing what interrupted saves left in " << io::result_path(dir) << ":";
  for (const fs::path& p : leftovers) log << " " << p.filename().string();
  log << std::endl;
  for (const std::string& base : bases) {
    if (io::recover_directory((fs::path(dir) / base).string()) == io::Recovery::restored_old)
      log << "  restored " << base << " from the old copy of a save cut between its two renames\n";
  }
  std::string kept;
  for (const fs::path& p : leftovers)
    if (fs::exists(p)) kept += " " + p.filename().string();
  if (!kept.empty()) log << "  kept" << kept << ": a live engine process is saving there\n";
}

// A checkpoint directory to resume from: DIR itself when it holds trainer_state.json, else the
// complete checkpoint-<step> inside DIR with the largest step (incomplete ones are skipped, and
// said so).
std::string find_resume_dir(const std::string& dir, std::ostream& log) {
  io::recover_directory(dir);
  if (fs::exists(fs::path(dir) / "trainer_state.json")) {
    const std::string defect = checkpoint_defect(dir);
    ENGINE_CHECK(defect.empty(), "--resume ", dir, ": not a complete checkpoint (", defect, ")");
    return dir;
  }
  ENGINE_CHECK(fs::is_directory(dir), "--resume: '", dir, "' does not exist");
  remove_stale_saves(dir, log);
  std::vector<std::pair<int64_t, fs::path>> checkpoints;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const int64_t step = checkpoint_step(entry.path().filename().string());
    if (step >= 0) checkpoints.emplace_back(step, entry.path());
  }
  std::sort(checkpoints.rbegin(), checkpoints.rend());
  for (const auto& [step, path] : checkpoints) {
    const std::string defect = checkpoint_defect(path);
    if (defect.empty()) return path.string();
    log << "  skipped " << path.filename().string() << ": incomplete (" << defect << ")\n";
  }
  fail("--resume: '", dir, "' holds no complete checkpoint (no trainer_state.json, no complete checkpoint-<step>/)");
}

std::string format_metrics(const std::map<std::string, double>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += (s.empty() ? "" : "  ") + k + " " + format_metric(v);
  return s;
}

class Trainer {
 public:
  Trainer(const FinetuneOptions& o, std::ostream& log, dist::World& world)
      : o_(o), log_(log), progress_(log), world_(world) {}
  FinetuneResult run();

 private:
  void setup();
  void open_model();
  void set_labels(const DataOptions& data);
  void load_data(const DataOptions& data);
  std::string model_name() const;
  std::string train_name() const;
  bool has_dev() const { return !dev_data_.examples.empty(); }
  void evaluate_and_checkpoint(bool epoch_end, bool final_step);
  void save_checkpoint();
  void save_model(const std::string& dir, std::function<void(const std::string&)> extra_files = {});
  void restore(const std::string& dir);
  void append_metrics(nlohmann::json event);
  void prune_checkpoints();
  nlohmann::json trainer_state() const;
  void check_replicas();
  EvalShard eval_shard();

  const FinetuneOptions& o_;
  std::ostream& log_;
  Progress progress_;
  dist::World& world_;  // the ranks of a data-parallel run (one: a plain run); rank 0 writes files
  std::unique_ptr<dist::ShardedBatches> shards_;
  std::unique_ptr<dist::GradientSync> grad_sync_;
  std::string backend_name_;
  DType act_ = DType::f32;
  Task task_ = Task::classify;
  std::unique_ptr<tokenizer::BertTokenizer> tok_;
  LabelMap labels_;
  BertConfig config_;
  TaskData train_data_, dev_data_, test_data_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<BertModel> model_;
  std::unique_ptr<Optimizer> optimizer_;
  std::unique_ptr<Batcher> batcher_;
  std::unique_ptr<LrSchedule> schedule_;
  std::string best_metric_;
  bool greater_is_better_ = true;
  int64_t total_steps_ = 0, steps_per_epoch_ = 0, step_ = 0, skipped_ = 0;
  double best_value_ = NAN;
  int64_t best_step_ = -1;
  std::map<std::string, double> best_metrics_, last_dev_;
  std::vector<double> logged_losses_;
  std::string vocab_path_;
  std::string base_fingerprint_;  // of model_dir's weights, recorded with LoRA adapters
  double train_seconds_ = 0;      // training steps only, for the mean step time
  int64_t timed_steps_ = 0;
};

std::string Trainer::model_name() const {
  return o_.model_in_memory ? "a new random BERT (in-memory config)" : o_.model_dir;
}

std::string Trainer::train_name() const { return o_.data_in_memory ? o_.data_in_memory->train.path : o_.train_file; }

// The model's config and tokenizer, from the model directory or the in-memory model. An in-memory
// vocabulary is written to the output directory once, so every saved model copies it like a
// directory's vocab.txt and loads back with a tokenizer.
void Trainer::open_model() {
  if (o_.model_in_memory) {
    config_ = o_.model_in_memory->config;
    ENGINE_CHECK(!o_.model_in_memory->vocab.empty(), "finetune: an in-memory model needs its vocabulary");
    std::string text;
    for (const std::string& token : o_.model_in_memory->vocab) text += token + "\n";
    fs::create_directories(o_.output_dir);
    vocab_path_ = (fs::path(o_.output_dir) / "vocab.txt").string();
    io::write_file_atomic(vocab_path_, text);
    tok_ = std::make_unique<tokenizer::BertTokenizer>(tokenizer::Vocab::from_text(text, vocab_path_), true);
  } else {
    config_ = read_model_config(o_.model_dir);
    vocab_path_ = (fs::path(o_.model_dir) / "vocab.txt").string();
    ENGINE_CHECK(fs::exists(vocab_path_), "model directory '", o_.model_dir, "' has no vocab.txt");
    tok_ = std::make_unique<tokenizer::BertTokenizer>(tokenizer::BertTokenizer::from_model_dir(o_.model_dir));
  }
  ENGINE_CHECK(tok_->vocab().size() <= config_.vocab_size, vocab_path_, ": ", tok_->vocab().size(),
               " tokens but the model's embeddings have vocab_size ", config_.vocab_size,
               " rows: this vocabulary does not belong to this model");
}

// The labels of the run, and the head they give the model's config.
void Trainer::set_labels(const DataOptions& data) {
  if (task_ == Task::regress) {
    config_.num_labels = 1;
    config_.problem_type = "regression";
    config_.id2label.clear();
    return;
  }
  if (o_.data_in_memory) {
    // The examples hold ids already: their order is fixed.
    labels_ = LabelMap::from_names(o_.data_in_memory->labels);
  } else {
    labels_ = label_map_of(o_.train_file, task_, data);
    // A model that already has a head for exactly these labels keeps its own label order, so its
    // classifier rows keep their meaning (as run_glue.py does with a fine-tuned model's label2id).
    if (!o_.model_in_memory && !o_.reinit_head && int64_t(config_.id2label.size()) == labels_.size() &&
        checkpoint_head_matches(o_.model_dir, labels_.size())) {
      std::vector<std::string> names;
      for (const auto& [id, name] : config_.id2label) names.push_back(name);
      bool same_set = std::all_of(names.begin(), names.end(), [&](const std::string& n) { return labels_.find(n) >= 0; });
      if (same_set) labels_ = LabelMap::from_names(names);
    }
  }
  ENGINE_CHECK(labels_.size() >= 2, train_name(), ": only one label (", labels_.size() ? labels_.name(0) : "none",
               ") in the training data: nothing to classify");
  config_.num_labels = labels_.size();
  config_.problem_type = task_ == Task::classify ? "single_label_classification" : "";
  config_.id2label.clear();
  for (int32_t i = 0; i < labels_.size(); ++i) config_.id2label[i] = labels_.name(i);
}

// The train, dev and test examples: read and tokenized from files, or taken from memory.
void Trainer::load_data(const DataOptions& data) {
  auto t0 = Clock::now();
  if (o_.data_in_memory) {
    train_data_ = o_.data_in_memory->train;
    dev_data_ = o_.data_in_memory->dev;
  } else {
    train_data_ = load_task_data(o_.train_file, task_, *tok_, &labels_, true, data);
    if (!o_.dev_file.empty()) dev_data_ = load_task_data(o_.dev_file, task_, *tok_, &labels_, true, data);
  }
  if (!o_.test_file.empty()) test_data_ = load_task_data(o_.test_file, task_, *tok_, &labels_, false, data);
  log_ << "  data: " << train_data_.examples.size() << " train examples (" << train_data_.tokens() << " tokens)";
  if (has_dev()) log_ << ", " << dev_data_.examples.size() << " dev";
  if (!o_.test_file.empty()) log_ << ", " << test_data_.examples.size() << " test";
  if (!o_.data_in_memory)
    log_ << ", read and tokenized in " << format_metric(std::chrono::duration<double>(Clock::now() - t0).count(), 2)
         << " s";
  log_ << "\n";
  for (const TaskData* d : {&train_data_, &dev_data_, &test_data_})
    if (d->qa) log_ << "  qa " << io::result_path(d->path) << ": " << d->qa->describe() << "\n";
}

void Trainer::setup() {
  ENGINE_CHECK(!o_.model_dir.empty() || o_.model_in_memory,
               "finetune: --model DIR is required (with no arguments at all, `engine finetune` runs the embedded "
               "default)");
  ENGINE_CHECK(!o_.train_file.empty() || o_.data_in_memory, "finetune: --train FILE is required");
  ENGINE_CHECK(o_.batch_size > 0 && o_.eval_batch_size > 0, "--batch-size and --eval-batch-size must be positive");
  ENGINE_CHECK(o_.gradient_accumulation_steps > 0, "--gradient-accumulation-steps must be positive");
  ENGINE_CHECK(o_.num_train_epochs > 0 || o_.max_steps > 0, "--num-train-epochs or --max-steps must be positive");
  ENGINE_CHECK(o_.on_divergence == "stop" || o_.on_divergence == "skip", "--on-divergence must be stop or skip");
  ENGINE_CHECK(o_.logging_steps > 0, "--logging-steps must be positive");
  task_ = parse_task(o_.task);
  if (o_.lora.enabled()) {
    ENGINE_CHECK(!o_.model_dir.empty(), "--peft lora needs --model: adapters adapt a pretrained base model");
    o_.lora.validate();
    base_fingerprint_ = base_fingerprint(o_.model_dir);
  }
  backend_name_ = resolve_backend(o_.backend);
  act_ = resolve_precision(o_.precision, backend_name_);

  open_model();
  DataOptions data = o_.data;
  ENGINE_CHECK(data.encode.max_length <= config_.max_position_embeddings, "--max-length ", data.encode.max_length,
               " exceeds the model's max_position_embeddings ", config_.max_position_embeddings);
  const int64_t default_length = task_ == Task::qa ? 384 : 128;  // qa: run_qa.py's max_seq_length
  if (data.encode.max_length <= 0) data.encode.max_length = int(std::min<int64_t>(default_length, config_.max_position_embeddings));
  set_labels(data);
  auto override_prob = [](double v, float& field) {
    if (v >= 0) field = float(v);
  };
  override_prob(o_.hidden_dropout, config_.hidden_dropout_prob);
  override_prob(o_.attention_dropout, config_.attention_probs_dropout_prob);
  override_prob(o_.classifier_dropout, config_.classifier_dropout);
  config_.validate("model config");

  log_ << "engine finetune: " << task_name(task_) << " on " << io::result_path(train_name()) << ", model "
       << io::result_path(model_name()) << ", "
       << backend_name_ << " backend, " << (act_ == DType::bf16 ? "bf16" : "fp32") << "\n";
  load_data(data);
  if (task_ != Task::regress) {
    log_ << "  labels:";
    for (int32_t i = 0; i < labels_.size(); ++i) log_ << " " << i << "=" << labels_.name(i);
    log_ << "\n";
  }

  // The model, planned for the largest batch either pass can make.
  int64_t longest = std::max({train_data_.max_length(), dev_data_.max_length(), test_data_.max_length()});
  ModelOptions mo;
  mo.head = task_head(task_);
  mo.act = act_;
  mo.lora = o_.lora;
  mo.max_sequences = std::max(o_.batch_size, o_.eval_batch_size);
  mo.max_tokens = o_.max_tokens > 0 ? std::max(o_.max_tokens, longest) : mo.max_sequences * longest;
  BackendOptions bo;
  bo.attention = o_.attention;
  world_.set_timeout(o_.dist_timeout);
  if (backend_name_ == "cuda") {
    bo.device = world_.local_rank();  // one GPU per rank
    world_.open_gpu_reducer();
  }
  backend_ = make_backend(backend_name_, bo);
  model_ = std::make_unique<BertModel>(*backend_, config_, mo);

  AdamWConfig ac;
  ac.beta1 = float(o_.adam_beta1);
  ac.beta2 = float(o_.adam_beta2);
  ac.eps = float(o_.adam_epsilon);
  ac.weight_decay = float(o_.weight_decay);
  ac.max_grad_norm = float(o_.max_grad_norm);
  optimizer_ = std::make_unique<Optimizer>(*backend_, model_->params(), ac);
  grad_sync_ = std::make_unique<dist::GradientSync>(world_, *model_, o_.dist_overlap);

  BatcherOptions bopt;
  bopt.batch_size = o_.batch_size;
  bopt.max_tokens = o_.max_tokens;
  bopt.group_by_length = o_.group_by_length;
  bopt.seed = o_.seed;
  batcher_ = std::make_unique<Batcher>(train_data_.examples, bopt);
  shards_ = std::make_unique<dist::ShardedBatches>(*batcher_, world_.rank(), world_.size());
  steps_per_epoch_ = (shards_->global_batches(0) + o_.gradient_accumulation_steps - 1) / o_.gradient_accumulation_steps;
  total_steps_ = o_.max_steps > 0 ? o_.max_steps : int64_t(std::ceil(o_.num_train_epochs * double(steps_per_epoch_)));
  int64_t warmup = resolve_warmup_steps(o_.warmup_steps, o_.warmup_ratio, total_steps_);
  schedule_ = std::make_unique<LrSchedule>(parse_schedule_kind(o_.lr_scheduler_type), o_.learning_rate, warmup,
                                           total_steps_);
  best_metric_ = o_.metric_for_best_model.empty() ? default_best_metric(task_) : o_.metric_for_best_model;
  greater_is_better_ = best_metric_ != "loss";

  // Options, model and data must be the same on every rank (a fingerprint from rank 0).
  nlohmann::json fingerprint = resume_fingerprint(o_, backend_name_, act_, world_.size());
  fingerprint["parameters"] = model_->params().size();
  fingerprint["train_examples"] = train_data_.examples.size();
  fingerprint["dev_examples"] = dev_data_.examples.size();
  fingerprint["total_steps"] = total_steps_;
  world_.check_same_as_root(fingerprint, "the run's options, model and data");
  if (world_.root()) remove_stale_saves(o_.output_dir, log_);
  if (!o_.resume.empty()) {
    // Rank 0 picks (and tidies) the checkpoint; every rank reads the one it picked.
    restore(world_.broadcast_from_root(world_.root() ? find_resume_dir(o_.resume, log_) : "", "--resume directory"));
  } else if (o_.model_in_memory) {
    model_->init_weights(o_.seed);
    log_ << "  weights: random (seed " << o_.seed << ")\n";
  } else {
    LoadReport report = load_weights(*model_, o_.model_dir, o_.reinit_head, o_.seed);
    log_ << "  weights: " << report.summary() << "\n";
  }
  log_ << "  model: " << config_.num_hidden_layers << " layers, hidden " << config_.hidden_size << ", "
       << config_.num_attention_heads << " heads, " << model_->params().count() << " parameters; memory " << (model_->parameter_bytes() >> 20)
       << " MiB parameters + optimizer, " << (model_->activation_bytes() >> 20) << " MiB activations\n"
       << "  training: " << model_->params().trainable_count() << " trainable parameters"
       << (o_.lora.enabled() ? " (LoRA adapters, r " + std::to_string(o_.lora.r) + ", alpha " +
                                   nlohmann::json(o_.lora.alpha).dump() + ", on " + lora_json(o_.lora)["target_modules"].dump() +
                                   ", and the classifier; the rest frozen)"
                             : "")
       << "; optimizer state (gradients + AdamW moments) " << format_metric(model_->params().optimizer_state_bytes() / 1048576.0, 2)
       << " MiB\n"
       << "  schedule: " << total_steps_ << " steps (" << steps_per_epoch_ << " per epoch), batch " << o_.batch_size
       << (o_.max_tokens > 0 ? " sequences / " + std::to_string(o_.max_tokens) + " tokens" : " sequences") << " x "
       << o_.gradient_accumulation_steps << " accumulation, lr " << o_.learning_rate << " " << o_.lr_scheduler_type
       << " with " << warmup << " warmup steps" << std::endl;  // shown before the first step, not with it
  if (world_.distributed())
    log_ << "  data parallel: " << world_.size() << " ranks, global batch " << world_.size() << " x " << o_.batch_size
         << " sequences; rank 0 logs, evaluates and saves" << std::endl;
  if (!world_.root()) return;

  fs::create_directories(o_.output_dir);
  nlohmann::json run = options_json(o_);
  run["resolved"] = {{"backend", backend_name_},
                     {"precision", dtype_name(act_)},
                     {"total_steps", total_steps_},
                     {"steps_per_epoch", steps_per_epoch_},
                     {"warmup_steps", warmup},
                     {"metric_for_best_model", best_metric_},
                     {"labels", task_ == Task::regress ? nlohmann::json::array() : nlohmann::json(labels_.names())},
                     {"train_examples", train_data_.examples.size()},
                     {"world_size", world_.size()},
                     {"parameters", model_->params().count()},
                     {"trainable_parameters", model_->params().trainable_count()},
                     {"optimizer_state_bytes", model_->params().optimizer_state_bytes()}};
  io::write_file_atomic((fs::path(o_.output_dir) / "run_config.json").string(), run.dump(2) + "\n");
}

nlohmann::json Trainer::trainer_state() const {
  BatcherState b = batcher_->state();
  return {{"global_step", step_},
          {"optimizer_steps", optimizer_->steps_taken()},
          {"skipped_steps", skipped_},
          {"batcher",
           {{"epoch", b.epoch}, {"batch", b.batch}, {"seed", b.seed}, {"examples", b.examples}, {"batch_size", o_.batch_size}}},
          {"best_metric", best_metric_},
          {"best_value", metric_value(best_value_)},
          {"best_step", best_step_},
          {"parameter_buffer_elements", model_->params().size()},
          {"fingerprint", resume_fingerprint(o_, backend_name_, act_, world_.size())}};
}

void Trainer::save_model(const std::string& dir, std::function<void(const std::string&)> extra_files) {
  if (!world_.root()) return;
  SaveOptions so;
  so.vocab_path = vocab_path_;
  so.do_lower_case = tok_->lowercase();
  so.extra_files = std::move(extra_files);
  if (o_.lora.enabled()) {
    so.adapter_base = io::result_path(o_.model_dir);
    so.extra_config[kAdapterBaseKey] = base_fingerprint_;
  }
  save_pretrained(*model_, dir, so);
}

void Trainer::save_checkpoint() {
  if (!world_.root()) return;
  std::string dir = (fs::path(o_.output_dir) / ("checkpoint-" + std::to_string(step_))).string();
  // The model directory plus the training state, staged and swapped in together.
  save_model(dir, [this](const std::string& staged) {
    Tensor m = model_->params().adam_m(), v = model_->params().adam_v();
    std::vector<float> hm(size_t(m.numel())), hv(size_t(v.numel()));
    backend_->copy_to_host(hm.data(), m);
    backend_->copy_to_host(hv.data(), v);
    io::write_safetensors((fs::path(staged) / "optimizer.safetensors").string(),
                          {{"adam_m", DType::f32, {m.numel()}, hm.data()}, {"adam_v", DType::f32, {v.numel()}, hv.data()}});
    io::write_file_atomic((fs::path(staged) / "trainer_state.json").string(), trainer_state().dump(2) + "\n");
  });
  prune_checkpoints();
}

void Trainer::prune_checkpoints() {
  if (o_.save_total_limit <= 0) return;
  std::vector<std::pair<int64_t, fs::path>> found;
  for (const auto& entry : fs::directory_iterator(o_.output_dir)) {
    const int64_t step = checkpoint_step(entry.path().filename().string());
    if (step >= 0) found.emplace_back(step, entry.path());
  }
  std::sort(found.begin(), found.end());
  for (size_t i = 0; i + size_t(o_.save_total_limit) < found.size(); ++i) fs::remove_all(found[i].second);
}

void Trainer::restore(const std::string& dir) {
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(io::read_file((fs::path(dir) / "trainer_state.json").string()));
  } catch (const nlohmann::json::exception& e) {
    fail(dir, "/trainer_state.json: not valid JSON (", e.what(), ")");
  }
  nlohmann::json expected = resume_fingerprint(o_, backend_name_, act_, world_.size());
  if (state["fingerprint"].is_object() && !state["fingerprint"].contains("world_size"))
    state["fingerprint"]["world_size"] = 1;  // checkpoints from before data parallelism: one process
  for (auto& [key, value] : expected.items()) {
    ENGINE_CHECK(state["fingerprint"].contains(key) && state["fingerprint"][key] == value, "--resume ", dir,
                 ": the checkpoint was made with ", key, " = ", state["fingerprint"].value(key, nlohmann::json()).dump(),
                 ", this run has ", value.dump(), " (an exact resume needs the same setting)");
  }
  ENGINE_CHECK(state.value("parameter_buffer_elements", int64_t(-1)) == model_->params().size(), "--resume ", dir,
               ": the optimizer state does not fit this model");
  if (o_.lora.enabled()) {
    // The frozen base from --model, the adapters and the head from the checkpoint.
    load_base_and_adapter(*model_, o_.model_dir, dir);
  } else {
    LoadReport report = load_weights(*model_, dir, false, o_.seed);
    ENGINE_CHECK(report.initialised.empty(), "--resume ", dir, ": checkpoint lacks ", report.initialised[0]);
  }
  io::SafetensorsFile opt = io::SafetensorsFile::open((fs::path(dir) / "optimizer.safetensors").string());
  auto load_flat = [&](const char* name, Tensor dst) {
    std::vector<float> v = opt.to_f32(name);
    ENGINE_CHECK(int64_t(v.size()) == dst.numel(), dir, "/optimizer.safetensors: ", name, " has ", v.size(),
                 " elements, expected ", dst.numel());
    backend_->copy_from_host(dst, v.data());
  };
  load_flat("adam_m", model_->params().adam_m());
  load_flat("adam_v", model_->params().adam_v());
  step_ = state.at("global_step").get<int64_t>();
  optimizer_->set_steps_taken(state.at("optimizer_steps").get<int64_t>());
  skipped_ = state.value("skipped_steps", int64_t(0));
  const auto& b = state.at("batcher");
  // The cursor counts per-rank batches of the checkpoint's run; another world size with the same
  // global batch has other per-rank batches (no token budget then): convert through the examples.
  int64_t cursor = b.at("batch").get<int64_t>();
  const int64_t saved_batch_size = b.value("batch_size", o_.batch_size);
  if (saved_batch_size != o_.batch_size) {
    ENGINE_CHECK(cursor * saved_batch_size % o_.batch_size == 0, "--resume ", dir, ": the checkpoint stopped ",
                 cursor * saved_batch_size, " examples into its epoch, not a whole number of batches of ", o_.batch_size);
    cursor = cursor * saved_batch_size / o_.batch_size;
  }
  batcher_->restore(BatcherState{b.at("epoch").get<int64_t>(), cursor, b.at("seed").get<uint64_t>(),
                                 b.at("examples").get<int64_t>()});
  best_step_ = state.value("best_step", int64_t(-1));
  if (state["best_value"].is_number()) best_value_ = state["best_value"].get<double>();
  log_ << "  resumed from " << io::result_path(dir) << " at step " << step_ << "\n";
}

EvalShard Trainer::eval_shard() {
  EvalShard shard;
  shard.rank = world_.rank();
  shard.world = world_.size();
  shard.sum_f32 = [this](std::vector<float>& v) { world_.sum(v, "gathering the evaluation's logits"); };
  shard.sum_f64 = [this](std::vector<double>& v) { world_.sum(v, "gathering the evaluation's losses"); };
  return shard;
}

void Trainer::append_metrics(nlohmann::json event) {
  if (!world_.root()) return;
  std::ofstream out(fs::path(o_.output_dir) / "metrics.jsonl", std::ios::app);
  ENGINE_CHECK(out, o_.output_dir, "/metrics.jsonl: cannot open for appending");
  out << event.dump() << "\n";
  out.flush();
  ENGINE_CHECK(out, o_.output_dir, "/metrics.jsonl: write failed");
}

void Trainer::evaluate_and_checkpoint(bool epoch_end, bool final_step) {
  const bool eval_now = has_dev() &&
                        (final_step || (o_.eval_steps > 0 ? step_ % o_.eval_steps == 0 : epoch_end));
  const bool save_now = o_.save_steps > 0 ? step_ % o_.save_steps == 0
                                          : (eval_now || (!has_dev() && epoch_end)) && !final_step;
  if (eval_now) {
    auto t0 = Clock::now();
    Predictions p = predict(*model_, dev_data_, labels_, o_.eval_batch_size, o_.max_tokens, {}, eval_shard());
    last_dev_ = p.metrics;
    if (final_step && task_ == Task::qa && world_.root()) {  // run_qa.py's eval predictions, for the official scripts
      fs::create_directories(o_.output_dir);
      write_qa_predictions(p, dev_data_, o_.output_dir);
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    nlohmann::json event = {{"event", "eval"}, {"step", step_}, {"epoch", double(step_) / double(steps_per_epoch_)}};
    for (const auto& [k, v] : p.metrics) event["eval_" + k] = metric_value(v);
    event["eval_seconds"] = secs;
    append_metrics(event);
    progress_.message("eval  step " + std::to_string(step_) + ": " + format_metrics(p.metrics));
    auto it = p.metrics.find(best_metric_);
    ENGINE_CHECK(it != p.metrics.end(), "--metric-for-best-model '", best_metric_, "' is not a metric of task ",
                 task_name(task_));
    double v = it->second;
    bool better = std::isfinite(v) && (!std::isfinite(best_value_) || (greater_is_better_ ? v > best_value_ : v < best_value_));
    if (better) {
      best_value_ = v;
      best_step_ = step_;
      best_metrics_ = p.metrics;
      save_model((fs::path(o_.output_dir) / "best").string());
    }
  }
  if (save_now) save_checkpoint();
}

// The ranks of a data-parallel run apply the same update to the same parameters, so they must end
// bitwise equal: checked once at the end (a digest of the parameters against rank 0's).
void Trainer::check_replicas() {
  if (!world_.distributed()) return;
  Tensor master = model_->params().master();
  std::vector<float> host(size_t(master.numel()));
  backend_->copy_to_host(host.data(), master);
  char digest[17];
  std::snprintf(digest, sizeof digest, "%016llx", (unsigned long long)dist::fnv1a64(host.data(), host.size() * 4));
  world_.check_same_as_root({{"parameters_fnv1a64", digest}}, "the trained parameters");
}

FinetuneResult Trainer::run() {
  const auto start = Clock::now();
  setup();
  const int64_t accum = o_.gradient_accumulation_steps;
  const float micro_weight = 1.f / float(accum);
  double window_loss = 0, window_seconds = 0, window_flops = 0;
  int64_t window_steps = 0, window_samples = 0, window_tokens = 0;
  double last_loss = NAN;
  const double peak = backend_->peak_tflops(act_) * world_.size();  // MFU against all the ranks' GPUs
  while (step_ < total_steps_) {
    auto t0 = Clock::now();
    const int64_t epoch_before = batcher_->state().epoch;
    model_->zero_grads();
    // This rank's part of the step's loss and of its FLOPs; summed over the ranks after the step.
    std::vector<double> step_sums = {0.0, 0.0};
    for (int64_t micro = 0; micro < accum; ++micro) {
      dist::Shard shard = shards_->next();
      const PackedBatch& batch = shard.batch;
      // The loss of a micro-batch is the mean over the rows it counts in the whole global batch, as
      // one process would take it (trainer.h, "Data parallel"): the ranks first add up their rows.
      std::vector<double> rows = {0.0};
      if (batch.sequences > 0) {
        model_->set_batch(batch);
        rows[0] = double(model_->counted_rows());
      }
      const double local_rows = rows[0];
      world_.sum(rows, "sum of the counted rows");
      window_samples += shard.global_sequences;
      window_tokens += shard.global_tokens;
      if (batch.sequences == 0) continue;  // past the epoch's end: this rank adds nothing this time
      model_->set_global_offset(shard.token_offset, shard.sequence_offset);
      // Dropout masks are a function of (seed, step, micro-batch) and the place in the global batch:
      // a resumed run draws the same, and so does any world size.
      const uint64_t dropout_seed = o_.seed * 0x9E3779B97F4A7C15ull + uint64_t(step_) * uint64_t(accum) + uint64_t(micro);
      model_->set_loss_rows(int64_t(rows[0]));  // the gradient is scaled by micro_weight / global rows
      model_->forward(Pass::train, dropout_seed, micro_weight);
      if (micro == accum - 1) grad_sync_->arm();  // the step's gradients are final in this backward
      model_->backward();
      const double share = rows[0] > 0 ? local_rows / rows[0] : 0.0;  // exactly 1 in a world of one
      step_sums[0] += double(model_->loss()) * share / double(accum);
      double sum_sq = 0;
      for (int64_t s = 0; s < batch.sequences; ++s) {
        double len = double(batch.cu_seqlens[s + 1] - batch.cu_seqlens[s]);
        sum_sq += len * len;
      }
      step_sums[1] += config_.train_flops(batch.tokens, sum_sq);
    }
    // Gradients summed over the ranks before the norm: clipping, the divergence test and AdamW see
    // the same numbers on every rank.
    grad_sync_->finish();
    world_.sum(step_sums, "sum of the step's loss");
    const double step_loss = step_sums[0];
    window_flops += step_sums[1];
    optimizer_->compute_grad_norm();
    const float norm = optimizer_->grad_norm();
    const double lr = schedule_->lr_at(step_);
    ++step_;
    const double epoch = double(step_) / double(steps_per_epoch_);
    if (!std::isfinite(norm) || !std::isfinite(step_loss)) {
      ++skipped_;
      append_metrics({{"event", "divergence"},
                      {"step", step_},
                      {"loss", metric_value(step_loss)},
                      {"grad_norm", metric_value(norm)},
                      {"action", o_.on_divergence}});
      std::string what = "step " + std::to_string(step_) + ": divergent step (loss " + format_metric(step_loss) +
                         ", gradient norm " + format_metric(norm) + ")";
      ENGINE_CHECK(o_.on_divergence == "skip", what,
                   "; stopping (the last checkpoint is intact; --on-divergence skip skips such steps)");
      progress_.message(what + ": update skipped");
      model_->zero_grads();
    } else {
      optimizer_->step(float(lr));
      window_loss += step_loss;
      ++window_steps;
      last_loss = step_loss;
    }
    const double step_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    window_seconds += step_seconds;
    train_seconds_ += step_seconds;
    ++timed_steps_;

    const bool log_now = step_ % o_.logging_steps == 0 || step_ == total_steps_;
    if (window_steps > 0) {
      const double loss = window_loss / double(window_steps);
      const double sps = double(window_samples) / window_seconds, tps = double(window_tokens) / window_seconds;
      const double mfu = peak > 0 ? window_flops / window_seconds / (peak * 1e12) : NAN;
      char line[320];
      std::snprintf(line, sizeof line,
                    "step %lld/%lld  epoch %.2f  loss %.4f  lr %.3g  grad_norm %.3g  %.1f samples/s  %.0f tokens/s  "
                    "MFU %s  mem %lld MiB",
                    (long long)step_, (long long)total_steps_, epoch, loss, lr, double(norm), sps, tps,
                    std::isfinite(mfu) ? (format_metric(100 * mfu, 1) + "%").c_str() : "n/a",
                    (long long)((model_->parameter_bytes() + model_->activation_bytes()) >> 20));
      progress_.update(line, log_now);
      if (log_now) {
        logged_losses_.push_back(loss);
        append_metrics({{"event", "train"},
                        {"step", step_},
                        {"epoch", epoch},
                        {"loss", loss},
                        {"lr", lr},
                        {"grad_norm", norm},
                        {"samples_per_second", sps},
                        {"tokens_per_second", tps},
                        {"mfu", metric_value(mfu)},
                        {"memory_bytes", model_->parameter_bytes() + model_->activation_bytes()}});
        window_loss = window_seconds = window_flops = 0;
        window_steps = window_samples = window_tokens = 0;
      }
    }
    const bool epoch_end = batcher_->state().epoch > epoch_before;
    evaluate_and_checkpoint(epoch_end, step_ == total_steps_);
  }

  check_replicas();
  save_model((fs::path(o_.output_dir) / "model").string());
  FinetuneResult result;
  result.steps = step_;
  result.final_loss = last_loss;
  result.skipped_steps = skipped_;
  result.logged_losses = logged_losses_;
  result.dev_metrics = last_dev_;
  result.best_metrics = best_metrics_;
  result.trainable_parameters = model_->params().trainable_count();
  result.optimizer_state_bytes = model_->params().optimizer_state_bytes();
  result.mean_step_seconds = timed_steps_ > 0 ? train_seconds_ / double(timed_steps_) : 0;
  nlohmann::json end = {{"event", "end"},
                        {"step", step_},
                        {"skipped_steps", skipped_},
                        {"trainable_parameters", result.trainable_parameters},
                        {"optimizer_state_bytes", result.optimizer_state_bytes},
                        {"mean_step_seconds", result.mean_step_seconds}};
  if (has_dev()) {
    for (const auto& [k, v] : last_dev_) end["eval_" + k] = metric_value(v);
    end["best_step"] = best_step_;
    end["best_" + best_metric_] = metric_value(best_value_);
  }
  if (!o_.test_file.empty() && test_data_.has_labels) {
    result.test_metrics = predict(*model_, test_data_, labels_, o_.eval_batch_size, o_.max_tokens, {}, eval_shard()).metrics;
    for (const auto& [k, v] : result.test_metrics) end["test_" + k] = metric_value(v);
    progress_.message("test: " + format_metrics(result.test_metrics));
  }
  append_metrics(end);
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  log_ << "done: " << step_ << " steps in " << format_metric(result.seconds, 1) << " s (mean step "
       << format_metric(result.mean_step_seconds, 3) << " s; optimizer state "
       << format_metric(result.optimizer_state_bytes / 1048576.0, 2) << " MiB for " << result.trainable_parameters
       << " trainable parameters)";
  if (skipped_) log_ << " (" << skipped_ << " skipped as divergent)";
  log_ << "; final model in " << (fs::path(io::result_path(o_.output_dir)) / "model").string();
  if (best_step_ >= 0)
    log_ << "; best " << best_metric_ << " " << format_metric(best_value_) << " at step " << best_step_ << " in "
         << (fs::path(io::result_path(o_.output_dir)) / "best").string();
  log_ << "\n";
  return result;
}

}  // namespace

FinetuneResult run_finetune(const FinetuneOptions& options, std::ostream& log) {
  dist::World& world = dist::World::get();
  if (!world.distributed()) {
    Trainer trainer(options, log, world);
    return trainer.run();
  }
  // Ranks but 0 stay quiet; an error on any rank ends the whole job with that rank's message.
  std::ostream quiet(nullptr);
  try {
    Trainer trainer(options, world.root() ? log : quiet, world);
    return trainer.run();
  } catch (const std::exception& e) {
    world.abort_with(e.what());
  }
}

}  // namespace engine
