// Data-parallel training on the CPU backend: the engine binary run by `mpirun -np 2` (Open MPI,
// shared-memory transport only, every run under `timeout`), against single-process runs.
//   - 2 ranks x batch B train the parameters 1 rank x batch 2B trains (dropout on, gradient
//     accumulation, epochs crossed with a partial last global batch), classification and token
//     classification: relative difference of the parameter vectors <= 1e-6 in norm.
//   - a 2-rank checkpoint resumes bitwise on 2 ranks, and on 1 rank with the same global batch.
//   - the sharded evaluation gives exactly the metrics `engine eval` computes in one process.
//   - mismatched options, a rank that fails, and a rank that hangs end the job with a message
//     naming the rank; a plain run never loads MPI (the engine does not link it).
// Skipped, with the reason, where mpirun or libengine_mpi.so is missing (tools/dev installs MPI).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <unistd.h>
#include <random>
#include <set>

#include "cli_helpers.h"
#include "engine/dist/grad_sync.h"
#include "engine/io/safetensors.h"
#include "test_seed.h"

namespace engine {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string mpi_library() { return std::string(ENGINE_BINARY_DIR) + "/bin/libengine_mpi.so"; }

bool have_mpi(std::string* why) {
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    *why = "mpirun is not on PATH (apt-get install openmpi-bin libopenmpi-dev; tools/dev does)";
    return false;
  }
  if (!fs::exists(mpi_library())) {
    *why = "this build has no libengine_mpi.so (CMake found no MPI)";
    return false;
  }
  return true;
}

// `mpirun -np N` on this machine only: as root if need be, more ranks than cores allowed, shared
// memory between the ranks, bounded by `timeout` so that no failure can hang the test suite.
std::string mpirun(int ranks, int timeout_s = 120) {
  return "timeout " + std::to_string(timeout_s) +
         " mpirun --allow-run-as-root --oversubscribe --bind-to none -mca btl self,vader -np " +
         std::to_string(ranks);
}

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The tensors of a model.safetensors whose names start with prefix, end to end in name order.
// The saved parameters of a model directory, or of an adapter directory (LoRA: the adapters and the
// head), in name order.
std::vector<double> parameters(const fs::path& model_dir, const std::string& prefix = "") {
  const fs::path adapter = model_dir / "adapter_model.safetensors";
  io::SafetensorsFile f =
      io::SafetensorsFile::open((fs::exists(adapter) ? adapter : model_dir / "model.safetensors").string());
  std::vector<std::string> names;
  for (const auto& t : f.tensors())
    if (t.name.compare(0, prefix.size(), prefix) == 0) names.push_back(t.name);
  std::sort(names.begin(), names.end());
  std::vector<double> out;
  for (const std::string& n : names)
    for (float v : f.to_f32(n)) out.push_back(v);
  return out;
}

struct Difference {
  double relative_norm = NAN;  // |a - b| / |b|
  double max_abs = NAN;
};

Difference compare(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size() || a.empty()) return {};
  double d2 = 0, b2 = 0, mx = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = a[i] - b[i];
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return {};  // NaN never passes
    d2 += d * d;
    b2 += b[i] * b[i];
    mx = std::max(mx, std::abs(d));
  }
  return {std::sqrt(d2) / std::sqrt(b2), mx};
}

