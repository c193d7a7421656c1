// `engine serve`: the TEI request rules (no sockets), the dynamic batcher with a stand-in runner,
// and the real server binary on an ephemeral loopback port queried by a real HTTP client: answers
// equal `engine predict` (question answering too, over contexts of several windows), order under
// concurrency, /health /info /metrics, every error path, a full queue, a slow client, SIGTERM
// during load; and, in process, a failing batch.
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <future>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "engine/model/adapter_files.h"
#include "engine/model/checkpoint.h"
#include "engine/serve/api.h"
#include "engine/serve/batch_queue.h"
#include "engine/serve/server.h"
#include "serve_helpers.h"

namespace engine::test {
namespace {

using nlohmann::json;
using serve::ApiError;
using serve::DynamicBatcher;
using serve::Job;

// ---------------------------------------------------------------- TEI request rules

TEST(ServeApi, ReadsInputsAsTeiDoes) {
  auto r = serve::parse_predict_request(R"({"inputs": "a film"})");
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_FALSE(r.batch);
  EXPECT_EQ(r.inputs[0].a, "a film");
  EXPECT_FALSE(r.inputs[0].b);

  // An array whose first element is a string is ONE input: a single text or a pair, not a batch.
  r = serve::parse_predict_request(R"({"inputs": ["first", "second"]})");
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_FALSE(r.batch);
  EXPECT_EQ(r.inputs[0].a, "first");
  EXPECT_EQ(*r.inputs[0].b, "second");
  r = serve::parse_predict_request(R"({"inputs": ["alone"]})");
  ASSERT_EQ(r.inputs.size(), 1u);
  EXPECT_FALSE(r.inputs[0].b);

  // An array whose first element is an array is a batch of singles and pairs, in order.
  r = serve::parse_predict_request(
      R"({"inputs": [["x"], ["y", "z"], ["w"]], "raw_scores": true, "truncate": true, "truncation_direction": "Left"})");
  EXPECT_TRUE(r.batch);
  ASSERT_EQ(r.inputs.size(), 3u);
  EXPECT_EQ(r.inputs[0].a, "x");
  EXPECT_FALSE(r.inputs[0].b);
  EXPECT_EQ(r.inputs[1].a, "y");
  EXPECT_EQ(*r.inputs[1].b, "z");
  EXPECT_EQ(r.inputs[2].a, "w");
  EXPECT_TRUE(r.raw_scores);
  EXPECT_TRUE(*r.truncate);
  EXPECT_TRUE(r.truncate_left);

  r = serve::parse_predict_request(R"({"inputs": "a", "truncate": null, "unknown_field": 1})");
  EXPECT_FALSE(r.truncate);
  EXPECT_FALSE(r.raw_scores);
  EXPECT_FALSE(r.truncate_left);
}

TEST(ServeApi, RejectsWhatTeiRejectsWith422) {
  const std::vector<std::string> bad = {
      "",                                          // not JSON
      "{\"inputs\": ",                             // truncated JSON
      "[\"a\"]",                                   // not an object
      "{}",                                        // no inputs
      R"({"inputs": 3})",                          // wrong type
      R"({"inputs": null})",                       // wrong type
      R"({"inputs": []})",                         // empty
      R"({"inputs": ["a", "b", "c"]})",            // three strings: neither a pair nor a batch
      R"({"inputs": ["a", 1]})",                   // a pair of a string and a number
      R"({"inputs": [["a"], "b"]})",               // batch element not an array
      R"({"inputs": [["a"], []]})",                // empty batch element
      R"({"inputs": [["a", "b", "c"]]})",          // batch element of three
      R"({"inputs": [[1]]})",                      // batch element of a number
      R"({"inputs": "a", "raw_scores": "yes"})",   // wrong type
      R"({"inputs": "a", "truncate": 1})",         // wrong type
      R"({"inputs": "a", "truncation_direction": "up"})",
  };
  for (const std::string& body : bad) {
    try {
      serve::parse_predict_request(body);
      ADD_FAILURE() << "accepted: " << body;
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status, 422) << body;
      EXPECT_FALSE(std::string(e.what()).empty()) << body;
    }
  }
}

// ---------------------------------------------------------------- the batcher, with a stand-in runner

// A job of `n` inputs of `len` tokens; token ids carry `tag` so a runner can tell jobs apart.
std::shared_ptr<Job> make_job(int n, int len, int32_t tag) {
  auto job = std::make_shared<Job>();
  for (int i = 0; i < n; ++i) {
    TokenizedExample e;
    e.ids.assign(size_t(len), tag);
    e.type_ids.assign(size_t(len), 0);
    e.index = i;
    job->input.examples.push_back(e);
  }
  return job;
}

// Writes each input's own tag back as its "logit": a job that got another's rows would show it.
void echo_runner(std::vector<Job*>& jobs) {
  for (Job* j : jobs)
    for (const TokenizedExample& e : j->input.examples) j->output.logits.push_back({float(e.ids[0])});
}

TEST(ServeBatcher, PacksWithinLimitsAndEachJobGetsItsOwnRows) {
  serve::BatchLimits limits;
  limits.max_batch_tokens = 40;
  limits.max_batch_sequences = 5;
  limits.max_wait = std::chrono::microseconds(2000);
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> batches;  // (tokens, sequences)
  DynamicBatcher b(limits, [&](std::vector<Job*>& jobs) {
    int64_t t = 0, s = 0;
    for (Job* j : jobs) t += j->tokens(), s += j->sequences();
    {
      std::lock_guard<std::mutex> lock(mu);
      batches.push_back({t, s});
    }
    echo_runner(jobs);
  });
  b.start();
  std::mt19937 rng{uint32_t(pick_seed())};
  std::vector<std::shared_ptr<Job>> jobs;
  std::atomic<int> done{0};
  for (int i = 0; i < 60; ++i) {
    auto job = make_job(1 + int(rng() % 3), 1 + int(rng() % 13), int32_t(i));
    job->done = [&](Job&) { ++done; };
    jobs.push_back(job);
    ASSERT_TRUE(b.submit(job));
  }
  b.stop();  // runs everything still queued
  EXPECT_EQ(done.load(), 60);
  int64_t total = 0;
  for (auto [t, s] : batches) {
    EXPECT_LE(t, 40);
    EXPECT_LE(s, 5);
    total += s;
  }
  int64_t expected = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    expected += jobs[i]->sequences();
    EXPECT_TRUE(jobs[i]->error.empty());
    ASSERT_EQ(int64_t(jobs[i]->output.logits.size()), jobs[i]->sequences());
    for (const auto& row : jobs[i]->output.logits) EXPECT_EQ(row[0], float(i));
  }
  EXPECT_EQ(total, expected);
  EXPECT_LT(batches.size(), jobs.size()) << "no two jobs ever shared a batch";
  // A job larger than any batch is refused outright, not queued forever.
  EXPECT_THROW(b.submit(make_job(6, 1, 0)), Error);
}

