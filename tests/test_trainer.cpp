// The trainer and the eval/predict commands on the CPU: each task learns a small task (loss falls,
// metrics far above chance), the metrics log and checkpoints are complete, a resumed run equals an
// uninterrupted one bitwise, predict prints its schema, and every kind of bad input is a clear
// error with a non-zero exit. Models are tiny random BERTs saved as HF directories by the test;
// real SST-2 rows are used where ../shared/data is present.
#include <gtest/gtest.h>

#include "cli_helpers.h"
#include "test_seed.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <sys/wait.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>

#include "engine/io/safetensors.h"
#include "engine/model/checkpoint.h"
#include "engine/train/default_run.h"
#include "engine/train/synthetic.h"
#include "engine/train/trainer.h"

namespace engine {
namespace {

namespace fs = std::filesystem;

std::string engine_binary() { return std::string(ENGINE_BINARY_DIR) + "/bin/engine"; }

struct CommandResult {
  int exit_code;
  std::string output;
};

// Runs the engine binary with stdout and stderr captured (stdin from `input` when given).
CommandResult run_engine(const std::string& args, const std::string& input = "") {
  std::string cmd = engine_binary() + " " + args + " 2>&1";
  std::string in_file;
  if (!input.empty()) {
    in_file = (fs::temp_directory_path() / ("engine_stdin_" + unique_suffix())).string();
    std::ofstream(in_file) << input;
    cmd += " < " + in_file;
  }
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  int status = pclose(pipe);
  if (!in_file.empty()) fs::remove(in_file);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

class Trainer : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = pick_seed() % 100000;
    // Every failure of a test names the seed that replays it.
    seed_trace_ = std::make_unique<::testing::ScopedTrace>(
        __FILE__, __LINE__, "seed " + std::to_string(seed_) + " (rerun with ENGINE_TEST_SEED=" + std::to_string(seed_) + ")");
    dir_ = fs::temp_directory_path() / ("engine_test_trainer_" + unique_suffix());
    fs::create_directories(dir_);
    task_ = SyntheticTask::make(seed_, 800, 200, 12);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A tiny random BERT over the synthetic vocabulary, saved as a HF directory (default label names).
  std::string make_model(int64_t labels, const std::string& name = "base", int64_t extra_vocab = 0) {
    test::save_tiny_model(task_, dir_ / name, labels, seed_, /*named_labels=*/false, extra_vocab);
    return (dir_ / name).string();
  }

  int positives(const SyntheticExample& e) const {
    int n = 0;
    for (int32_t id : e.ids) n += id >= 5 && id < 13;
    return n;
  }
  int negatives(const SyntheticExample& e) const {
    int n = 0;
    for (int32_t id : e.ids) n += id >= 13 && id < 21;
    return n;
  }

  // kind: "classify" (label 0/1 as text "neg"/"pos"), "regress" (positives - negatives).
  std::string write_tsv(const std::vector<SyntheticExample>& rows, const std::string& name, const std::string& kind) {
    fs::path p = dir_ / name;
    std::ofstream out(p);
    out << "sentence\tlabel\n";
    for (const SyntheticExample& e : rows) {
      out << task_.text(e) << "\t";
      if (kind == "regress")
        out << positives(e) - negatives(e) << "\n";
      else
        out << (e.label ? "pos" : "neg") << "\n";
    }
    return p.string();
  }

  // CoNLL: positive words B-POS, negative words B-NEG, the rest O.
  std::string write_conll(const std::vector<SyntheticExample>& rows, const std::string& name) {
    fs::path p = dir_ / name;
    std::ofstream out(p);
    out << "-DOCSTART- -X- -X- O\n\n";
    for (const SyntheticExample& e : rows) {
      for (size_t i = 1; i + 1 < e.ids.size(); ++i) {
        int32_t id = e.ids[i];
        const char* tag = id >= 5 && id < 13 ? "B-POS" : id >= 13 && id < 21 ? "B-NEG" : "O";
        out << task_.vocab[size_t(id)] << " X X " << tag << "\n";
      }
      out << "\n";
    }
    return p.string();
  }

  FinetuneOptions options(const std::string& model, const std::string& train, const std::string& dev,
                          const std::string& out) {
    FinetuneOptions o;
    o.model_dir = model;
    o.train_file = train;
    o.dev_file = dev;
    o.output_dir = (dir_ / out).string();
    o.backend = "cpu";
    o.batch_size = 16;
    o.learning_rate = 2e-3;
    o.warmup_ratio = 0.1;
    o.num_train_epochs = 3;
    o.logging_steps = 10;
    o.seed = seed_;
    o.data.encode.max_length = 64;
    return o;
  }

  uint64_t seed_ = 0;
  std::unique_ptr<::testing::ScopedTrace> seed_trace_;
  fs::path dir_;
  SyntheticTask task_;
};

// The training loss falls: the mean of the last fifth of the logged losses (each one the mean
// over its logging window) is below `ratio` times the mean of the first fifth. Means over many
// steps, so one noisy batch cannot decide; each test's ratio leaves a margin over the worst of many
// seeds (tools/seed_sweep, bench/results/seed-sweep-*.txt), and a model that does not learn (learning
// rate 0) fails. NaN fails. The measured ratio is recorded as the test property loss_ratio.
void expect_loss_falls(const fs::path& metrics, double ratio) {
  std::vector<double> losses;
  for (const auto& e : read_jsonl(metrics)) {
    if (e["event"] != "train") continue;
    for (const char* key : {"step", "epoch", "loss", "lr", "grad_norm", "samples_per_second", "tokens_per_second"})
      EXPECT_TRUE(e.contains(key)) << "train event lacks " << key << ": " << e.dump();
    losses.push_back(e["loss"].is_number() ? e["loss"].get<double>() : NAN);
  }
  ASSERT_GE(losses.size(), 5u) << "too few logged losses to compare";
  const size_t k = losses.size() / 5;
  auto mean = [](auto begin, auto end) { return std::accumulate(begin, end, 0.0) / double(end - begin); };
  const double first = mean(losses.begin(), losses.begin() + k), last = mean(losses.end() - k, losses.end());
  ::testing::Test::RecordProperty("loss_ratio", std::to_string(last / first));
  EXPECT_LT(last, ratio * first) << "mean loss of the first " << k << " logged windows " << first << ", of the last "
                                 << k << " " << last << " (want below " << ratio << "x)";
}

TEST_F(Trainer, ClassifyLearnsAndWritesLogsAndCheckpoints) {
  std::string model = make_model(2);
  FinetuneOptions o = options(model, write_tsv(task_.train, "train.tsv", "classify"),
                              write_tsv(task_.dev, "dev.tsv", "classify"), "cls");
  std::ostringstream log;
  FinetuneResult r = run_finetune(o, log);
  SCOPED_TRACE(log.str());
  RecordProperty("dev_accuracy", std::to_string(r.dev_metrics.at("accuracy")));
  EXPECT_GT(r.dev_metrics.at("accuracy"), 0.8);
  EXPECT_GT(r.best_metrics.at("accuracy"), 0.8);
  expect_loss_falls(fs::path(o.output_dir) / "metrics.jsonl", 0.5);
  int evals = 0;
  for (const auto& e : read_jsonl(fs::path(o.output_dir) / "metrics.jsonl"))
    if (e["event"] == "eval") {
      ++evals;
      for (const char* key : {"eval_accuracy", "eval_f1", "eval_mcc", "eval_loss", "step"}) EXPECT_TRUE(e.contains(key));
    }
  EXPECT_EQ(evals, 3) << "one evaluation per epoch";
  for (const char* sub : {"model", "best"}) {
    fs::path d = fs::path(o.output_dir) / sub;
    for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"})
      EXPECT_TRUE(fs::exists(d / f)) << d / f;
    BertConfig c = read_model_config(d.string());
    EXPECT_EQ(c.id2label.at(0), "neg");
    EXPECT_EQ(c.id2label.at(1), "pos");
  }
  EXPECT_TRUE(fs::exists(fs::path(o.output_dir) / "run_config.json"));
  int checkpoints = 0;
  for (const auto& entry : fs::directory_iterator(o.output_dir))
    checkpoints += entry.path().filename().string().rfind("checkpoint-", 0) == 0;
  EXPECT_EQ(checkpoints, 2) << "save_total_limit 2";

  // eval reproduces the trainer's final dev accuracy; predict prints one JSON object per input.
  CommandResult ev = run_engine("eval --model " + (fs::path(o.output_dir) / "model").string() + " --data " +
                                (dir_ / "dev.tsv").string() + " --backend cpu");
  ASSERT_EQ(ev.exit_code, 0) << ev.output;
  nlohmann::json metrics = nlohmann::json::parse(ev.output);
  EXPECT_NEAR(metrics["accuracy"].get<double>(), r.dev_metrics.at("accuracy"), 1e-9);
  std::string input = task_.text(task_.dev[0]) + "\n" + task_.text(task_.dev[1]) + "\nvery good film\n";
  CommandResult pr = run_engine("predict --model " + (fs::path(o.output_dir) / "model").string() + " --backend cpu",
                                input);
  ASSERT_EQ(pr.exit_code, 0) << pr.output;
  std::istringstream lines(pr.output);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    nlohmann::json j = nlohmann::json::parse(line);
    ASSERT_TRUE(j["label"] == "neg" || j["label"] == "pos") << line;
    ASSERT_EQ(j["probabilities"].size(), 2u);
    ASSERT_EQ(j["logits"].size(), 2u);
    double sum = j["probabilities"][0].get<double>() + j["probabilities"][1].get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-9);
    bool first_larger = j["logits"][0].get<double>() > j["logits"][1].get<double>();
    EXPECT_EQ(j["label"], first_larger ? "neg" : "pos");
  }
  EXPECT_EQ(n, 3);
}