class Dist : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!have_mpi(&why)) GTEST_SKIP() << why;
    seed_ = pick_seed() % 100000;
    trace_ = std::make_unique<::testing::ScopedTrace>(
        __FILE__, __LINE__, "seed " + std::to_string(seed_) + " (rerun with ENGINE_TEST_SEED=" + std::to_string(seed_) + ")");
    dir_ = fs::temp_directory_path() / ("engine_test_dist_" + unique_suffix());
    fs::create_directories(dir_);
    // 101 training examples: with 8 per global batch the epoch's last global batch is partial (5
    // examples: all on rank 0 for 2 ranks x 4).
    task_ = SyntheticTask::make(seed_, 101, 37, 12);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string model(int64_t labels) {
    const fs::path m = dir_ / ("model" + std::to_string(labels));
    if (!fs::exists(m)) test::save_tiny_model(task_, m, labels, seed_, /*named_labels=*/true);
    return m.string();
  }
  std::string tsv(const std::vector<SyntheticExample>& rows, const std::string& name) {
    test::write_labelled_tsv(task_, rows, dir_ / name);
    return (dir_ / name).string();
  }
  // CoNLL: positive words B-POS, negative words B-NEG, the rest O (as test_trainer's).
  std::string conll(const std::vector<SyntheticExample>& rows, const std::string& name) {
    std::ofstream out(dir_ / name);
    for (const SyntheticExample& e : rows) {
      for (size_t i = 1; i + 1 < e.ids.size(); ++i) {
        const int32_t id = e.ids[i];
        out << task_.vocab[size_t(id)] << " X X " << (id >= 5 && id < 13 ? "B-POS" : id >= 13 && id < 21 ? "B-NEG" : "O")
            << "\n";
      }
      out << "\n";
    }
    return (dir_ / name).string();
  }

  // `engine finetune` with the test's common flags; ranks == 0 runs it without mpirun.
  test::CommandResult finetune(int ranks, const std::string& args) {
    const std::string prefix = ranks > 0 ? mpirun(ranks) : "timeout 120";
    return test::run_engine("finetune --backend cpu --seed " + std::to_string(seed_) + " " + args, prefix);
  }

  std::string classify_args(int64_t batch, const std::string& out, int64_t steps = 20) {
    return "--model " + model(2) + " --train " + tsv(task_.train, "train.tsv") + " --dev " + tsv(task_.dev, "dev.tsv") +
           " --batch-size " + std::to_string(batch) +
           " --max-steps " + std::to_string(steps) +
           " --gradient-accumulation-steps 2 --learning-rate 3e-3 --warmup-steps 2"
           " --hidden-dropout 0.1 --attention-dropout 0.1 --classifier-dropout 0.1 --logging-steps 5"
           " --eval-steps 20 --output-dir " +
           (dir_ / out).string();
  }

  uint64_t seed_ = 0;
  fs::path dir_;
  SyntheticTask task_;
  std::unique_ptr<::testing::ScopedTrace> trace_;
};

#define EXPECT_RAN(result) \
  ASSERT_EQ((result).exit_code, 0) << "stdout:\n" << (result).out << "\nstderr:\n" << (result).err

// The equivalence of N ranks x B and 1 rank x N*B, and that the comparison can tell runs apart.
void expect_same_training(Dist* t, const fs::path& two_ranks, const fs::path& one_rank, const fs::path& other,
                          const fs::path& initial) {
  const std::vector<double> a = parameters(two_ranks), b = parameters(one_rank);
  const Difference d = compare(a, b);
  std::printf("  2 ranks x B vs 1 rank x 2B: relative difference %.3g in norm, largest element difference %.3g\n",
              d.relative_norm, d.max_abs);
  char text[64];
  std::snprintf(text, sizeof text, "%.3g", d.relative_norm);
  ::testing::Test::RecordProperty("relative_difference", text);
  std::snprintf(text, sizeof text, "%.3g", d.max_abs);
  ::testing::Test::RecordProperty("largest_element_difference", text);
  EXPECT_LE(d.relative_norm, 1e-6);  // NaN fails
  // The comparison must be able to fail: training moved the parameters far more than that (the
  // encoder's: the saved start has a sequence head), and a run of another batch size ends elsewhere.
  EXPECT_GT(compare(parameters(one_rank, "bert.encoder."), parameters(initial, "bert.encoder.")).relative_norm, 1e-3);
  EXPECT_GT(compare(parameters(other), b).relative_norm, 1e-4);
  (void)t;
}

TEST_F(Dist, TwoRanksTrainAsOneRankWithTheirGlobalBatchClassify) {
  const auto two = finetune(2, classify_args(4, "two"));
  EXPECT_RAN(two);
  const auto one = finetune(0, classify_args(8, "one"));
  EXPECT_RAN(one);
  const auto other = finetune(0, classify_args(4, "other"));
  EXPECT_RAN(other);
  expect_same_training(this, dir_ / "two" / "model", dir_ / "one" / "model", dir_ / "other" / "model", model(2));
  // Only rank 0 speaks and writes, and it logs global samples.
  EXPECT_EQ(read_jsonl(dir_ / "two" / "metrics.jsonl").size(), read_jsonl(dir_ / "one" / "metrics.jsonl").size());
  EXPECT_NE(two.out.find("data parallel: 2 ranks"), std::string::npos) << two.out;
  const auto runs = read_jsonl(dir_ / "two" / "metrics.jsonl");
  const auto runs1 = read_jsonl(dir_ / "one" / "metrics.jsonl");
  EXPECT_NEAR(runs[0]["loss"].get<double>(), runs1[0]["loss"].get<double>(), 1e-5);
}