TEST(ServeBatcher, AFailingBatchFailsOnlyItsJobs) {
  serve::BatchLimits limits;
  limits.max_batch_tokens = 30;
  limits.max_wait = std::chrono::microseconds(500);
  std::mutex mu;
  std::set<const Job*> in_failed_batch;
  // Fails every batch holding an input tagged 7.
  DynamicBatcher b(limits, [&](std::vector<Job*>& jobs) {
    for (Job* j : jobs)
      if (j->input.examples[0].ids[0] == 7) {
        std::lock_guard<std::mutex> lock(mu);
        for (Job* k : jobs) in_failed_batch.insert(k);
        throw Error("the model fell over");
      }
    echo_runner(jobs);
  });
  b.start();
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 40; ++i) {
    jobs.push_back(make_job(1, 4, i % 8));
    ASSERT_TRUE(b.submit(jobs.back()));
  }
  b.stop();
  int failed = 0;
  for (const auto& j : jobs) {
    const bool in_failed = in_failed_batch.count(j.get()) > 0;
    EXPECT_EQ(!j->error.empty(), in_failed);
    if (in_failed) {
      ++failed;
      EXPECT_NE(j->error.find("the model fell over"), std::string::npos);
    } else {
      ASSERT_EQ(j->output.logits.size(), 1u);
      EXPECT_EQ(j->output.logits[0][0], float(j->input.examples[0].ids[0]));
    }
  }
  EXPECT_GE(failed, 5);               // the five jobs tagged 7 at least
  EXPECT_LT(failed, int(jobs.size()));  // and not everything
}

TEST(ServeBatcher, RefusesWhenFullThenAnswersAllOnStop) {
  serve::BatchLimits limits;
  limits.max_queued = 3;
  limits.max_wait = std::chrono::microseconds(0);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  DynamicBatcher b(limits, [&](std::vector<Job*>& jobs) {
    released.wait_for(std::chrono::seconds(60));  // bounded: the test releases it below
    echo_runner(jobs);
  });
  b.start();
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 3; ++i) {
    jobs.push_back(make_job(1, 2, i));
    ASSERT_TRUE(b.submit(jobs.back()));
  }
  EXPECT_EQ(b.pending_requests(), 3);
  EXPECT_FALSE(b.submit(make_job(1, 2, 9)));  // waiting or running: three, the limit
  release.set_value();
  b.stop();
  for (size_t i = 0; i < jobs.size(); ++i) {
    ASSERT_EQ(jobs[i]->output.logits.size(), 1u);
    EXPECT_EQ(jobs[i]->output.logits[0][0], float(i));
  }
  EXPECT_EQ(b.pending_requests(), 0);
  EXPECT_FALSE(b.submit(make_job(1, 2, 0)));  // stopped
}

// ---------------------------------------------------------------- models and references

// Tiny random models over the synthetic vocabulary: classify (labels neg/pos), regress (one
// output), tokens (three tags), qa (start/end logits), and sentences of the synthetic task to send them.
struct Fixture {
  fs::path root;
  SyntheticTask task;
  std::vector<std::string> sentences;
  fs::path classify, regress, tokens, qa;
  ~Fixture() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};

void save_model(const SyntheticTask& task, const fs::path& dir, int64_t labels, Head head, uint64_t seed) {
  if (head == Head::sequence_classification) return save_tiny_model(task, dir, labels, seed);
  fs::create_directories(dir);
  {
    std::ofstream vocab(dir / "vocab.txt");
    for (const std::string& w : task.vocab) vocab << w << "\n";
  }
  BertConfig c;
  c.vocab_size = int64_t(task.vocab.size());
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 64;
  c.num_labels = labels;
  if (head == Head::token_classification) c.id2label = {{0, "O"}, {1, "B-X"}, {2, "I-X"}};
  auto backend = make_backend("cpu");
  BertModel model(*backend, c, ModelOptions{head});
  model.init_weights(seed);
  SaveOptions so;
  so.vocab_path = (dir / "vocab.txt").string();
  save_pretrained(model, dir.string(), so);
}

const Fixture& fixture() {
  static Fixture f = [] {
    Fixture x;
    x.root = fs::temp_directory_path() / ("engine_serve_models_" + unique_suffix());
    x.task = SyntheticTask::make(pick_seed() % 100000, 10, 64, 20);
    for (const auto& e : x.task.dev) x.sentences.push_back(x.task.text(e));
    x.classify = x.root / "classify";
    x.regress = x.root / "regress";
    x.tokens = x.root / "tokens";
    x.qa = x.root / "qa";
    const uint64_t seed = pick_seed();
    save_model(x.task, x.classify, 2, Head::sequence_classification, seed);
    save_model(x.task, x.regress, 1, Head::sequence_classification, seed + 1);
    save_model(x.task, x.tokens, 3, Head::token_classification, seed + 2);
    save_model(x.task, x.qa, 2, Head::question_answering, seed + 3);
    return x;
  }();
  return f;
}