TEST_F(Trainer, RegressionLearnsPearson) {
  std::string model = make_model(1);
  FinetuneOptions o = options(model, write_tsv(task_.train, "train.tsv", "regress"),
                              write_tsv(task_.dev, "dev.tsv", "regress"), "reg");
  o.task = "regress";
  std::ostringstream log;
  FinetuneResult r = run_finetune(o, log);
  SCOPED_TRACE(log.str());
  RecordProperty("dev_pearson", std::to_string(r.dev_metrics.at("pearson")));
  RecordProperty("dev_spearman", std::to_string(r.dev_metrics.at("spearman")));
  EXPECT_GT(r.dev_metrics.at("pearson"), 0.8);
  EXPECT_GT(r.dev_metrics.at("spearman"), 0.7);
  expect_loss_falls(fs::path(o.output_dir) / "metrics.jsonl", 0.5);
  CommandResult pr = run_engine("predict --model " + (fs::path(o.output_dir) / "model").string() + " --backend cpu",
                                "good good great\n");
  ASSERT_EQ(pr.exit_code, 0) << pr.output;
  EXPECT_TRUE(nlohmann::json::parse(pr.output).contains("value")) << pr.output;
}

TEST_F(Trainer, TokenClassificationLearnsEntities) {
  std::string model = make_model(3);
  FinetuneOptions o = options(model, write_conll(task_.train, "train.conll"), write_conll(task_.dev, "dev.conll"), "ner");
  o.task = "tokens";
  o.reinit_head = true;
  std::ostringstream log;
  FinetuneResult r = run_finetune(o, log);
  SCOPED_TRACE(log.str());
  RecordProperty("dev_f1", std::to_string(r.dev_metrics.at("f1")));
  EXPECT_GT(r.dev_metrics.at("f1"), 0.8);
  expect_loss_falls(fs::path(o.output_dir) / "metrics.jsonl", 0.5);
  CommandResult pr = run_engine("predict --model " + (fs::path(o.output_dir) / "model").string() + " --backend cpu",
                                "the good movie\n");
  ASSERT_EQ(pr.exit_code, 0) << pr.output;
  nlohmann::json j = nlohmann::json::parse(pr.output);
  ASSERT_EQ(j["tags"].size(), 3u) << pr.output;
}