TEST_F(Dist, TwoRanksTrainAsOneRankWithTheirGlobalBatchTokens) {
  auto args = [&](int64_t batch, const std::string& out) {
    return "--task tokens --model " + model(3) + " --train " + conll(task_.train, "train.conll") + " --dev " +
           conll(task_.dev, "dev.conll") + " --batch-size " + std::to_string(batch) +
           " --max-steps 20 --gradient-accumulation-steps 2 --learning-rate 3e-3 --warmup-steps 2 --hidden-dropout 0.1"
           " --attention-dropout 0.1 --classifier-dropout 0.1 --eval-steps 20 --output-dir " +
           (dir_ / out).string();
  };
  EXPECT_RAN(finetune(2, args(4, "two")));
  EXPECT_RAN(finetune(0, args(8, "one")));
  EXPECT_RAN(finetune(0, args(4, "other")));
  expect_same_training(this, dir_ / "two" / "model", dir_ / "one" / "model", dir_ / "other" / "model", model(3));
}

// LoRA under data parallelism: only the trainable prefix of the flat buffer has gradients (the
// buckets must stop there), and the adapter dropout of an input of another width than the hidden
// size (output.dense reads the intermediate activations) must draw the global batch's masks.
TEST_F(Dist, TwoRanksTrainLoraAdaptersAsOneRank) {
  const std::string lora =
      " --peft lora --lora-r 4 --lora-alpha 8 --lora-dropout 0.1 --lora-target-modules query,value,output.dense";
  EXPECT_RAN(finetune(2, classify_args(4, "two") + lora));
  EXPECT_RAN(finetune(0, classify_args(8, "one") + lora));
  EXPECT_RAN(finetune(0, classify_args(4, "other") + lora));
  const std::vector<double> two = parameters(dir_ / "two" / "model"), one = parameters(dir_ / "one" / "model");
  ASSERT_FALSE(one.empty());
  const Difference d = compare(two, one);
  std::printf("  LoRA, 2 ranks x B vs 1 rank x 2B: relative difference %.3g in norm\n", d.relative_norm);
  EXPECT_LE(d.relative_norm, 1e-6);  // NaN fails
  EXPECT_GT(compare(parameters(dir_ / "other" / "model"), one).relative_norm, 1e-4);  // it can tell runs apart
}

TEST_F(Dist, OverlappedBucketsSumWhatOneAllReduceSums) {
  // Buckets started during backward and one all-reduce after it: the same numbers, bitwise.
  EXPECT_RAN(finetune(2, classify_args(4, "on") + " --dist-overlap on"));
  EXPECT_RAN(finetune(2, classify_args(4, "off") + " --dist-overlap off"));
  const std::vector<double> on = parameters(dir_ / "on" / "model"), off = parameters(dir_ / "off" / "model");
  ASSERT_FALSE(on.empty());
  EXPECT_EQ(on, off);
  EXPECT_GT(compare(on, parameters(model(2))).relative_norm, 1e-3);  // and they trained
}