// `engine predict` on these lines (a tab separates a pair; qa: JSON objects): one JSON object per line.
std::vector<json> engine_predict(const fs::path& model, const std::vector<std::string>& lines,
                                 const std::string& args = "") {
  const fs::path in = fs::temp_directory_path() / ("engine_serve_lines_" + unique_suffix());
  {
    std::ofstream out(in);
    for (const std::string& l : lines) out << l << "\n";
  }
  const std::string cmd = engine_binary() + " predict --quiet --model " + model.string() + " " + args + " < " + in.string();
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string text;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) text.append(buf, n);
  EXPECT_EQ(pclose(pipe), 0) << cmd;
  fs::remove(in);
  std::vector<json> rows;
  std::istringstream s(text);
  for (std::string line; std::getline(s, line);) rows.push_back(json::parse(line));
  EXPECT_EQ(rows.size(), lines.size());
  return rows;
}

// {"label": score} of one answer; also checks it lists every label once, highest score first.
std::map<std::string, double> scores_of(const json& answer) {
  std::map<std::string, double> m;
  double last = INFINITY;
  for (const json& p : answer) {
    const double s = p.at("score").get<double>();
    EXPECT_LE(s, last) << answer.dump();
    last = s;
    EXPECT_TRUE(m.emplace(p.at("label").get<std::string>(), s).second) << answer.dump();
  }
  return m;
}

std::string batch_body(const std::vector<std::string>& texts, bool raw) {
  json inputs = json::array();
  for (const std::string& t : texts) {
    const size_t tab = t.find('\t');
    inputs.push_back(tab == std::string::npos ? json::array({t}) : json::array({t.substr(0, tab), t.substr(tab + 1)}));
  }
  return json{{"inputs", inputs}, {"raw_scores", raw}}.dump();
}

void expect_classify_matches(const json& answer, const json& reference, bool raw) {
  std::map<std::string, double> got = scores_of(answer);
  ASSERT_EQ(got.size(), 2u);
  const json& want = reference.at(raw ? "logits" : "probabilities");
  EXPECT_NEAR(got.at("neg"), want[0].get<double>(), 1e-6) << answer.dump() << " vs " << reference.dump();
  EXPECT_NEAR(got.at("pos"), want[1].get<double>(), 1e-6) << answer.dump() << " vs " << reference.dump();
}

ServerProcess start_server(const fs::path& model, const std::vector<std::string>& args = {}) {
  return ServerProcess(model.string(), args);
}

// ---------------------------------------------------------------- the real server

TEST(ServeHttp, AnswersEqualEnginePredict) {
  const Fixture& f = fixture();
  std::vector<std::string> lines;  // singles, and pairs of two sentences
  for (size_t i = 0; i < 12; ++i) lines.push_back(f.sentences[i]);
  for (size_t i = 12; i < 20; ++i) lines.push_back(f.sentences[i] + "\t" + f.sentences[i + 20]);
  {
    const std::vector<json> want = engine_predict(f.classify, lines);
    ServerProcess s(f.classify.string(), {});
    ASSERT_TRUE(s.wait_ready()) << s.log();
    HttpClient c(s.port());
    for (bool raw : {true, false}) {
      HttpResult r = c.post("/predict", batch_body(lines, raw));  // one batch request
      ASSERT_EQ(r.status, 200) << r.body;
      json got = json::parse(r.body);
      ASSERT_EQ(got.size(), lines.size());
      for (size_t i = 0; i < lines.size(); ++i) expect_classify_matches(got[i], want[i], raw);
    }
    // One request per input: a string, or a pair as ["a", "b"]; the answer is not nested.
    for (size_t i = 0; i < lines.size(); ++i) {
      const size_t tab = lines[i].find('\t');
      json inputs = tab == std::string::npos ? json(lines[i]) : json::array({lines[i].substr(0, tab), lines[i].substr(tab + 1)});
      HttpResult r = c.post("/predict", json{{"inputs", inputs}, {"raw_scores", true}}.dump());
      ASSERT_EQ(r.status, 200) << r.body;
      expect_classify_matches(json::parse(r.body), want[i], true);
    }
  }
  {
    const std::vector<json> want = engine_predict(f.regress, lines);
    ServerProcess s(f.regress.string(), {});
    ASSERT_TRUE(s.wait_ready()) << s.log();
    HttpResult r = HttpClient(s.port()).post("/predict", batch_body(lines, false));
    ASSERT_EQ(r.status, 200) << r.body;
    json got = json::parse(r.body);
    for (size_t i = 0; i < lines.size(); ++i) {
      ASSERT_EQ(got[i].size(), 1u);
      EXPECT_NEAR(got[i][0].at("score").get<double>(), want[i].at("value").get<double>(), 1e-6);
    }
  }
  {
    std::vector<std::string> texts(f.sentences.begin(), f.sentences.begin() + 12);
    const std::vector<json> want = engine_predict(f.tokens, texts);
    ServerProcess s(f.tokens.string(), {});
    ASSERT_TRUE(s.wait_ready()) << s.log();
    HttpResult r = HttpClient(s.port()).post("/predict", batch_body(texts, false));
    ASSERT_EQ(r.status, 200) << r.body;
    json got = json::parse(r.body);
    for (size_t i = 0; i < texts.size(); ++i) {
      std::istringstream words(texts[i]);
      std::vector<std::string> tags;
      size_t k = 0;
      for (std::string w; words >> w; ++k) {
        ASSERT_LT(k, got[i].size());
        EXPECT_EQ(got[i][k].at("word"), w);
        tags.push_back(got[i][k].at("label"));
      }
      EXPECT_EQ(json(tags), want[i].at("tags"));
    }
  }
}