// A run stopped at a checkpoint and resumed ends with the same parameters, bitwise, as one that ran
// straight through (dropout on, so the resumed run must also draw the same masks).
TEST_F(Trainer, ResumeEqualsUninterrupted) {
  std::string model = make_model(2);
  std::string train = write_tsv(task_.train, "train.tsv", "classify");
  FinetuneOptions a = options(model, train, "", "straight");
  a.max_steps = 12;
  a.save_steps = 5;
  a.gradient_accumulation_steps = 2;
  a.batch_size = 8;
  std::ostringstream log;
  run_finetune(a, log);
  FinetuneOptions b = a;
  b.output_dir = (dir_ / "resumed").string();
  b.resume = (fs::path(a.output_dir) / "checkpoint-10").string();
  run_finetune(b, log);
  SCOPED_TRACE(log.str());
  io::SafetensorsFile fa = io::SafetensorsFile::open((fs::path(a.output_dir) / "model/model.safetensors").string());
  io::SafetensorsFile fb = io::SafetensorsFile::open((fs::path(b.output_dir) / "model/model.safetensors").string());
  ASSERT_EQ(fa.tensors().size(), fb.tensors().size());
  for (const auto& t : fa.tensors()) {
    const auto& u = fb.get(t.name);
    ASSERT_EQ(t.nbytes, u.nbytes);
    EXPECT_EQ(0, std::memcmp(t.data, u.data, t.nbytes)) << t.name << " differs after resume";
  }
  // And the resumed run really started late: its log has no step before 11.
  for (const auto& e : read_jsonl(fs::path(b.output_dir) / "metrics.jsonl"))
    if (e["event"] == "train") EXPECT_GT(e["step"].get<int64_t>(), 10);

  // Resuming with a setting that changes the batches is refused.
  FinetuneOptions c = b;
  c.output_dir = (dir_ / "refused").string();
  c.batch_size = 4;
  EXPECT_THROW(run_finetune(c, log), Error);
}