TEST(DistBuckets, EveryGradientElementInOneBucketTopLayerFirst) {
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  BertConfig c;
  c.vocab_size = 40 + int64_t(rng() % 30);
  c.hidden_size = 8 * (1 + int64_t(rng() % 4));
  c.num_hidden_layers = 1 + int(rng() % 4);
  c.num_attention_heads = 2;
  c.intermediate_size = 4 * c.hidden_size;
  c.max_position_embeddings = 32;
  c.num_labels = 3;
  auto backend = make_backend("cpu");
  for (Head head : {Head::sequence_classification, Head::token_classification}) {
    ModelOptions mo;
    mo.head = head;
    BertModel model(*backend, c, mo);
    const auto buckets = dist::plan_grad_buckets(model.params());
    ASSERT_EQ(buckets.size(), size_t(c.num_hidden_layers) + 1);
    std::vector<int> owner(size_t(model.params().size()), -1);
    for (size_t b = 0; b < buckets.size(); ++b)
      for (const auto& [begin, end] : buckets[b].ranges)
        for (int64_t i = begin; i < end; ++i) {
          ASSERT_EQ(owner[size_t(i)], -1) << "element " << i << " in two buckets";
          owner[size_t(i)] = int(b);
        }
    for (size_t i = 0; i < owner.size(); ++i) ASSERT_NE(owner[i], -1) << "element " << i << " in no bucket";
    for (int l = 0; l < c.num_hidden_layers; ++l)
      EXPECT_EQ(buckets[size_t(l)].after_node, "layer." + std::to_string(c.num_hidden_layers - 1 - l) + ".attention");
    EXPECT_EQ(buckets.back().after_node, "");
    // The nodes the buckets wait for are the model's: a backward pass names each of them.
    std::vector<TokenizedExample> examples(3);
    for (size_t e = 0; e < examples.size(); ++e) {
      const size_t len = 3 + rng() % 10;
      for (size_t t = 0; t < len; ++t) examples[e].ids.push_back(int32_t(rng() % uint64_t(c.vocab_size)));
      examples[e].type_ids.assign(len, 0);
      examples[e].label = int32_t(rng() % 3);
      if (head == Head::token_classification) examples[e].token_labels.assign(len, 1);
    }
    model.set_batch(pack_batch(examples, {0, 1, 2}));
    model.forward(Pass::train, seed);
    std::set<std::string> seen;
    model.set_after_backward([&](const std::string& node) { seen.insert(node); });
    model.backward();
    model.set_after_backward({});
    for (const auto& b : buckets)
      if (!b.after_node.empty()) EXPECT_TRUE(seen.count(b.after_node)) << b.after_node << " is no node of the model";
    // Each parameter lies wholly in the bucket of its layer.
    for (const ParamInfo& p : model.params().list()) {
      const std::string prefix = "bert.encoder.layer.";
      const int expect = p.name.rfind(prefix, 0) == 0
                             ? c.num_hidden_layers - 1 - std::stoi(p.name.substr(prefix.size()))
                             : int(buckets.size()) - 1;
      for (int64_t i = p.offset; i < p.offset + p.numel; ++i) ASSERT_EQ(owner[size_t(i)], expect) << p.name;
    }
  }
}

TEST_F(Dist, CheckpointResumesOnTwoRanksBitwiseAndOnOneRank) {
  const std::string base = classify_args(4, "full") + " --save-steps 10";
  EXPECT_RAN(finetune(2, base));
  ASSERT_TRUE(fs::exists(dir_ / "full" / "checkpoint-10" / "trainer_state.json"));
  // 2 ranks resume the checkpoint of step 10: bitwise the uninterrupted run.
  EXPECT_RAN(finetune(2, classify_args(4, "resumed2") + " --resume " + (dir_ / "full" / "checkpoint-10").string()));
  EXPECT_EQ(parameters(dir_ / "resumed2" / "model"), parameters(dir_ / "full" / "model"));
  // 1 rank of the same global batch (8) resumes it too, and ends where the 2-rank run ends.
  const auto one = finetune(0, classify_args(8, "resumed1") + " --resume " + (dir_ / "full" / "checkpoint-10").string());
  EXPECT_RAN(one);
  EXPECT_NE(one.out.find("resumed from"), std::string::npos) << one.out;
  const Difference d = compare(parameters(dir_ / "resumed1" / "model"), parameters(dir_ / "full" / "model"));
  std::printf("  2-rank checkpoint resumed on 1 rank vs the 2-rank run: relative difference %.3g, largest %.3g\n",
              d.relative_norm, d.max_abs);
  EXPECT_LE(d.relative_norm, 1e-6);
  // Another global batch is refused, by name.
  const auto refused = finetune(0, classify_args(4, "refused") + " --resume " + (dir_ / "full" / "checkpoint-10").string());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("batch_size"), std::string::npos) << refused.err;
}

