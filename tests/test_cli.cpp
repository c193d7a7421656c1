// The engine command as a user runs it: `engine info` on checkpoints whose weights do not fit their
// config; predict on a labelled file; eval and predict show progress on standard error and only
// results on standard output; results name no path of the machine they ran on.
#include <gtest/gtest.h>

#include <regex>

#include "cli_helpers.h"
#include "engine/io/safetensors.h"

namespace engine::test {
namespace {

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = pick_seed() % 100000;
    dir_ = fs::temp_directory_path() / ("engine_test_cli_" + unique_suffix());
    fs::create_directories(dir_);
    task_ = SyntheticTask::make(seed_, 64, 64, 12);
  }
  void TearDown() override { fs::remove_all(dir_); }

  uint64_t seed_ = 0;
  fs::path dir_;
  SyntheticTask task_;
};

// Rewrites dir/model.safetensors without the tensor `drop` and with `reshape` given `shape`
// (its values cut or repeated to the new size).
void rewrite_weights(const fs::path& dir, const std::string& drop, const std::string& reshape,
                     const std::vector<int64_t>& shape) {
  const std::string path = (dir / "model.safetensors").string();
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  std::vector<std::vector<float>> values;
  std::vector<io::SafetensorsWriteEntry> entries;
  values.reserve(file.tensors().size());
  for (const auto& t : file.tensors()) {
    if (t.name == drop) continue;
    values.push_back(file.to_f32(t.name));
    std::vector<int64_t> s = t.name == reshape ? shape : t.shape;
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    values.back().resize(size_t(n), 0.5f);
    entries.push_back({t.name, DType::f32, s, values.back().data()});
  }
  io::write_safetensors(path, entries);
}

TEST_F(Cli, InfoReportsEveryWayTheWeightsDoNotFitTheConfig) {
  SCOPED_TRACE("ENGINE_TEST_SEED=" + std::to_string(seed_));
  const fs::path good = dir_ / "good";
  save_tiny_model(task_, good, 2, seed_);
  CommandResult ok = run_engine("info " + good.string());
  ASSERT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("fit          every parameter"), std::string::npos) << ok.out;

  const std::string missing = "bert.encoder.layer.1.output.dense.bias";
  const std::string reshaped = "bert.encoder.layer.0.attention.output.dense.weight";

  // One encoder tensor missing: eval refuses the directory, and info must say why.
  fs::copy(good, dir_ / "missing", fs::copy_options::recursive);
  rewrite_weights(dir_ / "missing", missing, "", {});
  CommandResult r = run_engine("info " + (dir_ / "missing").string());
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("no tensor for parameter '" + missing + "'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layers       2"), std::string::npos) << "info should still describe the config:\n" << r.out;
  EXPECT_NE(r.err.find("1 problem"), std::string::npos) << r.err;

  // A tensor whose shape disagrees with config.json.
  fs::copy(good, dir_ / "shape", fs::copy_options::recursive);
  rewrite_weights(dir_ / "shape", "", reshaped, {32, 16});
  r = run_engine("info " + (dir_ / "shape").string());
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("'" + reshaped + "' has shape [32, 16] but the model needs [32, 32]"), std::string::npos)
      << r.out;

  // Both at once: every problem is listed, not just the first, and eval (the loader) refuses the
  // same directory naming the first of them.
  fs::copy(good, dir_ / "both", fs::copy_options::recursive);
  rewrite_weights(dir_ / "both", missing, reshaped, {32, 16});
  r = run_engine("info " + (dir_ / "both").string());
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("no tensor for parameter '" + missing + "'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("'" + reshaped + "' has shape [32, 16]"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("2 problems"), std::string::npos) << r.err;
  write_labelled_tsv(task_, task_.dev, dir_ / "dev.tsv");
  CommandResult ev = run_engine("eval --backend cpu --model " + (dir_ / "both").string() + " --data " +
                                (dir_ / "dev.tsv").string());
  EXPECT_NE(ev.exit_code, 0) << ev.out;
  EXPECT_NE(ev.err.find("'" + reshaped + "' has shape [32, 16]"), std::string::npos) << ev.err;
  EXPECT_NE(ev.err.find("1 more problem"), std::string::npos) << ev.err;
}

