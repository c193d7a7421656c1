#include "engine/train/default_run.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "engine/model/bert.h"
#include "engine/train/optimizer.h"
#include "engine/train/schedule.h"
#include "engine/train/synthetic.h"

namespace engine {

namespace {

BertConfig default_config(int64_t vocab) {
  BertConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 64;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.intermediate_size = 128;
  c.max_position_embeddings = 64;
  c.hidden_dropout_prob = 0.1f;
  c.attention_probs_dropout_prob = 0.f;
  c.num_labels = 2;
  c.id2label = {{0, "negative"}, {1, "positive"}};
  return c;
}

std::vector<TokenizedExample> to_examples(const std::vector<SyntheticExample>& data) {
  std::vector<TokenizedExample> out;
  for (size_t i = 0; i < data.size(); ++i) {
    TokenizedExample e;
    e.ids = data[i].ids;
    e.type_ids.assign(e.ids.size(), 0);
    e.label = data[i].label;
    e.index = int64_t(i);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

DefaultRunResult run_default_finetune(const DefaultRunOptions& o, std::ostream& log) {
  auto start = std::chrono::steady_clock::now();
  SyntheticTask task = SyntheticTask::make(o.seed, 4000, 500);
  BertConfig config = default_config(int64_t(task.vocab.size()));
  auto backend = make_backend(o.backend);
  ModelOptions mo;
  mo.max_sequences = o.batch_size;
  mo.max_tokens = int64_t(o.batch_size) * 32;
  BertModel model(*backend, config, mo);
  model.init_weights(o.seed);
  AdamWConfig ac;
  ac.weight_decay = 0.01f;
  Optimizer opt(*backend, model.params(), ac);

  log << "engine finetune: embedded default on the " << backend->name() << " backend\n"
      << "  task: synthetic sentiment (positive when positive words outnumber negative ones), " << task.train.size()
      << " train / " << task.dev.size() << " dev sentences\n"
      << "  e.g. \"" << task.text(task.train[0]) << "\" -> " << config.id2label[task.train[0].label] << "\n"
      << "  model: BERT with " << config.num_hidden_layers << " layers, hidden " << config.hidden_size << ", "
      << config.num_attention_heads << " heads, " << model.params().count() << " parameters, random init\n"
      << "  training: " << o.steps << " steps of " << o.batch_size << " sentences, AdamW lr " << o.lr
      << " with linear warmup (10%) and decay\n";

  BatcherOptions train_options;
  train_options.batch_size = o.batch_size;
  train_options.seed = o.seed;
  Batcher train(to_examples(task.train), train_options);
  const LrSchedule schedule(ScheduleKind::linear, o.lr, resolve_warmup_steps(0, 0.1, o.steps), o.steps);
  std::vector<float> losses;
  for (int step = 0; step < o.steps; ++step) {
    model.set_batch(train.next());
    model.zero_grads();
    model.forward(Pass::train, o.seed * 1000003ull + uint64_t(step));
    model.backward();
    opt.compute_grad_norm();
    const float lr = float(schedule.lr_at(step));
    opt.step(lr);
    float loss = model.loss();
    losses.push_back(loss);
    if (o.log_every > 0 && (step % o.log_every == 0 || step + 1 == o.steps)) {
      char line[128];
      std::snprintf(line, sizeof line, "step %4d/%d  loss %.4f  lr %.2e  grad_norm %.3f\n", step + 1, o.steps, loss,
                    lr, opt.grad_norm());
      log << line << std::flush;
    }
  }

  // Dev accuracy, in batches, dropout off.
  BatcherOptions dev_options;
  dev_options.batch_size = o.batch_size;
  dev_options.shuffle = false;
  Batcher dev(to_examples(task.dev), dev_options);
  int correct = 0, positive = 0;
  for (int64_t i = 0; i < dev.num_batches(0); ++i) {
    PackedBatch b = dev.batch(0, i);
    model.set_batch(b, false);
    model.forward(Pass::eval, 0);
    std::vector<float> logits = model.logits();
    for (size_t k = 0; k < b.labels.size(); ++k) {
      correct += (logits[2 * k + 1] > logits[2 * k]) == (b.labels[k] == 1);
      positive += b.labels[k] == 1;
    }
  }
  const double majority = double(std::max<int>(positive, int(task.dev.size()) - positive)) / double(task.dev.size());

  DefaultRunResult r;
  auto mean = [](const float* p, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += p[i];
    return float(s / double(n ? n : 1));
  };
  size_t k = std::min<size_t>(10, losses.size());
  r.first_loss = mean(losses.data(), k);
  r.last_loss = mean(losses.data() + losses.size() - k, k);
  r.dev_examples = int(task.dev.size());
  r.dev_accuracy = double(correct) / double(task.dev.size());
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  char line[256];
  std::snprintf(line, sizeof line,
                "done in %.1f s: loss %.4f -> %.4f (mean of first/last %zu steps); dev accuracy %.1f%% on %d "
                "sentences (majority class: %.1f%%)\n",
                r.seconds, r.first_loss, r.last_loss, k, 100.0 * r.dev_accuracy, r.dev_examples, 100.0 * majority);
  log << line;
  return r;
}

}  // namespace engine