// True while process `pid` runs (a zombie, which nobody may reap here, has ended).
bool running(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  const size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

TEST_F(Dist, KilledTwoRankRunResumesBitwise) {
  // The uninterrupted run, then the same run killed (SIGTERM to mpirun) once its first checkpoint
  // exists, resumed on 2 ranks from the latest complete checkpoint in its directory.
  const int64_t steps = 200;
  EXPECT_RAN(finetune(2, classify_args(4, "full", steps) + " --save-steps 10"));
  const fs::path killed = dir_ / "killed", pid_file = dir_ / "mpirun.pid";
  const std::string cmd = mpirun(2) + " " + test::engine_binary() + " finetune --backend cpu --seed " +
                          std::to_string(seed_) + " " + classify_args(4, "killed", steps) + " --save-steps 10";
  ASSERT_EQ(std::system(("sh -c '" + cmd + " >/dev/null 2>&1 & echo $! > " + pid_file.string() + "'").c_str()), 0);
  for (int i = 0; i < 600 && !fs::exists(killed / "checkpoint-10"); ++i) usleep(100000);  // at most 60 s
  std::string pid = test::read_text(pid_file);
  pid.erase(pid.find_last_not_of(" \n") + 1);
  ASSERT_FALSE(pid.empty());
  const bool alive = running(pid);
  ASSERT_EQ(std::system(("kill -TERM " + pid + " 2>/dev/null; true").c_str()), 0);
  for (int i = 0; i < 300 && running(pid); ++i) usleep(100000);
  ASSERT_FALSE(running(pid)) << "mpirun outlived SIGTERM by 30 s";
  std::printf("  killed %s (%s)\n", alive ? "during the run" : "after the run ended: nothing to interrupt",
              fs::exists(killed / "model") ? "it had finished" : "before the end");
  const auto resumed = finetune(2, classify_args(4, "resumed", steps) + " --save-steps 10 --resume " + killed.string());
  EXPECT_RAN(resumed);
  EXPECT_EQ(parameters(dir_ / "resumed" / "model"), parameters(dir_ / "full" / "model"));
}

TEST_F(Dist, DivergenceDecidedAlikeOnEveryRank) {
  // A learning rate of 1e30 without clipping makes steps diverge. Skipped: every rank skips the same
  // steps (the run ends with the replicas' digests equal, checked by the engine itself); stopped: the
  // job ends with the divergence message.
  const std::string args = "--model " + model(2) + " --train " + tsv(task_.train, "train.tsv") +
                           " --batch-size 4 --max-steps 6 --learning-rate 1e30 --max-grad-norm 0 --logging-steps 1";
  const auto skip = finetune(2, args + " --on-divergence skip --output-dir " + (dir_ / "skip").string());
  EXPECT_RAN(skip);
  int diverged = 0;
  for (const auto& e : read_jsonl(dir_ / "skip" / "metrics.jsonl")) diverged += e["event"] == "divergence";
  EXPECT_GT(diverged, 0);
  const auto stop = finetune(2, args + " --on-divergence stop --output-dir " + (dir_ / "stop").string());
  EXPECT_NE(stop.exit_code, 0);
  EXPECT_NE(stop.err.find("divergent step"), std::string::npos) << stop.err;
  EXPECT_NE(stop.err.find("rank "), std::string::npos) << stop.err;
}

TEST_F(Dist, ShardedEvaluationEqualsOneProcess) {
  EXPECT_RAN(finetune(2, classify_args(4, "two") + " --eval-batch-size 5"));
  const auto events = read_jsonl(dir_ / "two" / "metrics.jsonl");
  ASSERT_FALSE(events.empty());
  const nlohmann::json end = events.back();
  ASSERT_EQ(end["event"], "end");
  // One process scores the final model (rank 0's parameters) with the same batches.
  const auto eval = test::run_engine("eval --backend cpu --batch-size 5 --model " + (dir_ / "two" / "model").string() +
                                     " --data " + (dir_ / "dev.tsv").string());
  EXPECT_RAN(eval);
  const nlohmann::json one = nlohmann::json::parse(eval.out);
  for (const char* k : {"accuracy", "f1", "mcc", "loss"}) {
    ASSERT_TRUE(one.contains(k)) << eval.out;
    EXPECT_EQ(end["eval_" + std::string(k)], one[k]) << k;  // exactly, not nearly
  }
}

TEST_F(Dist, MismatchedOptionsAreNamedAtStart) {
  // Rank 1 gets another learning rate through a wrapper.
  const fs::path wrapper = dir_ / "wrapper.sh";
  std::ofstream(wrapper) << "#!/bin/sh\nif [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then lr=1e-3; else lr=3e-3; fi\nexec "
                         << test::engine_binary() << " \"$@\" --learning-rate $lr\n";
  fs::permissions(wrapper, fs::perms::owner_all);
  const std::string cmd = mpirun(2) + " " + wrapper.string() + " finetune --backend cpu --model " + model(2) +
                          " --train " + tsv(task_.train, "train.tsv") + " --max-steps 3 --output-dir " +
                          (dir_ / "out").string() + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("rank 1 of 2"), std::string::npos) << out;
  EXPECT_NE(out.find("learning_rate = 0.001 here, 0.003 on rank 0"), std::string::npos) << out;
}