TEST_F(Trainer, DivergenceStopsOrIsSkipped) {
  std::string model = make_model(2);
  FinetuneOptions o = options(model, write_tsv(task_.train, "train.tsv", "classify"), "", "diverge");
  o.learning_rate = 1e30;
  o.warmup_ratio = 0;
  o.max_steps = 4;
  o.max_grad_norm = 0;
  std::ostringstream log;
  try {
    run_finetune(o, log);
    FAIL() << "a divergent run went on";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("divergent step"), std::string::npos) << e.what();
  }
  o.on_divergence = "skip";
  o.output_dir = (dir_ / "skip").string();
  FinetuneResult r = run_finetune(o, log);
  EXPECT_GT(r.skipped_steps, 0);
  int events = 0;
  for (const auto& e : read_jsonl(fs::path(o.output_dir) / "metrics.jsonl")) events += e["event"] == "divergence";
  EXPECT_EQ(events, r.skipped_steps);
}

void expect_cli_error(const std::string& args, const std::string& needle) {
  CommandResult r = run_engine(args);
  EXPECT_NE(r.exit_code, 0) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in:\n" << r.output;
}

TEST_F(Trainer, BadInputIsAClearErrorWithNonZeroExit) {
  std::string model = make_model(2);
  std::string train = write_tsv(task_.train, "train.tsv", "classify");
  const std::string base = "finetune --backend cpu --max-steps 1 --model " + model + " --output-dir " +
                           (dir_ / "bad").string() + " --train ";
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(dir_ / name, std::ios::binary) << content;
    return (dir_ / name).string();
  };
  std::string no_label = write("no_label.tsv", "sentence\tstars\ngood\t1\n");
  expect_cli_error(base + no_label, "label");
  std::string empty_text = write("empty_text.tsv", "sentence\tlabel\ngood film\tpos\n\tneg\n");
  expect_cli_error(base + empty_text, "empty_text.tsv:3");
  std::string not_utf8 = write("latin1.tsv", "sentence\tlabel\ngood\tpos\ncaf\xe9\tneg\n");
  expect_cli_error(base + not_utf8, "latin1.tsv:3");
  std::string unknown = write("unknown.tsv", "sentence\tlabel\ngood\tpos\nbad\tmeh\n");
  expect_cli_error(base + train + " --dev " + unknown, "unknown.tsv:3: unknown label 'meh'");
  expect_cli_error(base + (dir_ / "missing.tsv").string(), "missing.tsv");

  // A three-label head and two-label data: a clear error, or a fresh head with --reinit-head.
  std::string three = make_model(3, "three");
  expect_cli_error("finetune --backend cpu --max-steps 1 --model " + three + " --output-dir " +
                       (dir_ / "bad3").string() + " --train " + train,
                   "--reinit-head");
  CommandResult ok = run_engine("finetune --backend cpu --max-steps 1 --reinit-head --model " + three +
                                " --output-dir " + (dir_ / "ok3").string() + " --train " + train);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;

  // A vocabulary larger than the embeddings.
  std::string big_vocab = make_model(2, "bigvocab", 5);
  expect_cli_error("finetune --backend cpu --max-steps 1 --model " + big_vocab + " --output-dir " +
                       (dir_ / "badv").string() + " --train " + train,
                   "does not belong to this model");

  // eval of a model without a trained head, and of a missing model directory.
  fs::path bare = dir_ / "bare";
  fs::create_directories(bare);
  fs::copy_file(fs::path(model) / "config.json", bare / "config.json");
  fs::copy_file(fs::path(model) / "vocab.txt", bare / "vocab.txt");
  {
    io::SafetensorsFile f = io::SafetensorsFile::open(model + "/model.safetensors");
    std::vector<std::vector<float>> values;
    std::vector<io::SafetensorsWriteEntry> entries;
    for (const auto& t : f.tensors()) values.push_back(f.to_f32(t.name));
    for (size_t i = 0; i < f.tensors().size(); ++i)
      if (f.tensors()[i].name.rfind("classifier.", 0) != 0)
        entries.push_back({f.tensors()[i].name, DType::f32, f.tensors()[i].shape, values[i].data()});
    io::write_safetensors((bare / "model.safetensors").string(), entries);
  }
  expect_cli_error("eval --backend cpu --model " + bare.string() + " --data " + train, "no trained head");
  expect_cli_error("eval --backend cpu --model " + (dir_ / "nope").string() + " --data " + train, "does not exist");
  expect_cli_error("finetune --backend cpu --on-divergence maybe --model " + model + " --train " + train,
                   "--on-divergence");
}

