// The step bench (engine/perf/) on the CPU backend: every field of the JSON report exists and holds
// a number that agrees with the others (breakdown sums to the instrumented step, samples/s to the
// median step, FLOPs to the config's formula, op counts to the model's structure), real-length
// batches are drawn as documented, and bad arguments are engine::Errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/error.h"
#include "engine/io/result_path.h"
#include "engine/perf/peaks.h"
#include "engine/perf/step_bench.h"
#include "engine/perf/timed_backend.h"

namespace fs = std::filesystem;
using engine::perf::StepBenchOptions;
using nlohmann::json;

namespace {

StepBenchOptions tiny_options() {
  StepBenchOptions o;
  o.config = "bert-tiny";
  o.seq = 16;
  o.batch = 4;
  o.backend = "cpu";
  o.warmup = 1;
  o.steps = 3;
  o.breakdown_steps = 2;
  o.peak_gemm = 64;
  return o;
}

json run(const StepBenchOptions& o) {
  std::ostringstream log;
  return engine::perf::run_step_bench(o, log);
}

fs::path temp_file(const std::string& name, const std::string& text) {
  fs::path p = fs::temp_directory_path() / ("engine_test_bench_" + name);
  std::ofstream(p) << text;
  return p;
}

void expect_positive_number(const json& r, const char* key) {
  ASSERT_TRUE(r.contains(key)) << key;
  ASSERT_TRUE(r[key].is_number()) << key << " = " << r[key].dump();
  EXPECT_TRUE(std::isfinite(r[key].get<double>())) << key;
  EXPECT_GT(r[key].get<double>(), 0.0) << key;
}

void expect_stats(const json& s) {
  ASSERT_TRUE(s.is_object()) << s.dump();
  for (const char* k : {"median", "p10", "p90", "min", "max", "mean"}) expect_positive_number(s, k);
  EXPECT_LE(s["min"].get<double>(), s["p10"].get<double>());
  EXPECT_LE(s["p10"].get<double>(), s["median"].get<double>());
  EXPECT_LE(s["median"].get<double>(), s["p90"].get<double>());
  EXPECT_LE(s["p90"].get<double>(), s["max"].get<double>());
}

// Expects f() to throw engine::Error whose message contains `part`.
template <typename F>
void expect_error(F f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << part << "'";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(StepBench, TinyCpuReportHasEveryFieldAndIsConsistent) {
  const StepBenchOptions o = tiny_options();
  const json r = run(o);

  EXPECT_EQ(r["schema"], "engine-bench/1");
  for (const char* k : {"engine_commit", "device", "backend", "precision", "attention", "mode"})
    EXPECT_TRUE(r[k].is_string() && !r[k].get<std::string>().empty()) << k;
  EXPECT_EQ(r["backend"], "cpu");
  EXPECT_EQ(r["precision"], "fp32");
  EXPECT_EQ(r["mode"], "eager");
  EXPECT_EQ(r["warmup"], 1);
  EXPECT_EQ(r["steps"], 3);

  const engine::BertConfig c = engine::BertConfig::named("bert-tiny");
  EXPECT_EQ(r["config"]["name"], "bert-tiny");
  EXPECT_EQ(r["config"]["hidden_size"], c.hidden_size);
  EXPECT_EQ(r["config"]["num_hidden_layers"], c.num_hidden_layers);
  EXPECT_EQ(r["config"]["num_labels"], 2);
  EXPECT_EQ(r["config"]["parameters"], c.parameter_count(true, 2));
  EXPECT_EQ(r["batch"]["mode"], "fixed");
  EXPECT_EQ(r["batch"]["seq"], 16);
  EXPECT_EQ(r["batch"]["batch"], 4);
  EXPECT_DOUBLE_EQ(r["batch"]["mean_tokens"].get<double>(), 64.0);

  expect_stats(r["step_ms"]);
  expect_stats(r["eager_step_ms"]);
  EXPECT_EQ(r["step_ms"], r["eager_step_ms"]);  // eager is the reported mode without graphs
  for (const char* k : {"samples_per_s", "tokens_per_s", "flops_per_step", "tflops", "peak_tflops_measured",
                        "mfu_measured", "breakdown_step_ms", "final_loss", "final_grad_norm"})
    expect_positive_number(r, k);
  EXPECT_TRUE(r["peak_tflops_datasheet"].is_null());  // no datasheet for the CPU
  EXPECT_TRUE(r["mfu_datasheet"].is_null());
  EXPECT_EQ(r["peak_gemm"]["n"], 64);

  // Rates agree with the median step and the config's FLOP formula.
  const double median_s = r["step_ms"]["median"].get<double>() * 1e-3;
  EXPECT_NEAR(r["samples_per_s"].get<double>(), 4.0 / median_s, 1e-6 * 4.0 / median_s);
  EXPECT_NEAR(r["tokens_per_s"].get<double>(), 64.0 / median_s, 1e-6 * 64.0 / median_s);
  const double flops = c.train_flops(64, 4.0 * 16 * 16);
  EXPECT_NEAR(r["flops_per_step"].get<double>(), flops, 1e-9 * flops);
  EXPECT_NEAR(r["tflops"].get<double>(), flops / median_s / 1e12, 1e-6 * r["tflops"].get<double>());
  EXPECT_NEAR(r["mfu_measured"].get<double>(), r["tflops"].get<double>() / r["peak_tflops_measured"].get<double>(),
              1e-9);

  // Memory: the arenas and the sum.
  const json& m = r["memory"];
  for (const char* k : {"parameters", "activations", "total"}) expect_positive_number(m, k);
  ASSERT_TRUE(m["workspace"].is_number_integer());
  EXPECT_EQ(m["total"].get<int64_t>(),
            m["parameters"].get<int64_t>() + m["activations"].get<int64_t>() + m["workspace"].get<int64_t>());
  EXPECT_TRUE(m.contains("device_used") && m["device_used"].is_null());
  // Parameters, gradients, two moments (f32) at least.
  EXPECT_GE(m["parameters"].get<double>(), 16.0 * double(c.parameter_count(true, 2)));

  // Breakdown: every category, non-negative, summing to the instrumented step within 1%.
  const json& b = r["breakdown_ms"];
  double sum = 0;
  for (const char* k : {"attention", "matmuls", "layernorm", "gelu", "loss", "optimizer", "other"}) {
    ASSERT_TRUE(b.contains(k) && b[k].is_number()) << k;
    EXPECT_GE(b[k].get<double>(), 0.0) << k;
    sum += b[k].get<double>();
  }
  EXPECT_EQ(b.size(), 7u);
  EXPECT_NEAR(sum, r["breakdown_step_ms"].get<double>(), 0.01 * r["breakdown_step_ms"].get<double>());
  EXPECT_GT(b["matmuls"].get<double>(), 0.0);
  EXPECT_GT(b["optimizer"].get<double>(), 0.0);
  // Op counts per step follow the model: 4 products per layer plus pooler and classifier; one
  // attention per layer; the GELU piece in the first FFN product and in its dX.
  const json& ops = r["breakdown_ops"];
  EXPECT_DOUBLE_EQ(ops["linear_forward"]["calls"].get<double>(), 4.0 * double(c.num_hidden_layers) + 2);
  EXPECT_DOUBLE_EQ(ops["attention_forward"]["calls"].get<double>(), double(c.num_hidden_layers));
  EXPECT_DOUBLE_EQ(ops["attention_backward"]["calls"].get<double>(), double(c.num_hidden_layers));
  EXPECT_DOUBLE_EQ(ops["gelu"]["calls"].get<double>(), 2.0 * double(c.num_hidden_layers));
  EXPECT_DOUBLE_EQ(ops["adamw"]["calls"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(ops["cross_entropy"]["calls"].get<double>(), 1.0);
  double ops_sum = 0;
  for (const auto& [name, v] : ops.items()) ops_sum += v["ms"].get<double>();
  EXPECT_NEAR(ops_sum, sum, 1e-6 * sum + 1e-9);

  const json& g = r["cuda_graphs"];
  EXPECT_EQ(g["enabled"], false);
  EXPECT_EQ(g["captures"], 0);
  EXPECT_EQ(g["replays"], 0);
  EXPECT_TRUE(g["step_ms"].is_null());
  EXPECT_TRUE(g["speedup"].is_null());

  // The summary prints without throwing and names the mode.
  EXPECT_NE(engine::perf::summarize_step_bench(r).find("step (eager)"), std::string::npos);
}

TEST(StepBench, NoBreakdownGivesNulls) {
  StepBenchOptions o = tiny_options();
  o.breakdown_steps = 0;
  o.peak_gemm = 0;
  o.steps = 1;
  const json r = run(o);
  EXPECT_TRUE(r["breakdown_ms"].is_null());
  EXPECT_TRUE(r["peak_tflops_measured"].is_null());
  EXPECT_TRUE(r["mfu_measured"].is_null());
  expect_stats(r["step_ms"]);
}

TEST(StepBench, LengthsFileBatchesAreConsecutiveAndCycle) {
  StepBenchOptions o = tiny_options();
  o.lengths = temp_file("lengths.txt", "5\n9\n\n17\n3\n").string();
  o.batch = 3;
  o.warmup = 1;
  o.steps = 2;
  o.breakdown_steps = 1;
  const json r = run(o);
  // Batches: [5 9 17] (warm-up), [3 5 9], [17 3 5]: timed mean 21 tokens, mean longest 13.
  EXPECT_EQ(r["batch"]["mode"], "lengths");
  EXPECT_TRUE(r["batch"]["seq"].is_null());
  EXPECT_EQ(r["batch"]["lengths_source"], engine::io::result_path(o.lengths));  // named as results name files
  EXPECT_DOUBLE_EQ(r["batch"]["mean_tokens"].get<double>(), 21.0);
  EXPECT_DOUBLE_EQ(r["batch"]["mean_max_seqlen"].get<double>(), 13.0);
  const engine::BertConfig c = engine::BertConfig::named("bert-tiny");
  const double flops = 0.5 * (c.train_flops(17, 9 + 25 + 81) + c.train_flops(25, 289 + 9 + 25));
  EXPECT_NEAR(r["flops_per_step"].get<double>(), flops, 1e-9 * flops);
  EXPECT_NEAR(r["samples_per_s"].get<double>(), 3.0 / (r["step_ms"]["median"].get<double>() * 1e-3),
              1e-6 * r["samples_per_s"].get<double>());
}

// --task qa times BertForQuestionAnswering's step (qa_outputs and the span loss) on the same
// batches; the loss appears in the breakdown and the report names the task.
TEST(StepBench, QuestionAnsweringHead) {
  StepBenchOptions o = tiny_options();
  o.task = "qa";
  o.lengths = temp_file("qa_lengths.txt", "1\n9\n17\n").string();
  const json r = run(o);
  EXPECT_EQ(r["task"], "qa");
  expect_stats(r["step_ms"]);
  EXPECT_GT(r["breakdown_ms"]["loss"].get<double>(), 0.0);
  o.task = "tokens";
  expect_error([&] { run(o); }, "--task must be classify or qa");
}

TEST(StepBench, ConfigFromDirectory) {
  const fs::path dir = fs::temp_directory_path() / "engine_test_bench_model";
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"model_type": "bert", "vocab_size": 100, "hidden_size": 32,
    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 40})";
  const engine::BertConfig c = engine::perf::load_bench_config(dir.string());
  EXPECT_EQ(c.hidden_size, 32);
  StepBenchOptions o = tiny_options();
  o.config = dir.string();
  o.seq = 40;
  o.steps = 1;
  const json r = run(o);
  EXPECT_EQ(r["config"]["hidden_size"], 32);
  EXPECT_EQ(r["config"]["vocab_size"], 100);
  o.seq = 41;  // past this config's max_position_embeddings
  expect_error([&] { run(o); }, "max_position_embeddings 40");
}

TEST(StepBench, BadArgumentsAreErrors) {
  StepBenchOptions o = tiny_options();
  o.config = "bert-enormous";
  expect_error([&] { run(o); }, "neither a named config");
  o = tiny_options();
  o.seq = 0;
  expect_error([&] { run(o); }, "--seq must be at least 1");
  o = tiny_options();
  o.seq = 513;
  expect_error([&] { run(o); }, "max_position_embeddings 512");
  o = tiny_options();
  o.batch = 0;
  expect_error([&] { run(o); }, "--batch");
  o = tiny_options();
  o.lengths = (fs::temp_directory_path() / "engine_test_bench_no_such_file").string();
  expect_error([&] { run(o); }, "cannot open");
  o.lengths = temp_file("empty.txt", "\n\n").string();
  expect_error([&] { run(o); }, "holds no lengths");
  o.lengths = temp_file("words.txt", "12\ntwelve\n").string();
  expect_error([&] { run(o); }, "line 2");
  o.lengths = temp_file("negative.txt", "12\n-3\n").string();
  expect_error([&] { run(o); }, "line 2");
  o.lengths = temp_file("zero.txt", "0\n").string();
  expect_error([&] { run(o); }, "length 0");
  o.lengths = temp_file("long.txt", "12\n513\n").string();
  expect_error([&] { run(o); }, "more than max_position_embeddings 512");
  o = tiny_options();
  for (const char* bad : {"3", "a:b", "5:2", "1:2:3", ":4", "-1:2", "1:"}) {
    o.profile_steps = bad;
    expect_error([&] { run(o); }, "--profile-steps");
  }
  o.profile_steps = "1:3";  // steps are 0..2
  expect_error([&] { run(o); }, "past the last timed step");
  o = tiny_options();
  o.cuda_graphs = "on";  // the CPU backend cannot capture
  expect_error([&] { run(o); }, "cannot");
  o.cuda_graphs = "sometimes";
  expect_error([&] { run(o); }, "--cuda-graphs");
  o = tiny_options();
  o.precision = "bf16";
  expect_error([&] { run(o); }, "bf16");
}

TEST(StepBench, ProfileStepsParse) {
  engine::perf::StepRange r = engine::perf::parse_profile_steps("2:4");
  EXPECT_EQ(r.first, 2);
  EXPECT_EQ(r.last, 4);
  EXPECT_TRUE(r.contains(3));
  EXPECT_FALSE(r.contains(5));
  EXPECT_FALSE(engine::perf::parse_profile_steps("").contains(0));
  // A valid bracket runs on the CPU (profiler calls are no-ops there).
  StepBenchOptions o = tiny_options();
  o.profile_steps = "0:1";
  o.breakdown_steps = 0;
  EXPECT_NO_THROW(run(o));
}

TEST(StepBench, StepTimeStats) {
  const json s = engine::perf::step_time_stats({5, 1, 4, 2, 3});
  EXPECT_DOUBLE_EQ(s["median"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(s["p10"].get<double>(), 1.4);
  EXPECT_DOUBLE_EQ(s["p90"].get<double>(), 4.6);
  EXPECT_DOUBLE_EQ(s["min"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(s["max"].get<double>(), 5.0);
  EXPECT_DOUBLE_EQ(s["mean"].get<double>(), 3.0);
  EXPECT_TRUE(engine::perf::step_time_stats({}).is_null());
}

TEST(StepBench, OpCategories) {
  using engine::perf::categorize_op;
  using engine::perf::OpCategory;
  EXPECT_EQ(categorize_op("linear_forward"), OpCategory::matmuls);
  EXPECT_EQ(categorize_op("linear_backward_dw"), OpCategory::matmuls);
  EXPECT_EQ(categorize_op("attention_backward"), OpCategory::attention);
  EXPECT_EQ(categorize_op("embeddings_forward"), OpCategory::layernorm);
  EXPECT_EQ(categorize_op("add_dropout_layernorm_backward"), OpCategory::layernorm);
  EXPECT_EQ(categorize_op("gelu"), OpCategory::gelu);
  EXPECT_EQ(categorize_op("cross_entropy"), OpCategory::loss);
  EXPECT_EQ(categorize_op("mse"), OpCategory::loss);
  EXPECT_EQ(categorize_op("adamw"), OpCategory::optimizer);
  EXPECT_EQ(categorize_op("global_norm"), OpCategory::optimizer);
  EXPECT_EQ(categorize_op("dropout_forward"), OpCategory::other);
  EXPECT_EQ(categorize_op("fill"), OpCategory::other);
  EXPECT_EQ(categorize_op("copy_from_host"), OpCategory::other);
}

TEST(StepBench, DatasheetPeaks) {
  using engine::DType;
  using engine::perf::datasheet_peak_tflops;
  EXPECT_DOUBLE_EQ(datasheet_peak_tflops("NVIDIA H100 80GB HBM3", DType::bf16), 989.4);
  EXPECT_DOUBLE_EQ(datasheet_peak_tflops("NVIDIA H100 80GB HBM3", DType::f32), 66.9);
  EXPECT_DOUBLE_EQ(datasheet_peak_tflops("NVIDIA H200", DType::bf16), 989.4);
  EXPECT_DOUBLE_EQ(datasheet_peak_tflops("NVIDIA H100 PCIe", DType::bf16), 756.5);
  EXPECT_DOUBLE_EQ(datasheet_peak_tflops("cpu", DType::f32), 0.0);
}

TEST(StepBench, Sst2LengthsFromSharedData) {
  const fs::path data = fs::path(ENGINE_SOURCE_DIR) / ".." / "shared" / "data";
  if (!fs::exists(data / "sst2" / "train.tsv")) GTEST_SKIP() << "no " << data.string();
  const std::vector<int64_t> lengths = engine::perf::sst2_lengths(data.string(), 512);
  EXPECT_GT(lengths.size(), 60000u);  // SST-2 train has 67,349 sentences
  double sum = 0;
  for (int64_t l : lengths) {
    ASSERT_GE(l, 3);  // [CLS] at least one token [SEP]
    ASSERT_LE(l, 512);
    sum += double(l);
  }
  const double mean = sum / double(lengths.size());
  EXPECT_GT(mean, 8.0);
  EXPECT_LT(mean, 20.0);
}
