// LoRA through the trainer and the command line, on tiny random BERTs over the synthetic task
// (engine/train/synthetic.h): a LoRA run learns while its base stays bitwise what it was, saves
// peft adapter directories, and `engine eval|predict --adapter` and `engine merge` reproduce its
// results; the optimizer state and step time of LoRA and full fine-tuning are reported and the
// state is what the trainable parameters need; a resumed LoRA run equals an uninterrupted one
// bitwise; bad adapter settings and directories are clear errors with a non-zero exit.
#include <gtest/gtest.h>

#include "cli_helpers.h"
#include "test_seed.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/io/safetensors.h"
#include "engine/model/adapter_files.h"
#include "engine/train/trainer.h"

namespace engine {
namespace {

namespace fs = std::filesystem;
using test::CommandResult;
using test::run_engine;

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

class LoraTrainer : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = pick_seed() % 100000;
    trace_ = std::make_unique<::testing::ScopedTrace>(__FILE__, __LINE__,
                                                      "seed " + std::to_string(seed_) + " (ENGINE_TEST_SEED)");
    dir_ = fs::temp_directory_path() / ("engine_test_lora_" + unique_suffix());
    task_ = SyntheticTask::make(seed_, 400, 100, 12);
    test::save_tiny_model(task_, dir_ / "base", 2, seed_);
    test::write_labelled_tsv(task_, task_.train, dir_ / "train.tsv");
    test::write_labelled_tsv(task_, task_.dev, dir_ / "dev.tsv");
  }
  void TearDown() override { fs::remove_all(dir_); }

  FinetuneOptions options(const std::string& out, bool lora) {
    FinetuneOptions o;
    o.model_dir = (dir_ / "base").string();
    o.train_file = (dir_ / "train.tsv").string();
    o.dev_file = (dir_ / "dev.tsv").string();
    o.output_dir = (dir_ / out).string();
    o.backend = "cpu";
    o.batch_size = 16;
    o.learning_rate = lora ? 3e-3 : 2e-3;
    o.warmup_ratio = 0.1;
    o.num_train_epochs = 4;
    o.logging_steps = 5;
    o.seed = seed_;
    o.data.encode.max_length = 64;
    if (lora) {
      o.lora.r = 16;  // the tiny random base knows nothing: the adapters must carry the task
      o.lora.alpha = 32;
      o.lora.target_modules = {"query", "key", "value", "attention.output.dense", "intermediate.dense",
                               "output.dense"};
    }
    return o;
  }
  std::string path(const std::string& rel) const { return (dir_ / rel).string(); }

  uint64_t seed_ = 0;
  std::unique_ptr<::testing::ScopedTrace> trace_;
  fs::path dir_;
  SyntheticTask task_;
};

