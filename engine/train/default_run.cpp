#include "engine/train/default_run.h"

#include "engine/dist/world.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numeric>
#include <utility>

#include "engine/train/synthetic.h"

namespace engine {

namespace {

const char* kTaskName = "the synthetic sentiment task (in memory)";

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
  return c;
}

TaskData to_task_data(const std::vector<SyntheticExample>& data) {
  TaskData out;
  out.path = kTaskName;
  out.task = Task::classify;
  out.has_labels = true;
  for (size_t i = 0; i < data.size(); ++i) {
    TokenizedExample e;
    e.ids = data[i].ids;
    e.type_ids.assign(e.ids.size(), 0);
    e.label = data[i].label;
    e.index = int64_t(i);
    out.examples.push_back(std::move(e));
  }
  return out;
}

// The accuracy of always answering the commoner label: what the dev accuracy must beat.
double majority_share(const std::vector<SyntheticExample>& data) {
  const auto positive = std::count_if(data.begin(), data.end(), [](const SyntheticExample& e) { return e.label == 1; });
  return double(std::max<int64_t>(positive, int64_t(data.size()) - positive)) / double(data.size());
}

// The mean of the first n and of the last n of the losses.
std::pair<double, double> first_and_last_means(const std::vector<double>& losses, size_t n) {
  n = std::min(n, losses.size());
  if (n == 0) return {NAN, NAN};
  const double first = std::accumulate(losses.begin(), losses.begin() + n, 0.0) / double(n);
  const double last = std::accumulate(losses.end() - n, losses.end(), 0.0) / double(n);
  return {first, last};
}

std::string make_temporary_directory() {
  std::string pattern = (std::filesystem::temp_directory_path() / "engine-finetune-XXXXXX").string();
  ENGINE_CHECK(mkdtemp(pattern.data()) != nullptr, "cannot create a temporary directory like ", pattern);
  return pattern;
}

}  // namespace

FinetuneOptions embedded_default_options() {
  FinetuneOptions o;
  o.backend = "cpu";
  o.output_dir.clear();
  o.max_steps = 300;
  o.batch_size = 32;
  o.learning_rate = 1e-3;
  o.warmup_ratio = 0.1;
  o.weight_decay = 0.01;
  o.logging_steps = 1;
  return o;
}

FinetuneResult run_embedded_default(FinetuneOptions o, std::ostream& log) {
  SyntheticTask task = SyntheticTask::make(o.seed, 4000, 500);
  o.model_in_memory = InMemoryModel{default_config(int64_t(task.vocab.size())), task.vocab};
  o.data_in_memory = InMemoryData{{"negative", "positive"}, to_task_data(task.train), to_task_data(task.dev)};
  // Under mpirun every rank uses rank 0's new directory (only rank 0 writes in it but the vocabulary).
  dist::World& world = dist::World::get();
  if (o.output_dir.empty())
    o.output_dir = world.broadcast_from_root(world.root() ? make_temporary_directory() : "", "the output directory");

  std::ostream quiet(nullptr);  // under mpirun only rank 0 speaks
  std::ostream& out = world.root() ? log : quiet;
  out << "engine finetune with no --model and no --train: the embedded default\n"
      << "  task: synthetic sentiment (positive when positive words outnumber negative ones)\n"
      << "  e.g. \"" << task.text(task.train[0]) << "\" -> " << o.data_in_memory->labels[size_t(task.train[0].label)]
      << "\n";
  FinetuneResult r = run_finetune(o, log);
  const auto [first, last] = first_and_last_means(r.logged_losses, 10);
  char line[256];
  std::snprintf(line, sizeof line,
                "loss %.4f -> %.4f (mean of the first and last 10 logged steps); dev accuracy %.1f%% on %zu "
                "sentences (majority class: %.1f%%)\n",
                first, last, 100.0 * r.dev_metrics.at("accuracy"), task.dev.size(), 100.0 * majority_share(task.dev));
  out << line << "metrics.jsonl, run_config.json and the model (try `engine predict --model " << o.output_dir
      << "/model`) are in " << o.output_dir << "\n";
  return r;
}

}  // namespace engine
