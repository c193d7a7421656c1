// The embedded default fine-tune, what `engine finetune` runs with neither a model nor data: a
// small randomly initialised BERT learns the synthetic task (engine/train/synthetic.h) through the
// trainer, from an in-memory config and in-memory examples, so it logs the loss every step,
// evaluates on the dev set each epoch and writes an output directory like any other run.
#pragma once
#include <ostream>

#include "engine/train/trainer.h"

namespace engine {

// The default run's settings: 300 steps of 32 sentences, AdamW lr 1e-3 with 10% linear warmup and
// decay, weight decay 0.01, loss logged every step, on the CPU. Change any before running it.
FinetuneOptions embedded_default_options();

// Builds the synthetic task and model for options.seed and trains them. An empty output_dir means
// a new temporary directory, named in the last line of the log.
FinetuneResult run_embedded_default(FinetuneOptions options, std::ostream& log);

}  // namespace engine