TEST(ServeHttp, ConcurrentClientsEachGetTheirOwnAnswers) {
  const Fixture& f = fixture();
  const std::vector<std::string> pool(f.sentences.begin(), f.sentences.begin() + 40);
  const std::vector<json> want = engine_predict(f.classify, pool);
  ServerProcess s(f.classify.string(), {"--max-wait-us", "5000", "--http-threads", "4"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  const uint64_t seed = pick_seed();
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  std::vector<std::string> failures(16);
  for (int t = 0; t < 16; ++t) {
    clients.emplace_back([&, t] {
      std::mt19937 rng{uint32_t(seed + uint64_t(t))};
      HttpClient c(s.port());
      for (int k = 0; k < 8; ++k) {
        std::vector<size_t> mine;
        for (size_t n = 1 + rng() % 3; mine.size() < n;) mine.push_back(rng() % pool.size());
        std::vector<std::string> texts;
        for (size_t i : mine) texts.push_back(pool[i]);
        HttpResult r = c.post("/predict", batch_body(texts, true));
        if (r.status != 200) {
          failures[size_t(t)] = "status " + std::to_string(r.status) + " " + r.body + r.error;
          return;
        }
        json got = json::parse(r.body);
        if (got.size() != mine.size()) {
          failures[size_t(t)] = "answers: " + r.body;
          return;
        }
        for (size_t j = 0; j < mine.size(); ++j) {
          std::map<std::string, double> sc = scores_of(got[j]);
          const json& z = want[mine[j]].at("logits");
          if (std::fabs(sc["neg"] - z[0].get<double>()) > 1e-6 || std::fabs(sc["pos"] - z[1].get<double>()) > 1e-6) {
            failures[size_t(t)] = "input " + std::to_string(mine[j]) + " answered " + got[j].dump() + ", expected " + z.dump();
            return;
          }
        }
        ++answered;
      }
    });
  }
  for (auto& c : clients) c.join();
  for (int t = 0; t < 16; ++t) EXPECT_TRUE(failures[size_t(t)].empty()) << "client " << t << ": " << failures[size_t(t)];
  EXPECT_EQ(answered.load(), 16 * 8);
}

// Prometheus text: "# HELP/TYPE" lines, and "name{labels} value" samples with numeric values.
std::map<std::string, double> parse_prometheus(const std::string& text) {
  std::map<std::string, double> samples;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      EXPECT_TRUE(line.rfind("# HELP engine_", 0) == 0 || line.rfind("# TYPE engine_", 0) == 0) << line;
      continue;
    }
    const size_t space = line.rfind(' ');
    EXPECT_NE(space, std::string::npos) << line;
    const std::string value = line.substr(space + 1);
    char* end = nullptr;
    const double v = value == "+Inf" ? INFINITY : std::strtod(value.c_str(), &end);
    EXPECT_TRUE(value == "+Inf" || (end && *end == '\0')) << line;
    EXPECT_EQ(line.rfind("engine_", 0), 0u) << line;
    samples[line.substr(0, space)] = v;
  }
  return samples;
}

// --adapter: a LoRA adapter (random B, so that it moves the logits) served on its base answers what
// `engine predict --adapter` answers, and not what the base alone answers.
TEST(ServeHttp, AdapterAnswersEqualEnginePredictWithTheAdapter) {
  const Fixture& f = fixture();
  const fs::path adapter = f.root / ("adapter_" + unique_suffix());
  {
    LoraConfig lora;
    lora.r = 4;
    lora.alpha = 8;
    lora.target_modules = {"query", "value", "output.dense"};
    auto backend = make_backend("cpu-ref");
    ModelOptions mo;
    mo.lora = lora;
    BertModel model(*backend, read_model_config(f.classify.string()), mo);
    load_weights(model, f.classify.string(), false, 0);
    std::mt19937_64 rng(pick_seed());
    std::normal_distribution<float> normal(0.f, 0.5f);
    for (const ParamInfo& p : model.params().list()) {
      if (p.name.find(".lora_B.") == std::string::npos) continue;
      std::vector<float> b(size_t(p.numel));
      for (float& v : b) v = normal(rng);
      model.params().set_host(*backend, p.name, b);
    }
    fs::create_directories(adapter);
    write_adapter_files(model, adapter.string(), f.classify.string());
  }
  const std::vector<std::string> lines(f.sentences.begin(), f.sentences.begin() + 10);
  const std::vector<json> want = engine_predict(f.classify, lines, "--adapter " + adapter.string());
  const std::vector<json> base = engine_predict(f.classify, lines);
  ASSERT_EQ(want.size(), lines.size());
  ASSERT_EQ(base.size(), lines.size());
  ServerProcess s(f.classify.string(), {"--adapter", adapter.string()});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  HttpResult r = HttpClient(s.port()).post("/predict", batch_body(lines, true));
  ASSERT_EQ(r.status, 200) << r.body;
  const json got = json::parse(r.body);
  ASSERT_EQ(got.size(), lines.size());
  double moved = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    expect_classify_matches(got[i], want[i], true);
    const json& a = want[i].at("logits");
    const json& b = base[i].at("logits");
    for (size_t k = 0; k < a.size(); ++k) moved = std::max(moved, std::fabs(a[k].get<double>() - b[k].get<double>()));
  }
  EXPECT_GT(moved, 1e-3) << "the adapter should change the logits";
}