TEST_F(Trainer, InfoDescribesAModelDirectory) {
  std::string model = make_model(3);
  CommandResult r = run_engine("info " + model);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  BertConfig c = read_model_config(model);
  EXPECT_NE(r.output.find("parameters   " + std::to_string(c.parameter_count(true, 3))), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("with a classifier head"), std::string::npos) << r.output;
  expect_cli_error("info " + (dir_ / "missing").string(), "does not exist");
  expect_cli_error("info bert-huge", "unknown named config");
  CommandResult help = run_engine("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* cmd : {"info", "finetune", "eval", "predict", "tokenize", "bench"})
    EXPECT_NE(help.output.find(cmd), std::string::npos) << cmd << " missing from --help";
}

// Real rows from ../shared/data with the real uncased vocabulary, one test per task: a tiny random
// model's training loss falls. `lines` is how many lines of the file to train on (a CoNLL cut
// ends at a blank line); in 10 epochs at learning rate `lr` the loss must fall below `ratio` of its
// start.
void real_data_loss_falls(const std::string& task, const std::string& file, int lines, double lr, double ratio) {
  fs::path data = fs::path(ENGINE_SOURCE_DIR) / "../shared/data";
  if (!fs::exists(data / file) || !fs::exists(data / "vocab/bert-base-uncased/vocab.txt"))
    GTEST_SKIP() << "real data not found under " << data;
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " (rerun with ENGINE_TEST_SEED=" + std::to_string(seed) + ")");
  fs::path dir = fs::temp_directory_path() / ("engine_test_real_" + unique_suffix());
  fs::create_directories(dir / "model");
  const std::string train = (dir / fs::path(file).filename()).string();
  {
    std::ifstream in(data / file);
    std::ofstream out(train);
    std::string line;
    for (int i = 0; std::getline(in, line); ++i) {
      if (i >= lines && (task != "tokens" || line.empty())) break;
      out << line << "\n";
    }
  }
  BertConfig c;
  c.vocab_size = 30522;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 128;
  c.num_labels = task == "regress" ? 1 : 2;
  auto backend = make_backend("cpu-ref");
  BertModel m(*backend, c, ModelOptions{task == "tokens" ? Head::token_classification : Head::sequence_classification});
  m.init_weights(seed);
  SaveOptions so;
  so.vocab_path = (data / "vocab/bert-base-uncased/vocab.txt").string();
  save_pretrained(m, (dir / "model").string(), so);
  FinetuneOptions o;
  o.task = task;
  o.model_dir = (dir / "model").string();
  o.train_file = train;
  o.output_dir = (dir / "out").string();
  o.backend = "cpu";
  o.reinit_head = true;
  o.seed = seed % 100000;
  o.learning_rate = lr;
  o.num_train_epochs = 10;
  o.batch_size = 8;
  o.logging_steps = 10;
  o.data.encode.max_length = 128;
  std::ostringstream log;
  run_finetune(o, log);
  SCOPED_TRACE(log.str());
  expect_loss_falls(dir / "out/metrics.jsonl", ratio);
  fs::remove_all(dir);
}