TEST_F(Dist, AFailingRankEndsTheJobWithItsError) {
  // Only rank 1 is given a dev file that does not exist.
  const fs::path wrapper = dir_ / "wrapper.sh";
  std::ofstream(wrapper) << "#!/bin/sh\nif [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then extra=\"--dev /nonexistent/dev.tsv\"; fi\n"
                         << "exec " << test::engine_binary() << " \"$@\" $extra\n";
  fs::permissions(wrapper, fs::perms::owner_all);
  const auto t0 = Clock::now();
  const std::string cmd = mpirun(2) + " " + wrapper.string() + " finetune --backend cpu --model " + model(2) +
                          " --train " + tsv(task_.train, "train.tsv") + " --max-steps 100000 --dist-timeout 60 --output-dir " +
                          (dir_ / "out").string() + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 124) << out;
  EXPECT_NE(out.find("engine: error: rank 1 of 2"), std::string::npos) << out;
  EXPECT_NE(out.find("/nonexistent/dev.tsv"), std::string::npos) << out;
  EXPECT_LT(secs, 60.0) << "the job outlived the failing rank";
}

TEST_F(Dist, AHungRankTimesOutNamingTheWaitingRank) {
  // Rank 1 trains until rank 0 has logged two steps (so both are past MPI's start), then its engine
  // is stopped (SIGSTOP): rank 0 waits in a collective, gives up after --dist-timeout 3 and ends the
  // job. The wait for the log is bounded (100 x 0.2 s).
  const fs::path out_dir = dir_ / "out", wrapper = dir_ / "wrapper.sh";
  std::ofstream(wrapper) << "#!/bin/sh\n"
                         << test::engine_binary() << " \"$@\" &\npid=$!\n"
                         << "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then\n"
                         << "  for i in $(seq 100); do\n"
                         << "    [ \"$(cat " << (out_dir / "metrics.jsonl").string()
                         << " 2>/dev/null | wc -l)\" -ge 2 ] && break\n"
                         << "    sleep 0.2\n  done\n  kill -STOP $pid\nfi\nwait $pid\n";
  fs::permissions(wrapper, fs::perms::owner_all);
  const auto t0 = Clock::now();
  const std::string cmd = mpirun(2) + " " + wrapper.string() + " finetune --backend cpu --model " + model(2) +
                          " --train " + tsv(task_.train, "train.tsv") +
                          " --max-steps 100000 --logging-steps 1 --dist-timeout 3 --output-dir " + out_dir.string() +
                          " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0 && WEXITSTATUS(status) != 124) << out;
  EXPECT_NE(out.find("rank 0 of 2"), std::string::npos) << out;
  EXPECT_NE(out.find("no answer from the other ranks within 3 s"), std::string::npos) << out;
  EXPECT_LT(secs, 100.0);
}

