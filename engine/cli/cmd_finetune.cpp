// engine finetune: fine-tune a Hugging Face BERT directory on a labelled file (engine/train/
// trainer.h). With neither --model nor --train, the embedded default runs instead (engine/train/
// default_run.h): a small random BERT on a built-in synthetic task, on the CPU, in about 15 s.
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/cli/data_flags.h"
#include "engine/cli/lora_flags.h"
#include "engine/train/default_run.h"
#include "engine/train/trainer.h"

namespace engine::cli {

void add_finetune_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "finetune",
      "Fine-tune a BERT model directory (config.json, vocab.txt, model.safetensors) on a labelled file.\n"
      "With neither --model nor --train: the embedded default (a small random BERT learning a built-in synthetic\n"
      "task on the CPU; honours --max-steps, --batch-size, --learning-rate, --seed, --logging-steps, --backend,\n"
      "--output-dir, by default a new temporary directory).");
  auto o = std::make_shared<FinetuneOptions>();
  auto max_length = std::make_shared<int>(0);
  auto data = add_data_flags(cmd);
  auto lora = add_lora_flags(cmd);
  cmd->add_option("--model", o->model_dir, "Hugging Face model directory to start from");
  cmd->add_option("--train", o->train_file, "training file (.tsv, .csv, .jsonl; CoNLL for --task tokens; SQuAD .json/.jsonl for qa)");
  cmd->add_option("--dev", o->dev_file, "evaluation file, scored during training");
  cmd->add_option("--test", o->test_file, "test file, scored at the end when it has labels");
  cmd->add_option("--task", o->task, "classify, regress, tokens or qa")->capture_default_str();
  cmd->add_option("--output-dir", o->output_dir, "where checkpoints, the final model and metrics.jsonl go")
      ->capture_default_str();
  cmd->add_option("--max-length", *max_length,
                  "tokens per sequence, [CLS] and [SEP] included (default: 128, qa 384, or the model's "
                  "max_position_embeddings when smaller)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--num-train-epochs", o->num_train_epochs, "epochs (may be fractional)")->capture_default_str();
  cmd->add_option("--max-steps", o->max_steps, "optimizer steps; overrides --num-train-epochs when positive")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "sequences per micro-batch (per rank under mpirun/srun)")->capture_default_str();
  cmd->add_option("--eval-batch-size", o->eval_batch_size, "sequences per evaluation batch")->capture_default_str();
  cmd->add_option("--max-tokens", o->max_tokens, "token budget per batch (0: none; batches are packed, never padded)")
      ->capture_default_str();
  cmd->add_flag("--group-by-length", o->group_by_length, "batches of similar lengths (HF group_by_length)");
  cmd->add_option("--gradient-accumulation-steps", o->gradient_accumulation_steps, "micro-batches per optimizer step")
      ->capture_default_str();
  cmd->add_option("--learning-rate", o->learning_rate, "peak learning rate")->capture_default_str();
  cmd->add_option("--lr-scheduler-type", o->lr_scheduler_type, "linear, cosine, constant, constant_with_warmup")
      ->capture_default_str();
  cmd->add_option("--warmup-ratio", o->warmup_ratio, "warmup as a fraction of all steps")->capture_default_str();
  cmd->add_option("--warmup-steps", o->warmup_steps, "warmup steps (overrides --warmup-ratio when positive)")
      ->capture_default_str();
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay (not on biases and LayerNorm)")
      ->capture_default_str();
  cmd->add_option("--adam-beta1", o->adam_beta1, "AdamW beta1")->capture_default_str();
  cmd->add_option("--adam-beta2", o->adam_beta2, "AdamW beta2")->capture_default_str();
  cmd->add_option("--adam-epsilon", o->adam_epsilon, "AdamW epsilon")->capture_default_str();
  cmd->add_option("--max-grad-norm", o->max_grad_norm, "clip the global gradient norm (0: no clipping)")
      ->capture_default_str();
  cmd->add_option("--hidden-dropout", o->hidden_dropout, "override hidden_dropout_prob");
  cmd->add_option("--attention-dropout", o->attention_dropout, "override attention_probs_dropout_prob");
  cmd->add_option("--classifier-dropout", o->classifier_dropout, "override classifier_dropout");
  cmd->add_flag("--reinit-head", o->reinit_head, "start a fresh classifier even if the checkpoint has one");
  cmd->add_option("--precision", o->precision, "bf16, fp32 or auto (bf16 on cuda, fp32 on cpu)")->capture_default_str();
  cmd->add_option("--backend", o->backend, "cpu (fast), cpu-ref (plain-loop reference), cuda or auto (cuda when a GPU is visible, else cpu)")->capture_default_str();
  cmd->add_option("--attention", o->attention, "cuda attention: auto (flash for bf16, simple for fp32), flash, cudnn (dropout 0 only) or simple")->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed for shuffling, dropout and new weights")->capture_default_str();
  cmd->add_option("--eval-steps", o->eval_steps, "evaluate every N steps (0: every epoch)")->capture_default_str();
  cmd->add_option("--save-steps", o->save_steps, "checkpoint every N steps (0: at every evaluation)")
      ->capture_default_str();
  cmd->add_option("--save-total-limit", o->save_total_limit, "checkpoints kept (0: all)")->capture_default_str();
  cmd->add_option("--metric-for-best-model", o->metric_for_best_model,
                  "metric that picks best/ (default: accuracy, pearson or f1 by task; loss is minimised)");
  cmd->add_option("--logging-steps", o->logging_steps, "log every N steps")->capture_default_str();
  cmd->add_option("--on-divergence", o->on_divergence, "a NaN/inf loss or gradient: stop the run, or skip the step")
      ->capture_default_str();
  cmd->add_option("--resume", o->resume, "continue exactly from a checkpoint-<step> directory (or the latest in DIR)");
  cmd->add_option("--dist-timeout", o->dist_timeout,
                  "under mpirun/srun: seconds a rank waits for the others in a collective before it ends the job")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  auto overlap = std::make_shared<std::string>("on");
  cmd->add_option("--dist-overlap", *overlap,
                  "under mpirun/srun: all-reduce each layer's gradients while backward runs on (on), or all of them "
                  "after backward (off, for measurement)")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));

  cmd->callback([cmd, o, max_length, data, lora, overlap] {
    o->dist_overlap = *overlap == "on";
    if (o->model_dir.empty() && o->train_file.empty()) {
      // The embedded default keeps its own settings but for the flags given.
      FinetuneOptions d = embedded_default_options();
      auto given = [&](const char* flag) { return cmd->count(flag) > 0; };
      if (given("--backend")) d.backend = o->backend;
      if (given("--max-steps")) d.max_steps = o->max_steps;
      if (given("--batch-size")) d.batch_size = o->batch_size;
      if (given("--learning-rate")) d.learning_rate = o->learning_rate;
      if (given("--seed")) d.seed = o->seed;
      if (given("--logging-steps")) d.logging_steps = o->logging_steps;
      if (given("--output-dir")) d.output_dir = o->output_dir;
      run_embedded_default(d, std::cout);
      return;
    }
    o->data = data->resolve();
    o->data.encode.max_length = *max_length;
    o->lora = lora->resolve();
    run_finetune(*o, std::cout);
  });
}

}  // namespace engine::cli