TEST(TrainerRealData, Sst2ClassifyLossFalls) { real_data_loss_falls("classify", "sst2/train.tsv", 401, 1e-3, 0.5); }
// 200 long pairs sit on a plateau near the label prior's loss before the model starts to tell them
// apart; at 1e-3 the linear decay made the escape late for some seeds (once too late: 0.63 -> 0.55
// in CI), at 3e-3 it comes within the first half of the run.
TEST(TrainerRealData, MrpcPairsLossFalls) { real_data_loss_falls("classify", "mrpc/train.tsv", 201, 3e-3, 0.5); }
TEST(TrainerRealData, StsbRegressionLossFalls) { real_data_loss_falls("regress", "stsb/train.tsv", 201, 1e-3, 0.5); }
TEST(TrainerRealData, Conll2003TokensLossFalls) {
  real_data_loss_falls("tokens", "conll2003/train.txt", 2000, 1e-3, 0.7);
}

// The embedded default (`engine finetune` with no arguments) is a trainer run: its loss falls, its
// dev accuracy is far above chance (about half the sentences are positive), it logs every step,
// and its output directory holds a model that `engine predict` loads with its vocabulary.
TEST(EmbeddedDefault, LearnsTheSyntheticTaskThroughTheTrainer) {
  FinetuneOptions o = embedded_default_options();
  o.max_steps = 150;
  o.seed = pick_seed() % 100000;
  SCOPED_TRACE("seed " + std::to_string(o.seed) + " (rerun with ENGINE_TEST_SEED=" + std::to_string(o.seed) + ")");
  fs::path dir = fs::temp_directory_path() / ("engine_test_default_" + unique_suffix());
  o.output_dir = dir.string();
  std::ostringstream log;
  FinetuneResult r = run_embedded_default(o, log);
  SCOPED_TRACE(log.str());
  EXPECT_EQ(r.steps, 150);
  expect_loss_falls(dir / "metrics.jsonl", 0.5);
  RecordProperty("dev_accuracy", std::to_string(r.dev_metrics.at("accuracy")));
  EXPECT_GT(r.dev_metrics.at("accuracy"), 0.8);
  EXPECT_NE(log.str().find("step 150/150"), std::string::npos);
  EXPECT_NE(log.str().find("dev accuracy"), std::string::npos);
  CommandResult pr = run_engine("predict --backend cpu --model " + (dir / "model").string(), "good great film\n");
  ASSERT_EQ(pr.exit_code, 0) << pr.output;
  const std::string label = nlohmann::json::parse(pr.output)["label"];
  EXPECT_TRUE(label == "negative" || label == "positive") << pr.output;
  fs::remove_all(dir);
}

// From the command line, with no model and no data, the default run honours the flags it is given.
TEST(EmbeddedDefault, RunsFromTheCommandLine) {
  fs::path dir = fs::temp_directory_path() / ("engine_test_default_cli_" + unique_suffix());
  CommandResult r = run_engine("finetune --max-steps 3 --output-dir " + dir.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* line : {"step 1/3", "step 3/3", "eval  step 3", "dev accuracy", "done: 3 steps in"})
    EXPECT_NE(r.output.find(line), std::string::npos) << "no '" << line << "' in:\n" << r.output;
  int train_events = 0;
  for (const auto& e : read_jsonl(dir / "metrics.jsonl")) train_events += e["event"] == "train";
  EXPECT_EQ(train_events, 3) << "the default logs every step";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace engine

namespace engine {
namespace {

// Standard input may mix single sentences and pairs: each row is encoded as what it is.
TEST(TaskData, MixedSinglesAndPairsKeepTheirOwnShape) {
  tokenizer::BertTokenizer tok(tokenizer::Vocab::from_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nfilm\nbad\n"), true);
  DataOptions options;
  options.encode.max_length = 32;
  TaskData d = task_data_from_lines({"good film", "good\tbad film", "bad"}, Task::classify, tok, options);
  ASSERT_EQ(d.examples.size(), 3u);
  EXPECT_EQ(d.examples[0].ids, (std::vector<int32_t>{2, 5, 6, 3}));
  EXPECT_EQ(d.examples[0].type_ids, (std::vector<int32_t>{0, 0, 0, 0}));
  EXPECT_EQ(d.examples[1].ids, (std::vector<int32_t>{2, 5, 3, 7, 6, 3}));
  EXPECT_EQ(d.examples[1].type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(d.examples[2].ids, (std::vector<int32_t>{2, 7, 3}));
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(d.examples[i].index, int64_t(i));
}

}  // namespace
}  // namespace engine