TEST_F(Dist, BenchWorldReportTimesTheGradientAllReduce) {
  const fs::path json = dir_ / "bench.json";
  const auto r = test::run_engine("bench --backend cpu --config bert-tiny --seq 16 --batch 4 --world --world-reps 5 --json " +
                                      json.string(),
                                  mpirun(2));
  EXPECT_RAN(r);
  EXPECT_NE(r.out.find("world: 2 ranks"), std::string::npos) << r.out;
  const nlohmann::json w = nlohmann::json::parse(test::read_text(json))["world"];
  EXPECT_EQ(w["ranks"], 2);
  EXPECT_EQ(w["sum_checked"], true);
  EXPECT_GT(w["gradient_bytes"].get<int64_t>(), 4 * 4000000);  // bert-tiny: 4.4 M parameters
  EXPECT_GT(w["allreduce_ms"]["median"].get<double>(), 0.0);    // NaN fails
  EXPECT_GT(w["busbw_gb_s"].get<double>(), 0.0);
  EXPECT_GT(w["step_ms_no_overlap"].get<double>(), w["step_ms"].get<double>());
  // Without a launcher there is no world to report on.
  const auto alone = test::run_engine("bench --backend cpu --config bert-tiny --seq 16 --batch 4 --world", "timeout 120");
  EXPECT_NE(alone.exit_code, 0);
  EXPECT_NE(alone.err.find("--world: run the bench under mpirun or srun"), std::string::npos) << alone.err;
}

TEST(DistDropout, AnOffsetShiftsTheMaskAlongTheGlobalBatch) {
  // Elements [0, n) of a site drawn with offset o are elements [o, o + n) of the site drawn whole:
  // an example's mask follows its place in the global batch, not the rank's batch.
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto backend = make_backend("cpu");
  for (int trial = 0; trial < 8; ++trial) {
    const int64_t n = 1 + int64_t(rng() % 500), o = int64_t(rng() % 700);
    const DropoutRng site{rng(), uint32_t(rng() % 64)};
    std::vector<float> ones(static_cast<size_t>(n + o), 1.f), whole(static_cast<size_t>(n + o)), part(static_cast<size_t>(n));
    backend->dropout_forward(Tensor(whole.data(), DType::f32, Device::cpu, {n + o}),
                             Tensor(ones.data(), DType::f32, Device::cpu, {n + o}), 0.5f, site);
    backend->dropout_forward(Tensor(part.data(), DType::f32, Device::cpu, {n}),
                             Tensor(ones.data(), DType::f32, Device::cpu, {n}), 0.5f,
                             DropoutRng{site.seed, site.stream, uint64_t(o)});
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(part[size_t(i)], whole[size_t(o + i)]) << "element " << i << " offset " << o;
      dropped += part[size_t(i)] == 0.f;
    }
    if (n >= 200) EXPECT_GT(dropped, 0);  // p = 0.5 does drop
  }
}

TEST(DistSingleProcess, NeedsNoMpi) {
  // The engine does not link MPI or NCCL ...
  FILE* pipe = popen(("ldd " + test::engine_binary() + " 2>&1").c_str(), "r");
  std::string ldd;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) ldd.append(buf, n);
  pclose(pipe);
  ASSERT_NE(ldd.find("libc.so"), std::string::npos) << ldd;
  EXPECT_EQ(ldd.find("libmpi"), std::string::npos) << ldd;
  EXPECT_EQ(ldd.find("libnccl"), std::string::npos) << ldd;
  // ... and a plain run never loads it: it runs with the library pointed at nothing.
  const fs::path out = fs::temp_directory_path() / ("engine_test_dist_plain_" + unique_suffix());
  const auto plain = test::run_engine("finetune --max-steps 2 --output-dir " + out.string(),
                                      "ENGINE_MPI_LIBRARY=/nonexistent/libengine_mpi.so timeout 120");
  fs::remove_all(out);
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  // A launcher that announces two ranks makes the engine load it, and say so when it cannot.
  const auto two = test::run_engine("finetune --max-steps 2 --output-dir " + out.string(),
                                    "OMPI_COMM_WORLD_SIZE=2 ENGINE_MPI_LIBRARY=/nonexistent/libengine_mpi.so timeout 120");
  fs::remove_all(out);
  EXPECT_NE(two.exit_code, 0);
  EXPECT_NE(two.err.find("a run with 2 ranks"), std::string::npos) << two.err;
  EXPECT_NE(two.err.find("libengine_mpi.so, which could not be loaded"), std::string::npos) << two.err;
}

}  // namespace
}  // namespace engine