TEST(ServeHttp, HealthInfoMetricsParse) {
  const Fixture& f = fixture();
  ServerProcess s(f.classify.string(), {"--max-batch-tokens", "4096"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  HttpClient c(s.port());
  EXPECT_EQ(c.get("/health").status, 200);
  HttpResult info = c.get("/info");
  ASSERT_EQ(info.status, 200);
  json i = json::parse(info.body);
  EXPECT_EQ(i.at("task"), "classify");
  EXPECT_EQ(i.at("labels"), json::array({"neg", "pos"}));
  EXPECT_EQ(i.at("max_input_length"), 64);
  EXPECT_EQ(i.at("max_batch_tokens"), 4096);
  EXPECT_EQ(i.at("backend"), "cpu");
  EXPECT_EQ(i.at("precision"), "f32");
  EXPECT_EQ(i.at("model_id"), "classify");
  EXPECT_TRUE(i.at("version").is_string());
  for (int k = 0; k < 5; ++k) ASSERT_EQ(c.post("/predict", json{{"inputs", f.sentences[size_t(k)]}}.dump()).status, 200);
  ASSERT_EQ(c.post("/predict", "{").status, 422);
  HttpResult m = c.get("/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.content_type.find("text/plain"), std::string::npos);
  std::map<std::string, double> p = parse_prometheus(m.body);
  EXPECT_EQ(p["engine_http_requests_total{path=\"/predict\",code=\"200\"}"], 5);
  EXPECT_EQ(p["engine_http_requests_total{path=\"/predict\",code=\"422\"}"], 1);
  EXPECT_EQ(p["engine_http_requests_total{path=\"/info\",code=\"200\"}"], 1);
  EXPECT_EQ(p["engine_queue_depth"], 0);
  EXPECT_EQ(p["engine_request_seconds_count"], 5);
  EXPECT_EQ(p["engine_batch_tokens_count"], 5);  // five requests (the warm-up batch is not counted)
  EXPECT_EQ(p["engine_inference_seconds_count"], 5);
  EXPECT_EQ(p["engine_queue_seconds_bucket{le=\"+Inf\"}"], 5);
  // Buckets are cumulative.
  double last = 0;
  for (const auto& [k, v] : p)
    if (k.rfind("engine_batch_sequences_bucket", 0) == 0 && k.find("+Inf") == std::string::npos) last = std::max(last, v);
  EXPECT_LE(last, p["engine_batch_sequences_bucket{le=\"+Inf\"}"]);
}

// Sends raw bytes on a fresh connection and returns what comes back until the server closes it
// (at most timeout_s).
std::string raw_exchange(int port, const std::string& bytes, double timeout_s, double* seconds = nullptr) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{long(timeout_s), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(send(fd, bytes.data(), bytes.size(), 0), ssize_t(bytes.size()));
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) out.append(buf, size_t(n));
  if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  close(fd);
  return out;
}

void expect_error(const HttpResult& r, int status, const std::string& part = "") {
  EXPECT_EQ(r.status, status) << r.body << r.error;
  json j = json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.body;
  EXPECT_TRUE(j.at("error").is_string());
  EXPECT_TRUE(j.at("error_type").is_string());
  if (!part.empty()) EXPECT_NE(r.body.find(part), std::string::npos) << r.body;
}

TEST(ServeHttp, ErrorPaths) {
  const Fixture& f = fixture();
  ServerProcess s(f.classify.string(),
                  {"--payload-limit", "3000", "--max-client-batch-size", "4", "--max-input-length", "12"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  HttpClient c(s.port());
  expect_error(c.post("/predict", "{\"inputs\": "), 422, "not valid JSON");
  expect_error(c.post("/predict", "{\"inputs\": 5}"), 422, "inputs");
  expect_error(c.post("/predict", "{\"inputs\": [\"a\", \"b\", \"c\"]}"), 422, "3 elements");
  expect_error(c.post("/predict", "{\"inputs\": \"\"}"), 422, "empty");
  expect_error(c.post("/predict", "{\"inputs\": []}"), 422, "empty");
  expect_error(c.post("/predict", "{\"inputs\": [[\"a\"], [\"\", \"b\"]]}"), 422, "empty");
  expect_error(c.post("/predict", "{\"inputs\": \"a\", \"raw_scores\": 1}"), 422, "raw_scores");
  // Oversized payload: 413 before the body is read, and the next connection works.
  expect_error(c.post("/predict", json{{"inputs", std::string(5000, 'a')}}.dump()), 413, "payload");
  // Too many inputs.
  expect_error(c.post("/predict", batch_body({"a", "b", "c", "d", "e"}, false)), 413, "batch size 5");
  // Too long: 413 unless truncate (right, or left for a single text).
  const std::string long_text = f.sentences[0] + " " + f.sentences[1] + " " + f.sentences[2];
  expect_error(c.post("/predict", json{{"inputs", long_text}}.dump()), 413, "truncate");
  EXPECT_EQ(c.post("/predict", json{{"inputs", long_text}, {"truncate", true}}.dump()).status, 200);
  EXPECT_EQ(c.post("/predict", json{{"inputs", long_text}, {"truncate", true}, {"truncation_direction", "left"}}.dump()).status, 200);
  expect_error(c.post("/predict", json{{"inputs", {long_text, "x"}}, {"truncate", true}, {"truncation_direction", "left"}}.dump()), 422, "pair");
  // Truncating right answers what the first max-input-length tokens answer.
  {
    std::istringstream in(long_text);
    std::string w, first10;
    for (int k = 0; k < 10 && in >> w; ++k) first10 += (k ? " " : "") + w;
    HttpResult a = c.post("/predict", json{{"inputs", long_text}, {"truncate", true}, {"raw_scores", true}}.dump());
    HttpResult b = c.post("/predict", json{{"inputs", first10}, {"raw_scores", true}}.dump());
    EXPECT_EQ(a.body, b.body);
  }
  // Paths and methods.
  expect_error(c.get("/nope"), 404);
  expect_error(c.get("/predict"), 405);
  expect_error(c.post("/health", ""), 405);
  // Malformed HTTP.
  const std::string garbage = raw_exchange(s.port(), "NOT HTTP AT ALL\r\n\r\n", 10);
  EXPECT_EQ(garbage.rfind("HTTP/1.1 400", 0), 0u) << garbage;
  // The server survived all of it.
  EXPECT_EQ(c.post("/predict", json{{"inputs", "a short one"}}.dump()).status, 200);
  EXPECT_TRUE(s.alive());
}

TEST(ServeHttp, SlowClientIsDisconnectedOthersAreServed) {
  const Fixture& f = fixture();
  ServerProcess s(f.classify.string(), {"--read-timeout", "0.5"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  // A client that announces 100 bytes and sends 10, then nothing.
  std::future<std::pair<std::string, double>> slow = std::async(std::launch::async, [&] {
    double seconds = 0;
    std::string out = raw_exchange(s.port(), "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\":", 20, &seconds);
    return std::make_pair(out, seconds);
  });
  // A new connection per request: on a loaded machine a kept-alive connection may sit idle past
  // the short read timeout between two requests and be closed, which is this test's subject, not a
  // failure of the others' service.
  for (int k = 0; k < 3; ++k)
    EXPECT_EQ(HttpClient(s.port()).post("/predict", json{{"inputs", f.sentences[size_t(k)]}}.dump()).status, 200);
  auto [answer, seconds] = slow.get();
  EXPECT_EQ(answer, "");        // closed without an answer
  EXPECT_GE(seconds, 0.4);      // after the read timeout
  EXPECT_LT(seconds, 15);       // not the client's own 20 s limit
  EXPECT_EQ(HttpClient(s.port()).get("/health").status, 200);
}

TEST(ServeHttp, BurstFillsTheQueueSome429NoneLostOrMixedUp) {
  const Fixture& f = fixture();
  const std::vector<json> want = engine_predict(f.classify, std::vector<std::string>(f.sentences.begin(), f.sentences.begin() + 12));
  // Three pending requests at most; the batcher waits up to 1 s to fill a batch, so a burst of
  // twelve finds the queue full.
  ServerProcess s(f.classify.string(), {"--max-concurrent-requests", "3", "--max-wait-us", "1000000"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  std::atomic<int> rejected{0};
  std::vector<std::string> failures(12);
  std::vector<std::thread> clients;
  for (int t = 0; t < 12; ++t) {
    clients.emplace_back([&, t] {
      HttpClient c(s.port());
      for (int attempt = 0; attempt < 300; ++attempt) {  // at most ~30 s of retries
        HttpResult r = c.post("/predict", json{{"inputs", f.sentences[size_t(t)]}, {"raw_scores", true}}.dump());
        if (r.status == 429) {
          ++rejected;
          if (r.retry_after != "1") failures[size_t(t)] = "429 without Retry-After: 1";
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          continue;
        }
        if (r.status != 200) {
          failures[size_t(t)] = "status " + std::to_string(r.status) + " " + r.body + r.error;
          return;
        }
        std::map<std::string, double> sc = scores_of(json::parse(r.body));
        const json& z = want[size_t(t)].at("logits");
        if (std::fabs(sc["neg"] - z[0].get<double>()) > 1e-6 || std::fabs(sc["pos"] - z[1].get<double>()) > 1e-6)
          failures[size_t(t)] = "mixed up: " + r.body;
        return;
      }
      failures[size_t(t)] = "still refused after 300 attempts";
    });
  }
  for (auto& c : clients) c.join();
  for (int t = 0; t < 12; ++t) EXPECT_TRUE(failures[size_t(t)].empty()) << "client " << t << ": " << failures[size_t(t)];
  EXPECT_GE(rejected.load(), 1);
  std::map<std::string, double> p = parse_prometheus(HttpClient(s.port()).get("/metrics").body);
  EXPECT_EQ(p["engine_http_requests_total{path=\"/predict\",code=\"429\"}"], rejected.load());
  EXPECT_EQ(p["engine_http_requests_total{path=\"/predict\",code=\"200\"}"], 12);
}

TEST(ServeHttp, SigtermAnswersRequestsInFlightThenExitsZero) {
  const Fixture& f = fixture();
  const std::vector<json> want = engine_predict(f.classify, std::vector<std::string>(f.sentences.begin(), f.sentences.begin() + 6));
  // The batcher would wait a minute to fill a batch: the requests are still queued at SIGTERM, and
  // the shutdown must run them at once rather than wait.
  ServerProcess s(f.classify.string(), {"--max-wait-us", "60000000"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  std::vector<std::future<HttpResult>> inflight;
  for (int t = 0; t < 6; ++t)
    inflight.push_back(std::async(std::launch::async, [&, t] {
      return HttpClient(s.port()).post("/predict", json{{"inputs", f.sentences[size_t(t)]}, {"raw_scores", true}}.dump());
    }));
  HttpClient probe(s.port());
  double pending = 0;
  for (int k = 0; k < 600 && pending < 6; ++k) {  // at most 30 s
    pending = parse_prometheus(probe.get("/metrics").body)["engine_pending_requests"];
    if (pending < 6) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(pending, 6) << "the requests never all reached the queue";
  const auto start = std::chrono::steady_clock::now();
  s.signal(SIGTERM);
  for (int t = 0; t < 6; ++t) {
    HttpResult r = inflight[size_t(t)].get();
    ASSERT_EQ(r.status, 200) << r.body << r.error;
    std::map<std::string, double> sc = scores_of(json::parse(r.body));
    EXPECT_NEAR(sc["neg"], want[size_t(t)].at("logits")[0].get<double>(), 1e-6);
  }
  EXPECT_EQ(s.wait_exit(30), 0) << s.log();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 30);
  EXPECT_NE(s.log().find("shutting down"), std::string::npos) << s.log();
  EXPECT_EQ(HttpClient(s.port(), 5).get("/health").status, -1);  // no longer listening
}

// ---------------------------------------------------------------- question answering

// A question (the first words of a sentence) and a context of one to five sentences: at
// --max-input-length 24 the longer contexts need several windows.
struct QaCase {
  std::string question, context;
};

std::vector<QaCase> qa_cases(const Fixture& f) {
  std::vector<QaCase> cases;
  for (size_t i = 0; i < 8; ++i) {
    std::istringstream words(f.sentences[i]);
    std::string w, question;
    for (int k = 0; k < 3 && words >> w; ++k) question += (k ? " " : "") + w;
    std::string context;
    for (size_t k = 0; k <= i % 5; ++k) context += (k ? " " : "") + f.sentences[20 + i * 5 + k];
    cases.push_back({question, context});
  }
  return cases;
}

// `engine predict --task qa` from standard input on the cases, with these flags.
std::vector<json> qa_predict(const Fixture& f, const std::vector<QaCase>& cases, const std::string& args) {
  std::vector<std::string> lines;
  for (const QaCase& c : cases) lines.push_back(json{{"question", c.question}, {"context", c.context}}.dump());
  return engine_predict(f.qa, lines, args);
}

json qa_pair(const QaCase& c) { return json::array({c.question, c.context}); }

// The server's answer is predict's, less the id: same text and offsets, same score.
std::string qa_mismatch(const json& got, const json& want) {
  if (!got.is_object()) return "not an answer: " + got.dump();
  bool same = got.value("answer", "?") == want.at("answer").get<std::string>() &&
              got.value("start", -1) == want.at("start") && got.value("end", -1) == want.at("end") &&
              got.contains("score") &&
              std::fabs(got["score"].get<double>() - want.at("score").get<double>()) <= 1e-6 &&
              got.contains("null_odds") == want.contains("null_odds");
  if (same && want.contains("null_odds"))
    same = std::fabs(got["null_odds"].get<double>() - want["null_odds"].get<double>()) <= 1e-6;
  return same ? "" : got.dump() + " != predict's " + want.dump();
}

TEST(ServeHttp, QaAnswersEqualEnginePredictOverSeveralWindows) {
  const Fixture& f = fixture();
  const std::vector<QaCase> cases = qa_cases(f);
  const std::vector<json> want = qa_predict(f, cases, "--max-length 24 --doc-stride 8");
  ASSERT_EQ(want.size(), cases.size());
  // The cases do need several windows per context (else this would not test them).
  {
    SquadFile file;
    for (size_t i = 0; i < cases.size(); ++i)
      file.examples.push_back({std::to_string(i), cases[i].question, cases[i].context, {}});
    const tokenizer::BertTokenizer tok = tokenizer::BertTokenizer::from_model_dir(f.qa.string());
    std::vector<int> windows(cases.size());
    for (const QaFeature& w : make_qa_windows(file, tok, 24, 8, 1).features) ++windows[size_t(w.example)];
    EXPECT_GE(*std::max_element(windows.begin(), windows.end()), 3);
  }
  // A random model still picks spans: not every answer is the "nothing qualifies" one.
  EXPECT_TRUE(std::any_of(want.begin(), want.end(), [](const json& a) { return a.at("answer") != "empty"; }));

  ServerProcess s(f.qa.string(), {"--max-input-length", "24", "--doc-stride", "8", "--max-wait-us", "20000",
                                  "--http-threads", "4"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  HttpClient c(s.port());
  json info = json::parse(c.get("/info").body);
  EXPECT_EQ(info.at("task"), "qa");
  EXPECT_EQ(info.at("max_input_length"), 24);
  EXPECT_EQ(info.at("qa").at("doc_stride"), 8);

  // One batch request: answers in input order.
  json batch = json::array();
  for (const QaCase& q : cases) batch.push_back(qa_pair(q));
  HttpResult r = c.post("/predict", json{{"inputs", batch}}.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json got = json::parse(r.body);
  ASSERT_TRUE(got.is_array() && got.size() == cases.size()) << r.body;
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(qa_mismatch(got[i], want[i]), "") << "input " << i;

  // One pair per request, from four clients at once in different orders: the batcher packs the
  // windows of several requests together, and each request gets its own answer.
  std::vector<std::string> failures(4);
  std::vector<std::thread> clients;
  for (size_t t = 0; t < 4; ++t)
    clients.emplace_back([&, t] {
      HttpClient mine(s.port());
      for (size_t k = 0; k < 2 * cases.size(); ++k) {
        const size_t i = (k * (t + 1) + t) % cases.size();
        HttpResult one = mine.post("/predict", json{{"inputs", qa_pair(cases[i])}}.dump());
        const std::string bad = one.status != 200 ? "status " + std::to_string(one.status) + " " + one.body + one.error
                                                  : qa_mismatch(json::parse(one.body), want[i]);
        if (!bad.empty()) {
          failures[t] = "input " + std::to_string(i) + ": " + bad;
          return;
        }
      }
    });
  for (auto& t : clients) t.join();
  for (size_t t = 0; t < 4; ++t) EXPECT_EQ(failures[t], "") << "client " << t;

  // A QA model takes [question, context] pairs only.
  expect_error(c.post("/predict", json{{"inputs", cases[0].question}}.dump()), 422, "[question, context] pair");
  expect_error(c.post("/predict", json{{"inputs", json::array({cases[0].question})}}.dump()), 422, "pair");
  const json mixed = json::array({qa_pair(cases[0]), json::array({"alone"})});
  expect_error(c.post("/predict", json{{"inputs", mixed}}.dump()), 422, "input 1 is a single text");
  const json blank_context = json::array({cases[0].question, " \t"});
  expect_error(c.post("/predict", json{{"inputs", blank_context}}.dump()), 422, "empty context");
  // A question that leaves the context no room in a 24-token window.
  const json long_question = json::array({f.sentences[0] + " " + f.sentences[1] + " " + f.sentences[2], "a context"});
  expect_error(c.post("/predict", json{{"inputs", long_question}}.dump()), 422, "'input 0': the question");
  EXPECT_EQ(c.post("/predict", json{{"inputs", qa_pair(cases[1])}}.dump()).status, 200);  // still serving
}

// SQuAD v2 answers (null_odds in each answer, "" where the null score wins by more than the
// threshold) as predict gives them with the same flags, and a request with more windows than one
// batch holds is a 413.
TEST(ServeHttp, QaVersion2AndRequestsLargerThanABatch) {
  const Fixture& f = fixture();
  const std::vector<QaCase> cases = qa_cases(f);
  const std::string flags =
      "--max-length 24 --version-2-with-negative --doc-stride 8 --n-best-size 5 --max-answer-length 6";
  // A threshold between the cases' null odds, so that some answers are null and some are not.
  std::vector<double> odds;
  for (const json& a : qa_predict(f, cases, flags)) odds.push_back(a.at("null_odds").get<double>());
  ASSERT_EQ(odds.size(), cases.size());
  std::sort(odds.begin(), odds.end());
  std::ostringstream threshold;
  threshold.precision(9);
  threshold << (odds[3] + odds[4]) / 2;
  const std::vector<json> want = qa_predict(f, cases, flags + " --null-score-diff-threshold " + threshold.str());
  ASSERT_EQ(want.size(), cases.size());
  EXPECT_TRUE(std::any_of(want.begin(), want.end(), [](const json& a) { return a.at("answer") == ""; }));
  EXPECT_TRUE(std::any_of(want.begin(), want.end(), [](const json& a) { return a.at("answer") != ""; }));

  ServerProcess s(f.qa.string(), {"--max-input-length", "24", "--version-2-with-negative", "--doc-stride", "8",
                                  "--n-best-size", "5", "--max-answer-length", "6", "--null-score-diff-threshold",
                                  threshold.str(), "--max-batch-requests", "16"});
  ASSERT_TRUE(s.wait_ready()) << s.log();
  HttpClient c(s.port());
  for (size_t i = 0; i < cases.size(); ++i) {
    HttpResult r = c.post("/predict", json{{"inputs", qa_pair(cases[i])}}.dump());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(qa_mismatch(json::parse(r.body), want[i]), "") << "input " << i;
  }
  // Forty sentences of context make more windows than --max-batch-requests 16.
  std::string context;
  for (size_t k = 0; k < 40; ++k) context += (k ? " " : "") + f.sentences[k];
  expect_error(c.post("/predict", json{{"inputs", json::array({"a question", context})}}.dump()), 413, "windows");
  EXPECT_TRUE(s.alive());
}

TEST(ServeHttp, BadModelOrPortIsAClearErrorAndNonZeroExit) {
  const Fixture& f = fixture();
  CommandResult r = run_engine("serve --model " + (f.root / "missing").string() + " --port 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
  r = run_engine("serve --model " + f.classify.string() + " --host not-an-ip --port 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("not an IP address"), std::string::npos) << r.err;
  r = run_engine("serve --model " + f.classify.string() + " --max-input-length 65 --port 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("max_position_embeddings"), std::string::npos) << r.err;
}

// ---------------------------------------------------------------- in process: a failing batch

TEST(ServeInProcess, AFailingBatchAnswers500OnlyToItsRequestsAndServingGoesOn) {
  const Fixture& f = fixture();
  serve::ServeOptions o;
  o.model_dir = f.classify.string();
  o.http.port = 0;
  o.http.handle_signals = false;
  o.batch.max_wait = std::chrono::microseconds(0);
  // Batches holding an input of exactly 3 words (5 tokens) fail, as a model that falls over would.
  auto wrap = [](std::vector<Job*>& jobs, const DynamicBatcher::Runner& model) {
    for (Job* j : jobs)
      for (const TokenizedExample& e : j->input.examples)
        if (e.ids.size() == 5) throw Error("injected failure");
    model(jobs);
  };
  std::ostringstream log;
  serve::Server server(o, log, wrap);
  std::future<int> code = std::async(std::launch::async, [&] { return server.run(); });
  // However the test ends, the server stops (before the future's destructor waits for run()), and
  // a server that does not stop ends the test process instead of hanging it.
  struct StopAtExit {
    serve::Server& server;
    std::future<int>& code;
    ~StopAtExit() {
      server.stop();
      if (code.valid() && code.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
        std::fprintf(stderr, "the in-process server did not stop within 30 s\n");
        std::_Exit(1);
      }
    }
  } stop_at_exit{server, code};
  for (int k = 0; k < 600 && !server.ready(); ++k) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(server.ready());
  HttpClient c(server.port());
  const std::string good = f.sentences[0];
  EXPECT_EQ(c.post("/predict", json{{"inputs", good}}.dump()).status, 200);
  expect_error(c.post("/predict", json{{"inputs", "one two three"}}.dump()), 500, "injected failure");
  expect_error(c.post("/predict", batch_body({good, "one two three"}, false)), 500, "injected failure");
  EXPECT_EQ(c.post("/predict", json{{"inputs", good}}.dump()).status, 200);
  server.stop();
  ASSERT_EQ(code.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(code.get(), 0);
  EXPECT_NE(log.str().find("stopped"), std::string::npos) << log.str();
}

}  // namespace
}  // namespace engine::test
