// engine finetune: fine-tune a BERT model. With no model and no data, the embedded default runs:
// a small random BERT on a built-in synthetic task, on the CPU, in about a minute.
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/train/default_run.h"

namespace engine::cli {

void add_finetune_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("finetune", "Fine-tune a model (no arguments: the embedded default demo)");
  auto o = std::make_shared<DefaultRunOptions>();
  cmd->add_option("--backend", o->backend, "cpu or cuda")->capture_default_str();
  cmd->add_option("--max-steps", o->steps, "optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--batch-size", o->batch_size, "sequences per batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--learning-rate", o->lr, "peak learning rate")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--seed", o->seed, "random seed (data, weights, dropout)")->capture_default_str();
  cmd->add_option("--logging-steps", o->log_every, "print the loss every N steps")->capture_default_str();
  cmd->callback([o] { run_default_finetune(*o, std::cout); });
}

}  // namespace engine::cli
