#include "engine/train/default_run.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

#include "engine/model/bert.h"
#include "engine/train/optimizer.h"
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

Batch make_batch(const std::vector<SyntheticExample>& data, const std::vector<size_t>& order, size_t begin,
                 size_t count) {
  Batch b;
  for (size_t i = begin; i < begin + count && i < order.size(); ++i) {
    const SyntheticExample& e = data[order[i]];
    b.add_sequence(e.ids, {});
    b.labels.push_back(e.label);
  }
  return b;
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

  std::vector<size_t> order(task.train.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 shuffle_rng(o.seed + 1);
  size_t cursor = order.size();
  const int warmup = std::max(1, o.steps / 10);
  std::vector<float> losses;
  for (int step = 0; step < o.steps; ++step) {
    if (cursor + size_t(o.batch_size) > order.size()) {
      for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[shuffle_rng() % (i + 1)]);
      cursor = 0;
    }
    model.set_batch(make_batch(task.train, order, cursor, size_t(o.batch_size)));
    cursor += size_t(o.batch_size);
    model.zero_grads();
    model.forward(Pass::train, o.seed * 1000003ull + uint64_t(step));
    model.backward();
    opt.compute_grad_norm();
    float lr = step < warmup ? o.lr * float(step + 1) / float(warmup)
                             : o.lr * float(o.steps - step) / float(o.steps - warmup);
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
  std::vector<size_t> dev_order(task.dev.size());
  for (size_t i = 0; i < dev_order.size(); ++i) dev_order[i] = i;
  int correct = 0;
  for (size_t begin = 0; begin < dev_order.size(); begin += size_t(o.batch_size)) {
    Batch b = make_batch(task.dev, dev_order, begin, size_t(o.batch_size));
    model.set_batch(b);
    model.forward(Pass::eval, 0);
    std::vector<float> logits = model.logits();
    for (size_t i = 0; i < b.labels.size(); ++i) correct += (logits[2 * i + 1] > logits[2 * i]) == (b.labels[i] == 1);
  }

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
                "sentences (chance 50%%)\n",
                r.seconds, r.first_loss, r.last_loss, k, 100.0 * r.dev_accuracy, r.dev_examples);
  log << line;
  return r;
}

}  // namespace engine