// predict --data ignores the labels of a labelled file (it used to stop with "internal:
// classification data without a label map"), including labels the model does not know.
TEST_F(Cli, PredictIgnoresTheLabelsOfALabelledFile) {
  SCOPED_TRACE("ENGINE_TEST_SEED=" + std::to_string(seed_));
  save_tiny_model(task_, dir_ / "model", 2, seed_);
  std::ofstream(dir_ / "labelled.tsv") << "sentence\tlabel\n"
                                       << task_.text(task_.dev[0]) << "\tpos\n"
                                       << task_.text(task_.dev[1]) << "\tunknown-label\n";
  CommandResult r = run_engine("predict --backend cpu --model " + (dir_ / "model").string() + " --data " +
                               (dir_ / "labelled.tsv").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) EXPECT_TRUE(nlohmann::json::parse(line).contains("label"));
  EXPECT_EQ(n, 2) << r.out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Every line of stderr is a progress line of `what` with rising row counts, the last one says the
// pass is done; returns how many lines there were.
size_t expect_progress(const std::string& err, const std::string& what, size_t rows) {
  const std::regex line_re(what + R"(: (\d+)/(\d+) rows  [0-9.]+ rows/s  (.+))");
  int64_t previous = 0;
  std::vector<std::string> lines = lines_of(err);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::smatch m;
    EXPECT_TRUE(std::regex_match(lines[i], m, line_re)) << "not a progress line: '" << lines[i] << "'";
    if (m.empty()) continue;
    const int64_t done = std::stoll(m[1]);
    EXPECT_GT(done, previous) << lines[i];
    EXPECT_EQ(std::stoll(m[2]), int64_t(rows)) << lines[i];
    const bool last = i + 1 == lines.size();
    EXPECT_EQ(done == int64_t(rows), last) << lines[i];
    EXPECT_EQ(m[3].str().rfind(last ? "done in " : "", 0), 0u) << lines[i];
    EXPECT_NE(m[3].str().find(last ? "s" : " left"), std::string::npos) << lines[i];
    previous = done;
  }
  return lines.size();
}

TEST_F(Cli, EvalAndPredictShowProgressOnStderrAndResultsOnStdout) {
  SCOPED_TRACE("ENGINE_TEST_SEED=" + std::to_string(seed_));
  const fs::path model = dir_ / "model";
  save_tiny_model(task_, model, 2, seed_);
  const size_t rows = task_.dev.size();
  write_labelled_tsv(task_, task_.dev, dir_ / "dev.tsv");
  const std::string every_batch = "ENGINE_PROGRESS_SECONDS=0";
  const std::string common = "--backend cpu --batch-size 8 --model " + model.string() + " --data " +
                             (dir_ / "dev.tsv").string();

  CommandResult ev = run_engine("eval " + common, every_batch);
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  ASSERT_EQ(lines_of(ev.out).size(), 1u) << "stdout should hold only the metrics:\n" << ev.out;
  nlohmann::json metrics = nlohmann::json::parse(ev.out);
  EXPECT_EQ(metrics["examples"], rows);
  EXPECT_EQ(expect_progress(ev.err, "eval", rows), rows / 8) << ev.err;

  CommandResult quiet = run_engine("eval --quiet " + common, every_batch);
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
  EXPECT_EQ(quiet.out, ev.out);

  CommandResult pr = run_engine("predict " + common, every_batch);
  ASSERT_EQ(pr.exit_code, 0) << pr.err;
  std::vector<std::string> predictions = lines_of(pr.out);
  ASSERT_EQ(predictions.size(), rows) << "stdout should hold one prediction per row:\n" << pr.out;
  for (const std::string& line : predictions) EXPECT_TRUE(nlohmann::json::parse(line).contains("label")) << line;
  EXPECT_EQ(expect_progress(pr.err, "predict", rows), rows / 8) << pr.err;

  quiet = run_engine("predict --quiet " + common, every_batch);
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err, "");
  EXPECT_EQ(quiet.out, pr.out);

  // A pass done before its first line is due shows nothing: one batch, even at interval 0.
  std::ofstream(dir_ / "one.tsv") << "sentence\tlabel\n" << task_.text(task_.dev[0]) << "\tpos\n";
  CommandResult one = run_engine("predict --backend cpu --model " + model.string() + " --data " +
                                 (dir_ / "one.tsv").string(), every_batch);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.err, "");

  CommandResult bad = run_engine("eval " + common, "ENGINE_PROGRESS_SECONDS=soon");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("ENGINE_PROGRESS_SECONDS must be a number of seconds"), std::string::npos) << bad.err;
}