TEST_F(LoraTrainer, LearnsOnAFrozenBaseAndItsAdapterWorksInEvalPredictAndMerge) {
  const std::string base_weights = test::read_text(dir_ / "base/model.safetensors");
  FinetuneOptions o = options("run", true);
  std::ostringstream log;
  FinetuneResult r = run_finetune(o, log);
  SCOPED_TRACE(log.str());
  EXPECT_EQ(test::read_text(dir_ / "base/model.safetensors"), base_weights);  // the base is never written
  // The loss falls: the mean of the last three logged windows against the first three.
  const std::vector<double>& l = r.logged_losses;
  ASSERT_GE(l.size(), 6u);
  const double first = (l[0] + l[1] + l[2]) / 3, last = (l[l.size() - 1] + l[l.size() - 2] + l[l.size() - 3]) / 3;
  RecordProperty("loss_ratio", std::to_string(last / first));
  EXPECT_LT(last, 0.9 * first) << "first " << first << ", last " << last;
  const double accuracy = r.dev_metrics.at("accuracy");
  for (const char* sub : {"model", "best"}) {
    for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "config.json", "vocab.txt"})
      EXPECT_TRUE(fs::exists(dir_ / "run" / sub / f)) << sub << "/" << f;
    EXPECT_FALSE(fs::exists(dir_ / "run" / sub / "model.safetensors")) << sub;
  }
  const std::string base = path("base"), adapter = path("run/model");

  // eval --adapter scores the dev set exactly as the trainer did at its last step.
  CommandResult ev = run_engine("eval --model " + base + " --adapter " + adapter + " --data " + path("dev.tsv") +
                                " --backend cpu --quiet");
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  EXPECT_NEAR(nlohmann::json::parse(ev.out)["accuracy"].get<double>(), accuracy, 1e-12);

  // merge writes a plain model whose logits are the adapted model's.
  CommandResult mg = run_engine("merge --model " + base + " --adapter " + adapter + " --output-dir " + path("merged"));
  ASSERT_EQ(mg.exit_code, 0) << mg.err;
  EXPECT_TRUE(fs::exists(dir_ / "merged/model.safetensors"));
  std::ofstream(dir_ / "texts.txt") << task_.text(task_.dev[0]) << "\n" << task_.text(task_.dev[1]) << "\n";
  CommandResult pa = run_engine("predict --model " + base + " --adapter " + adapter + " --data " + path("texts.txt") +
                                " --format tsv --no-header --backend cpu --quiet");
  CommandResult pm = run_engine("predict --model " + path("merged") + " --data " + path("texts.txt") +
                                " --format tsv --no-header --backend cpu --quiet");
  ASSERT_EQ(pa.exit_code, 0) << pa.err;
  ASSERT_EQ(pm.exit_code, 0) << pm.err;
  std::istringstream la(pa.out), lm(pm.out);
  int rows = 0;
  for (std::string a, m; std::getline(la, a) && std::getline(lm, m); ++rows) {
    const auto ja = nlohmann::json::parse(a)["logits"], jm = nlohmann::json::parse(m)["logits"];
    ASSERT_EQ(ja.size(), 2u);
    for (size_t k = 0; k < 2; ++k) EXPECT_NEAR(jm[k].get<double>(), ja[k].get<double>(), 1e-5 * (1 + std::fabs(ja[k].get<double>())));
  }
  EXPECT_EQ(rows, 2);
}

// The memory claim as numbers: LoRA's optimizer state is what its trainable parameters need (a
// gradient and two moments each, f32), a small fraction of full fine-tuning's; both runs report
// it and their mean step time in the log, the end event and the result.
TEST_F(LoraTrainer, OptimizerStateAndStepTimeLoraVersusFull) {
  FinetuneResult runs[2];
  for (bool lora : {false, true}) {
    FinetuneOptions o = options(lora ? "lora" : "full", lora);
    o.lora.r = lora ? 4 : 0;
    o.lora.target_modules = {"query", "value"};
    o.max_steps = 6;
    o.dev_file.clear();
    std::ostringstream log;
    runs[lora] = run_finetune(o, log);
    const FinetuneResult& r = runs[lora];
    EXPECT_NE(log.str().find("optimizer state"), std::string::npos) << log.str();
    EXPECT_NE(log.str().find("mean step"), std::string::npos) << log.str();
    EXPECT_TRUE(std::isfinite(r.mean_step_seconds) && r.mean_step_seconds > 0) << r.mean_step_seconds;
    // 3 f32 buffers over the trainable parameters, each parameter padded to 64 elements at most.
    EXPECT_GE(r.optimizer_state_bytes, 12 * r.trainable_parameters);
    const nlohmann::json end = read_jsonl(fs::path(o.output_dir) / "metrics.jsonl").back();
    EXPECT_EQ(end["event"], "end");
    EXPECT_EQ(end["optimizer_state_bytes"].get<int64_t>(), r.optimizer_state_bytes);
    EXPECT_DOUBLE_EQ(end["mean_step_seconds"].get<double>(), r.mean_step_seconds);
    std::printf("[ %s ] optimizer state %lld bytes for %lld trainable parameters, mean step %.4f s\n",
                lora ? "lora" : "full", (long long)r.optimizer_state_bytes, (long long)r.trainable_parameters,
                r.mean_step_seconds);
  }
  // r 4 on query and value of the tiny model (hidden 32, 2 layers): 2 layers x 2 adapters x
  // (A [4, 32] + B [32, 4]) and the classifier's 2 x 32 + 2, against 21k parameters in all.
  EXPECT_EQ(runs[1].trainable_parameters, 2 * 2 * (4 * 32 + 32 * 4) + 2 * 32 + 2);
  EXPECT_LT(runs[1].optimizer_state_bytes, runs[0].optimizer_state_bytes / 10);
}

