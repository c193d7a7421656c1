// The trainer behind `engine finetune --model DIR --train FILE ...`: Hugging Face Trainer semantics
// (the same option names and defaults where they exist) over the engine's packed batches.
//
// One optimizer step = gradient_accumulation_steps micro-batches, each loss scaled by 1/steps as
// HF does; micro-batches run on across epoch boundaries. After the backward pass of a step the
// gradient norm is read (one 4-byte read): a non-finite norm is a divergent step, reported with its
// number and, by --on-divergence, skipped (no update, gradients dropped) or the run stops.
//
// Output directory:
//   run_config.json         every option of the run, and what was resolved (steps, warmup, labels)
//   metrics.jsonl           one JSON object per event: {"event":"train"|"eval"|"divergence"|"end", ...}
//   checkpoint-<step>/      HF model directory + trainer_state.json + optimizer.safetensors: resume
//                           (with LoRA adapters every model directory holds peft's adapter files
//                           instead of model.safetensors: engine/model/adapter_files.h)
//   best/                   HF model directory of the best evaluation by --metric-for-best-model
//   model/                  HF model directory at the end of training
//   vocab.txt               the vocabulary, only for a model started from an in-memory config
// Every directory is written to a staging name and renamed into place: a crash leaves the previous
// one whole. --resume continues a run from a checkpoint exactly: the same parameters as a run that
// was never stopped (same backend and precision).
//
// Data parallel (engine/dist/world.h): under mpirun or srun with N > 1 ranks, each rank trains on its
// shard of every global micro-batch (engine/dist/sharded_batches.h). The loss weight rule: a
// micro-batch's loss is the mean over the rows it counts (sequences; tokens not ignored, for token
// classification) in the GLOBAL micro-batch, times 1/accumulation steps, exactly as one process with
// the whole global batch takes it. The ranks first sum their counted rows; each rank then scales the
// loss gradient of each of its rows by 1 / (global counted rows x accumulation steps) instead of
// 1 / (its own rows x ...) (BertModel::set_loss_rows), and the gradients are summed over the ranks
// before the norm, clipping and AdamW; so N ranks of batch B train the model one process of batch
// N*B trains, up to the order of floating-point sums. Rank 0 logs and writes every file; the
// evaluation is shared by the ranks and gathered exactly; an error on any rank ends the job.
//
// The model and the data may also be given in memory instead of as a directory and files (the
// embedded default, engine/train/default_run.h, uses both): the same loop, logs and evaluation.
#pragma once
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "engine/train/task.h"

namespace engine {

// A new model instead of a model directory: this shape, weights drawn from the run's seed.
struct InMemoryModel {
  BertConfig config;
  std::vector<std::string> vocab;  // id -> token: tokenizes data files, saved with the model
};

// Examples already tokenized instead of data files. Their label ids index `labels` (classify,
// tokens; empty for regress). dev may be empty: no evaluation.
struct InMemoryData {
  std::vector<std::string> labels;
  TaskData train, dev;
};

struct FinetuneOptions {
  // What to train.
  std::string model_dir;
  std::string train_file, dev_file, test_file;
  std::optional<InMemoryModel> model_in_memory;  // instead of model_dir
  std::optional<InMemoryData> data_in_memory;    // instead of train_file and dev_file
  std::string task = "classify";
  std::string output_dir = "engine-output";
  DataOptions data;  // data.encode.max_length 0: 128, or max_position_embeddings when smaller
  // Schedule and batches.
  double num_train_epochs = 3.0;
  int64_t max_steps = -1;  // > 0 overrides epochs
  int64_t batch_size = 32;
  int64_t eval_batch_size = 64;
  int64_t max_tokens = 0;  // per batch, 0 = no token budget
  bool group_by_length = false;
  int64_t gradient_accumulation_steps = 1;
  // Optimizer.
  double learning_rate = 5e-5;
  std::string lr_scheduler_type = "linear";
  double warmup_ratio = 0.0;
  int64_t warmup_steps = 0;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;
  // Model.
  double hidden_dropout = -1, attention_dropout = -1, classifier_dropout = -1;  // < 0: the config's
  bool reinit_head = false;
  LoraConfig lora;  // lora.r > 0: train LoRA adapters on the frozen model_dir (--peft lora)
  std::string precision = "auto";  // bf16, fp32, auto (bf16 on cuda, fp32 on cpu)
  std::string backend = "auto";    // cpu, cuda, auto
  std::string attention = "auto";
  uint64_t seed = 42;
  // Evaluation, checkpoints, logging.
  int64_t eval_steps = 0;   // 0: at the end of every epoch
  int64_t save_steps = 0;   // 0: at every evaluation (or epoch end without a dev file)
  int64_t save_total_limit = 2;
  std::string metric_for_best_model;  // empty: the task's default
  int64_t logging_steps = 10;
  std::string on_divergence = "stop";  // stop or skip
  std::string resume;
  // Data parallel (engine/dist/): seconds a rank waits in a collective before it ends the job.
  double dist_timeout = 600;
  bool dist_overlap = true;  // gradient buckets all-reduced during backward (engine/dist/grad_sync.h)
};

struct FinetuneResult {
  int64_t steps = 0;
  double final_loss = 0;
  std::map<std::string, double> dev_metrics, test_metrics, best_metrics;
  int64_t skipped_steps = 0;
  double seconds = 0;  // the whole run: setup, training, evaluation, saving
  std::vector<double> logged_losses;  // as in metrics.jsonl: each the mean over its logging window
  int64_t trainable_parameters = 0;
  int64_t optimizer_state_bytes = 0;  // gradients + AdamW moments: what full fine-tuning and LoRA differ in
  double mean_step_seconds = 0;       // training steps only (forward, backward, optimizer)
};

FinetuneResult run_finetune(const FinetuneOptions& options, std::ostream& log);

// The resolved backend and activation dtype for options (auto picks cuda when a GPU is visible).
std::string resolve_backend(const std::string& backend);
DType resolve_precision(const std::string& precision, const std::string& backend);

}  // namespace engine