// Everything a run writes (run_config.json, metrics, checkpoints' state, the log, eval's output, the
// bench JSON) names data and models by a path relative to the current directory or by name, never
// by an absolute path of the machine: the run happens in a directory under the temporary folder,
// with absolute paths given for everything.
TEST_F(Cli, ResultsNameNoPathOfTheMachine) {
  SCOPED_TRACE("ENGINE_TEST_SEED=" + std::to_string(seed_));
  const fs::path run = dir_ / "run", model = dir_ / "models" / "tiny-model";
  fs::create_directories(run / "data");
  save_tiny_model(task_, model, 2, seed_);
  write_labelled_tsv(task_, task_.train, run / "data" / "train.tsv");
  write_labelled_tsv(task_, task_.dev, run / "data" / "dev.tsv");
  std::ofstream(run / "lengths.txt") << "5\n9\n";
  const std::string in_run = "cd " + run.string() + " &&";
  CommandResult ft = run_engine("finetune --backend cpu --max-steps 4 --save-steps 2 --batch-size 16 --model " +
                                    model.string() + " --train " + (run / "data/train.tsv").string() + " --dev " +
                                    (run / "data/dev.tsv").string() + " --output-dir " + (run / "out").string(),
                                in_run);
  ASSERT_EQ(ft.exit_code, 0) << ft.out << ft.err;
  CommandResult resumed = run_engine("finetune --backend cpu --max-steps 4 --save-steps 2 --batch-size 16 --model " +
                                         model.string() + " --train " + (run / "data/train.tsv").string() +
                                         " --output-dir " + (run / "resumed").string() + " --resume " +
                                         (run / "out/checkpoint-2").string(),
                                     in_run);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  // Resume knows the training data by its bytes, not by its path: other bytes are refused.
  write_labelled_tsv(task_, task_.dev, run / "data" / "other.tsv");
  CommandResult refused = run_engine("finetune --backend cpu --max-steps 4 --batch-size 16 --model " + model.string() +
                                         " --train " + (run / "data/other.tsv").string() + " --output-dir " +
                                         (run / "refused").string() + " --resume " + (run / "out").string(),
                                     in_run);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("train_data_fnv1a64"), std::string::npos) << refused.err;
  CommandResult ev = run_engine(
      "eval --backend cpu --model " + (run / "out/model").string() + " --data " + (run / "data/dev.tsv").string(), in_run);
  ASSERT_EQ(ev.exit_code, 0) << ev.err;
  CommandResult bench = run_engine("bench --backend cpu --steps 1 --warmup 0 --batch 2 --peak-gemm 0 --config " +
                                       model.string() + " --lengths " + (run / "lengths.txt").string() +
                                       " --json " + (run / "bench.json").string(),
                                   in_run);
  ASSERT_EQ(bench.exit_code, 0) << bench.out << bench.err;

  // The rule, where it applies: under the current directory relative to it, elsewhere the name.
  nlohmann::json config = nlohmann::json::parse(read_text(run / "out/run_config.json"));
  EXPECT_EQ(config["model"], "tiny-model");
  EXPECT_EQ(config["train"], "data/train.tsv");
  EXPECT_EQ(config["output_dir"], "out");
  EXPECT_EQ(nlohmann::json::parse(ev.out)["data"], "data/dev.tsv");
  EXPECT_EQ(nlohmann::json::parse(read_text(run / "bench.json"))["config"]["name"], "tiny-model");

  // No machine path anywhere: not the run's directory, not the temporary folder, not $HOME.
  std::vector<std::string> machine_paths = {run.string(), dir_.string(), fs::temp_directory_path().string()};
  if (const char* home = std::getenv("HOME"); home && std::string(home).size() > 1) machine_paths.push_back(home);
  std::vector<std::pair<std::string, std::string>> outputs = {{"finetune stdout", ft.out},
                                                              {"resumed finetune stdout", resumed.out},
                                                              {"eval stdout", ev.out},
                                                              {"bench stdout", bench.out}};
  for (const auto& entry : fs::recursive_directory_iterator(run)) {
    const std::string ext = entry.path().extension().string();
    if (entry.is_regular_file() && (ext == ".json" || ext == ".jsonl" || ext == ".txt"))
      outputs.push_back({entry.path().string(), read_text(entry.path())});
  }
  ASSERT_GT(outputs.size(), 10u);
  for (const auto& [name, text] : outputs)
    for (const std::string& machine : machine_paths)
      EXPECT_EQ(text.find(machine), std::string::npos) << name << " names the machine path " << machine << ":\n" << text;
}

// The committed results under bench/results/ follow the same rule: no absolute path (a '/' that
// starts a path after a space, a quote, a bracket, '=' or ':').
TEST(CommittedResults, NameNoAbsolutePath) {
  const fs::path results = fs::path(ENGINE_SOURCE_DIR) / "bench" / "results";
  const std::regex absolute_path(R"((^|[\s"'(=:])/[A-Za-z0-9._-]+/)");
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(results)) {
    if (!entry.is_regular_file()) continue;
    ++files;
    std::istringstream in(read_text(entry.path()));
    int number = 0;
    for (std::string line; std::getline(in, line);) {
      ++number;
      EXPECT_FALSE(std::regex_search(line, absolute_path)) << entry.path().string() << ":" << number << ": " << line;
    }
  }
  EXPECT_GT(files, 0) << "no results under " << results;
}

}  // namespace
}  // namespace engine::test