TEST_F(LoraTrainer, ResumeEqualsUninterrupted) {
  FinetuneOptions a = options("straight", true);
  a.num_train_epochs = 0;
  a.max_steps = 10;
  a.save_steps = 4;
  a.gradient_accumulation_steps = 2;
  a.batch_size = 8;
  a.lora.dropout = 0.1f;
  a.hidden_dropout = 0.1;
  std::ostringstream log;
  run_finetune(a, log);
  FinetuneOptions b = a;
  b.output_dir = path("resumed");
  b.resume = path("straight/checkpoint-8");
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors"})
    ASSERT_TRUE(fs::exists(fs::path(b.resume) / f)) << f;
  run_finetune(b, log);
  SCOPED_TRACE(log.str());
  io::SafetensorsFile fa = io::SafetensorsFile::open(path("straight/model/adapter_model.safetensors"));
  io::SafetensorsFile fb = io::SafetensorsFile::open(path("resumed/model/adapter_model.safetensors"));
  ASSERT_EQ(fa.tensors().size(), fb.tensors().size());
  for (const auto& t : fa.tensors()) {
    const auto& u = fb.get(t.name);
    ASSERT_EQ(t.nbytes, u.nbytes);
    EXPECT_EQ(0, std::memcmp(t.data, u.data, t.nbytes)) << t.name << " differs after resume";
  }
  for (const auto& e : read_jsonl(fs::path(b.output_dir) / "metrics.jsonl"))
    if (e["event"] == "train") EXPECT_GT(e["step"].get<int64_t>(), 8);
  // Another rank is another run: refused.
  FinetuneOptions c = b;
  c.output_dir = path("refused");
  c.lora.r = 2;
  EXPECT_THROW(run_finetune(c, log), Error);
}

TEST_F(LoraTrainer, BadSettingsAndDirectoriesAreClearErrorsWithNonZeroExit) {
  const std::string common = "finetune --model " + path("base") + " --train " + path("train.tsv") +
                             " --backend cpu --max-steps 1 --output-dir " + path("out") + " --peft lora";
  auto expect_error = [](const CommandResult& r, const std::string& text) {
    EXPECT_NE(r.exit_code, 0) << r.out;
    EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
  };
  expect_error(run_engine(common + " --lora-target-modules query,vale"), "unknown module 'vale'");
  expect_error(run_engine(common + " --lora-r 0"), "--lora-r must be at least 1 (got 0)");
  expect_error(run_engine(common + " --lora-bias all"), "--lora-bias: only none is supported");
  expect_error(run_engine(common.substr(0, common.size() - 11) + " --peft prefix"), "--peft must be none or lora");

  // A real adapter, then the ways to misuse it.
  FinetuneOptions o = options("run", true);
  o.num_train_epochs = 0;
  o.max_steps = 2;
  o.dev_file.clear();
  std::ostringstream log;
  run_finetune(o, log);
  const std::string eval = "eval --data " + path("dev.tsv") + " --backend cpu --quiet";
  expect_error(run_engine(eval + " --model " + path("run/model")), "is a LoRA adapter directory");
  expect_error(run_engine(eval + " --model " + path("base") + " --adapter " + path("base")), "it holds a whole model");
  fs::create_directories(dir_ / "empty");
  expect_error(run_engine(eval + " --model " + path("base") + " --adapter " + path("empty")),
               "has no adapter_config.json");
  // A base of the same shape but other weights: the recorded fingerprint refuses it.
  test::save_tiny_model(task_, dir_ / "other", 2, seed_ + 1);
  expect_error(run_engine(eval + " --model " + path("other") + " --adapter " + path("run/model")),
               "trained on another base model");
  // A base of another shape, and an adapter without its recorded base (as peft writes them).
  fs::remove(dir_ / "run/model/config.json");
  BertConfig c = read_model_config(path("base"));
  c.intermediate_size = 48;
  {
    auto backend = make_backend("cpu");
    BertModel m(*backend, c, ModelOptions{});
    m.init_weights(1);
    SaveOptions so;
    so.vocab_path = path("base/vocab.txt");
    save_pretrained(m, path("wide"), so);
  }
  expect_error(run_engine(eval + " --model " + path("wide") + " --adapter " + path("run/model")),
               "but the model needs [48, 16]");
}

}  // namespace
}  // namespace engine
