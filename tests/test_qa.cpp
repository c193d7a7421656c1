// Extractive question answering (--task qa) against references made with Hugging Face by
// tools/make_qa_fixture.py (tests/fixtures/qa/): run_qa.py's windows, token offsets and labels on
// the real SQuAD v2 subset of ../shared/data, run_qa.py's post-processing of fixed logits, and the
// official SQuAD metrics (transformers' squad_metrics for v2, evaluate-v1.1.py's rules for v1.1).
// Also: the tokenizer's windows on a hand-made case, bad SQuAD input as errors naming the example,
// a tiny model whose loss falls on real SQuAD rows, and finetune / eval / predict from the CLI.
// Tests that need ../shared/data skip without it ($ENGINE_DATA_DIR overrides the folder).
#include <gtest/gtest.h>

#include "cli_helpers.h"
#include "test_seed.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/data/squad.h"
#include "engine/train/squad_metrics.h"
#include "engine/train/task.h"
#include "engine/train/trainer.h"

namespace engine {
namespace {

namespace fs = std::filesystem;

std::string data_dir() {
  if (const char* env = std::getenv("ENGINE_DATA_DIR")) return env;
  return (fs::path(ENGINE_SOURCE_DIR) / ".." / "shared" / "data").lexically_normal().string();
}
const char* kSquad = "squad_v2_dev_subset/dev-v2.0-first5articles.json";
const char* kVocab = "vocab/bert-base-uncased/vocab.txt";

#define REQUIRE_DATA()                                                                               \
  const std::string squad_path = data_dir() + "/" + kSquad, vocab_path = data_dir() + "/" + kVocab; \
  if (!fs::exists(squad_path) || !fs::exists(vocab_path))                                            \
  GTEST_SKIP() << "real data not found: " << squad_path << " (set ENGINE_DATA_DIR)"

nlohmann::json read_fixture(const std::string& name) {
  std::ifstream in(std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/qa/" + name);
  return nlohmann::json::parse(in);
}

tokenizer::BertTokenizer uncased(const std::string& vocab_path) {
  return tokenizer::BertTokenizer(tokenizer::Vocab::load(vocab_path), true);
}

class QaFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("engine_test_qa_" + unique_suffix());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

// ---- the span loss op (CPU reference) ----

// Backend::span_cross_entropy against four-point finite differences of
// L = scale_start sum_b loss[b, start] + scale_end sum_b loss[b, end], on sequences of lengths 1 to
// 17 with a negative position (counts as [CLS]) and one past the end (ignored).
TEST(SpanCrossEntropy, CpuGradientMatchesFiniteDifferences) {
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 2.f);
  auto backend = make_backend("cpu-ref");
  const std::vector<int32_t> cu = {0, 1, 6, 23, 26};
  const int64_t B = 4, T = 26;
  std::vector<int32_t> positions = {0, 0, -2, 4, int32_t(rng() % 17), int32_t(rng() % 17), 1, 3};  // 3 == len: ignored
  std::vector<float> logits(size_t(T * 2)), losses(size_t(B * 2)), grad(size_t(T * 2));
  for (float& x : logits) x = normal(rng);
  auto tensor = [](void* p, DType t, std::initializer_list<int64_t> dims) { return Tensor(p, t, Device::cpu, dims); };
  const BatchShape shape{T, B, 17};
  const float s_start = 0.3f, s_end = 0.7f;
  auto loss_at = [&](const std::vector<float>& z, float* dz) {
    std::vector<float> l(size_t(B * 2));
    backend->span_cross_entropy(tensor(l.data(), DType::f32, {B, 2}), dz ? tensor(dz, DType::f32, {T, 2}) : Tensor{},
                                tensor(const_cast<float*>(z.data()), DType::f32, {T, 2}),
                                tensor(const_cast<int32_t*>(cu.data()), DType::i32, {B + 1}),
                                tensor(positions.data(), DType::i32, {B, 2}), shape, s_start, s_end);
    double total = 0;
    for (int64_t b = 0; b < B; ++b) total += double(s_start) * l[size_t(b * 2)] + double(s_end) * l[size_t(b * 2 + 1)];
    losses = l;
    return total;
  };
  loss_at(logits, grad.data());
  EXPECT_EQ(losses[7], 0.f) << "an end position at the sequence's length is ignored";
  for (int64_t t = 23; t < 26; ++t) EXPECT_EQ(grad[size_t(t * 2 + 1)], 0.f) << "no gradient where ignored";
  // A position below 0 is [CLS]: the same loss as position 0.
  const float clamped = losses[2];  // sequence 1's start, position -2
  positions[2] = 0;
  loss_at(logits, nullptr);
  EXPECT_EQ(losses[2], clamped);
  positions[2] = -2;
  loss_at(logits, grad.data());
  const double eps = 1e-2;
  for (size_t i = 0; i < logits.size(); ++i) {
    auto shifted = [&](double k) {
      std::vector<float> z = logits;
      z[i] = float(double(z[i]) + k * eps);
      return loss_at(z, nullptr);
    };
    const double fd = (8 * (shifted(1) - shifted(-1)) - (shifted(2) - shifted(-2))) / (12 * eps);
    ASSERT_TRUE(std::isfinite(grad[i]));
    EXPECT_NEAR(grad[i], fd, 1e-4) << "logit " << i / 2 << (i % 2 ? " end" : " start");
  }
}

// ---- windows ----

// Ten context words, one question word: room for 8 - 1 - 3 = 4 context tokens per window.
TEST(QaWindows, OverflowingWindowsWithStrideByHand) {
  tokenizer::Vocab vocab = tokenizer::Vocab::from_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nq\na\nb\nc\nd\ne\nf\ng\nh\ni\nj\n",
                                                       "test vocab");
  tokenizer::BertTokenizer tok(std::move(vocab), true);
  const std::string context = "a b c d e f g h i j";
  std::vector<tokenizer::Encoding> w = tok.encode_windows("q", context, 8, 2);
  ASSERT_EQ(w.size(), 4u);  // starts 0, 2, 4, 6; the window from 6 reaches the end
  const int32_t cls = 2, sep = 3, q = 5, a = 6;
  for (size_t k = 0; k < w.size(); ++k) {
    std::vector<int32_t> want = {cls, q, sep};
    for (int32_t t = 0; t < 4; ++t) want.push_back(a + int32_t(2 * k) + t);
    want.push_back(sep);
    EXPECT_EQ(w[k].ids, want) << "window " << k;
    EXPECT_EQ(w[k].type_ids, (std::vector<int32_t>{0, 0, 0, 1, 1, 1, 1, 1}));
    EXPECT_EQ(w[k].offsets[3].begin, 4 * k) << "the window's first context token is word " << 2 * k;
  }
  EXPECT_EQ(tok.encode_windows("q", context, 64, 2).size(), 1u) << "a pair that fits is one window";
  EXPECT_EQ(tok.encode_windows("q", context, 8, 0).size(), 3u) << "no overlap: starts 0, 4, 8";
  EXPECT_THROW(tok.encode_windows("q", context, 8, 4), Error) << "stride as large as the room";
  EXPECT_THROW(tok.encode_windows("q a b c d", context, 8, 0), Error) << "a question that leaves no room";
}

// run_qa.py's labels for every window of the 1407 questions (three window sizes), and ids, token
// type ids and character offsets of every window of a spread subset (three window sizes).
TEST(QaWindows, MatchRunQaPreprocessingOnSquad) {
  REQUIRE_DATA();
  const nlohmann::json fx = read_fixture("windows.json");
  const SquadFile file = read_squad(squad_path, true);
  ASSERT_EQ(file.examples.size(), 1407u);
  EXPECT_TRUE(file.version_2);
  const tokenizer::BertTokenizer tok = uncased(vocab_path);
  int quirks = 0;
  for (const auto& l : fx["labels"]) {
    const int max_length = l["max_length"], stride = l["stride"];
    SCOPED_TRACE("max_length " + std::to_string(max_length) + ", stride " + std::to_string(stride));
    const QaWindows w = make_qa_windows(file, tok, max_length, stride, 2);
    ASSERT_EQ(w.examples.size(), l["positions"].size());
    for (size_t i = 0; i < w.examples.size(); ++i) {
      ASSERT_EQ(w.features[i].example, l["example"][i].get<int64_t>()) << "window " << i;
      int32_t start = l["positions"][i][0], end = l["positions"][i][1];
      // The one documented difference (squad.h): run_qa.py labels [SEP] when the answer starts in
      // the window's last context token; here that token.
      if (start > 0 && !w.features[i].is_context[size_t(start)]) {
        ++quirks;
        --start;
      }
      EXPECT_EQ(w.examples[i].span_start, start) << "window " << i << " of " << file.examples[size_t(w.features[i].example)].id;
      EXPECT_EQ(w.examples[i].span_end, end) << "window " << i;
    }
  }
  EXPECT_EQ(quirks, 6) << "the fixture has six windows (all at length 64) where run_qa.py labels [SEP]";

  // Details: windows in the order of their example, per window size.
  std::map<std::pair<int, int64_t>, std::vector<const nlohmann::json*>> by_example;
  for (const auto& d : fx["details"]) by_example[{d["max_length"].get<int>(), d["example"].get<int64_t>()}].push_back(&d);
  int compared = 0;
  for (const auto& [key, expected] : by_example) {
    SquadFile one = file;
    one.examples = {file.examples[size_t(key.second)]};
    const int stride = (*expected[0])["stride"];
    const QaWindows w = make_qa_windows(one, tok, key.first, stride, 1);
    ASSERT_EQ(w.examples.size(), expected.size()) << one.examples[0].id << " at " << key.first;
    const std::string& context = one.examples[0].context;
    for (size_t k = 0; k < expected.size(); ++k) {
      const nlohmann::json& d = *expected[k];
      EXPECT_EQ(w.examples[k].ids, d["ids"].get<std::vector<int32_t>>()) << one.examples[0].id;
      EXPECT_EQ(w.examples[k].type_ids, d["type_ids"].get<std::vector<int32_t>>()) << one.examples[0].id;
      const std::vector<tokenizer::Offset> chars = tokenizer::char_offsets(context, w.features[k].offsets);
      for (size_t t = 0; t < chars.size(); ++t) {
        if (d["offsets"][t].is_null()) {
          EXPECT_FALSE(w.features[k].is_context[t]) << one.examples[0].id << " token " << t;
        } else {
          ASSERT_TRUE(w.features[k].is_context[t]) << one.examples[0].id << " token " << t;
          EXPECT_EQ(chars[t].begin, d["offsets"][t][0].get<uint32_t>()) << one.examples[0].id << " token " << t;
          EXPECT_EQ(chars[t].end, d["offsets"][t][1].get<uint32_t>()) << one.examples[0].id << " token " << t;
        }
      }
      ++compared;
    }
  }
  EXPECT_EQ(compared, int(fx["details"].size()));
}

// ---- post-processing ----

TEST(QaPostprocess, MatchesRunQaOnFixedLogits) {
  REQUIRE_DATA();
  const nlohmann::json fx = read_fixture("postprocess.json");
  const SquadFile all = read_squad(squad_path, true);
  SquadFile file = all;
  file.examples.clear();
  for (int64_t i : fx["examples"].get<std::vector<int64_t>>()) file.examples.push_back(all.examples[size_t(i)]);
  const QaWindows w = make_qa_windows(file, uncased(vocab_path), fx["max_length"], fx["stride"], 2);
  const auto logits = fx["logits"].get<std::vector<std::vector<float>>>();
  ASSERT_EQ(logits.size(), w.features.size());
  for (const auto& c : fx["cases"]) {
    QaOptions o;
    o.null_score_diff_threshold = c["threshold"];
    const bool v2 = c["version_2"];
    SCOPED_TRACE(std::string(v2 ? "v2" : "v1") + ", threshold " + std::to_string(o.null_score_diff_threshold));
    const std::vector<QaAnswer> answers = postprocess_qa(file, w.features, logits, o, v2);
    ASSERT_EQ(answers.size(), file.examples.size());
    int empty = 0;
    for (size_t i = 0; i < answers.size(); ++i) {
      EXPECT_EQ(answers[i].text, c["predictions"][i].get<std::string>()) << file.examples[i].id;
      empty += answers[i].text.empty();
      if (!answers[i].text.empty() && answers[i].text != "empty") {  // offsets give back the text
        const std::vector<int64_t> byte_at = char_to_byte(file.examples[i].context);
        EXPECT_EQ(file.examples[i].context.substr(size_t(byte_at[size_t(answers[i].start)]),
                                                  size_t(byte_at[size_t(answers[i].end)] - byte_at[size_t(answers[i].start)])),
                  answers[i].text);
      }
      EXPECT_TRUE(answers[i].probability > 0 && answers[i].probability <= 1) << answers[i].probability;
      if (v2) EXPECT_NEAR(answers[i].null_odds, c["null_odds"][i].get<double>(), 1e-5) << file.examples[i].id;
    }
    if (v2) EXPECT_GT(empty, 0) << "the fixture's v2 cases predict some empty answers";
  }
}

// ---- metrics ----

TEST(SquadMetrics, NormalizationAsTheOfficialScript) {
  EXPECT_EQ(normalize_answer("The  Cat's hat!"), "cats hat");
  EXPECT_EQ(normalize_answer("an apple, a pear and the plum"), "apple pear and plum");
  EXPECT_EQ(normalize_answer("Theatre anew"), "theatre anew") << "articles only as whole words";
  EXPECT_EQ(normalize_answer("a-the_an"), "athean") << "punctuation goes first, so no article is left";
  EXPECT_EQ(normalize_answer("the\xC3\xA9 an\xC2\xB2 a1 \xC3\xA9the"), "the\xC3\xA9 an\xC2\xB2 a1 \xC3\xA9the")
      << "letters and numbers beyond ASCII are word characters: no boundary, no article";
  EXPECT_EQ(normalize_answer("\xC3\x89" "COLE\xC2\xA0normale"), "\xC3\xA9" "cole normale") << "Unicode lowercase, NBSP splits";
}

TEST(SquadMetrics, MatchOfficialScriptsOnFixturePredictions) {
  REQUIRE_DATA();
  const nlohmann::json fx = read_fixture("metrics.json");
  const SquadFile file = read_squad(squad_path, true);
  std::vector<SquadGold> gold, answerable;
  for (const SquadExample& e : file.examples) {
    SquadGold g{e.id, {}};
    for (const SquadAnswer& a : e.answers) g.answers.push_back(a.text);
    if (!g.answers.empty()) answerable.push_back(g);
    gold.push_back(std::move(g));
  }
  const auto preds = fx["predictions"].get<std::map<std::string, std::string>>();
  const auto na = fx["na_probs"].get<std::map<std::string, double>>();
  const auto v2 = squad_v2_metrics(gold, preds, na);
  ASSERT_EQ(v2.size(), fx["v2"].size());
  for (const auto& [k, v] : fx["v2"].items()) {
    ASSERT_TRUE(v2.count(k)) << k;
    EXPECT_NEAR(v2.at(k), v.get<double>(), 1e-9) << k;
  }
  const auto v1 = squad_v1_metrics(answerable, preds);
  for (const auto& [k, v] : fx["v1"].items()) EXPECT_NEAR(v1.at(k), v.get<double>(), 1e-9) << k;
  // The fixture's predictions are of several kinds: neither metric is trivially 0 or 100.
  EXPECT_GT(v2.at("HasAns_f1"), 5);
  EXPECT_LT(v2.at("HasAns_f1"), 95);
}

// ---- files and bad input ----

TEST_F(QaFiles, SquadJsonLinesWithHfAnswersAndVersionDetection) {
  const std::string v1 = write("v1.jsonl",
                               "{\"id\": \"a\", \"question\": \" Who?\", \"context\": \"caf\xC3\xA9 Bob ran\", "
                               "\"answers\": {\"text\": [\"Bob\"], \"answer_start\": [5]}}\n");
  SquadFile f = read_squad(v1, true);
  ASSERT_EQ(f.examples.size(), 1u);
  EXPECT_FALSE(f.version_2);
  EXPECT_EQ(f.examples[0].answers[0].start, 5) << "characters, not bytes";
  const std::string v2 = write("v2.jsonl",
                               "{\"id\": \"a\", \"question\": \"Who?\", \"context\": \"Bob ran\", "
                               "\"answers\": {\"text\": [], \"answer_start\": []}}\n");
  f = read_squad(v2, true);
  EXPECT_TRUE(f.version_2);
  EXPECT_EQ(f.version_reason, "questions without answers");
}

// Each mistake is an error naming the example (or the line) and what is wrong.
TEST_F(QaFiles, BadSquadInputNamesTheExample) {
  auto expect_error = [&](const std::string& text, const std::vector<std::string>& words, bool windows = false) {
    const std::string path = write("bad.jsonl", text);
    try {
      SquadFile f = read_squad(path, true);
      if (windows) {
        tokenizer::Vocab vocab = tokenizer::Vocab::from_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nwho\nbob\nran\n", "v");
        make_qa_windows(f, tokenizer::BertTokenizer(std::move(vocab), true), 8, 2, 1);
      }
      ADD_FAILURE() << "accepted: " << text;
    } catch (const Error& e) {
      for (const std::string& w : words)
        EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << "'" << w << "' not in: " << e.what();
    }
  };
  expect_error("{\"id\": \"q7\", \"context\": \"Bob ran\", \"answers\": {\"text\": [], \"answer_start\": []}}\n",
               {"'q7'", "\"question\""});
  expect_error("{\"id\": \"q8\", \"question\": \"Who?\", \"context\": \"Bob ran\", "
               "\"answers\": {\"text\": [\"ran\"], \"answer_start\": [0]}}\n",
               {"'q8'", "answer_start 0", "'Bob'"});
  expect_error("{\"id\": \"q9\", \"question\": \"Who?\", \"context\": \"Bob ran\", "
               "\"answers\": {\"text\": [\"ran\"], \"answer_start\": [6]}}\n",
               {"'q9'", "outside"});
  expect_error("{\"id\": \"q10\", \"question\": \"Who?\", \"context\": \" \", \"answers\": []}\n", {"'q10'", "empty"});
  expect_error("{\"id\": \"q11\", \"question\": \"Who?\", \"context\": \"Bob ran\"}\n", {"'q11'", "answers"});
  expect_error("{\"id\": \"q12\", \"question\": \"Who?\", \"context\": \"\xEF\xBF\xBD\", \"answers\": []}\n",
               {"'q12'", "no tokens"}, true);
  expect_error("{\"id\": \"q13\", \"question\": \"who who who who who\", \"context\": \"bob ran\", \"answers\": []}\n",
               {"'q13'", "question"}, true);
  expect_error("{\"id\": \"d\", \"question\": \"Who?\", \"context\": \"Bob ran\", \"answers\": []}\n"
               "{\"id\": \"d\", \"question\": \"Who?\", \"context\": \"Bob ran\", \"answers\": []}\n",
               {"'d'", "twice"});
  expect_error("{\"data\": [{\"paragraphs\": [{\"context\": \"Bob ran\", \"qas\": [{\"id\": \"s1\", \"question\": "
               "\"Who?\", \"answers\": [{\"text\": \"Bob\"}]}]}]}]}",
               {"'s1'", "answer_start"});
}

// ---- learning and the command line ----

// A tiny random BERT with the real uncased vocabulary, saved with a question answering head.
void save_tiny_qa_model(const fs::path& dir, const std::string& vocab_path, uint64_t seed) {
  fs::create_directories(dir);
  fs::copy_file(vocab_path, dir / "vocab.txt");
  BertConfig c;
  c.vocab_size = 30522;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 128;
  c.num_labels = 2;
  auto backend = make_backend("cpu");
  ModelOptions mo;
  mo.head = Head::question_answering;
  BertModel model(*backend, c, mo);
  model.init_weights(seed);
  SaveOptions so;
  so.vocab_path = (dir / "vocab.txt").string();
  save_pretrained(model, dir.string(), so);
}

// The loss falls from about log(128) per position (uniform over the window) on the 2367 windows of
// the real SQuAD subset at length 128: the mean of the last logging window against the first.
TEST_F(QaFiles, TinyModelLossFallsOnRealSquad) {
  REQUIRE_DATA();
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  save_tiny_qa_model(dir_ / "tiny", vocab_path, seed);
  FinetuneOptions o;
  o.model_dir = (dir_ / "tiny").string();
  o.train_file = squad_path;
  o.task = "qa";
  o.output_dir = (dir_ / "run").string();
  o.data.encode.max_length = 128;
  o.data.qa.doc_stride = 32;
  o.max_steps = 60;
  o.batch_size = 16;
  o.learning_rate = 2e-3;
  o.logging_steps = 10;
  o.seed = seed;
  std::ostringstream log;
  FinetuneResult r = run_finetune(o, log);
  ASSERT_EQ(r.logged_losses.size(), 6u) << log.str();
  RecordProperty("loss_ratio", std::to_string(r.logged_losses.back() / r.logged_losses.front()));
  EXPECT_GT(r.logged_losses.front(), 3.5) << log.str();
  EXPECT_LT(r.logged_losses.back(), 0.8 * r.logged_losses.front()) << log.str();
  EXPECT_NE(log.str().find("1407 questions in 2367 windows, SQuAD v2"), std::string::npos) << log.str();
}

// finetune --task qa saves a BertForQuestionAnswering directory; eval scores it with the official
// metrics and writes predictions.json and null_odds.json; predict answers JSON lines with
// character offsets that give back the answer.
TEST_F(QaFiles, FinetuneEvalPredictFromTheCommandLine) {
  REQUIRE_DATA();
  save_tiny_qa_model(dir_ / "tiny", vocab_path, pick_seed());
  // The first 40 questions, as JSON Lines in HF datasets' form.
  const SquadFile file = read_squad(squad_path, true);
  std::ofstream train(dir_ / "train.jsonl"), questions(dir_ / "questions.jsonl");
  for (size_t i = 0; i < 40; ++i) {
    const SquadExample& e = file.examples[i];
    nlohmann::json answers = {{"text", nlohmann::json::array()}, {"answer_start", nlohmann::json::array()}};
    for (const SquadAnswer& a : e.answers) {
      answers["text"].push_back(a.text);
      answers["answer_start"].push_back(a.start);
    }
    train << nlohmann::json{{"id", e.id}, {"question", e.question}, {"context", e.context}, {"answers", answers}}.dump()
          << "\n";
    if (i < 5) questions << nlohmann::json{{"question", e.question}, {"context", e.context}}.dump() << "\n";
  }
  train.close();
  questions.close();
  const std::string model = (dir_ / "tiny").string(), out = (dir_ / "run").string();
  test::CommandResult r = test::run_engine("finetune --task qa --model " + model + " --train " +
                                           (dir_ / "train.jsonl").string() + " --dev " + (dir_ / "train.jsonl").string() +
                                           " --max-length 96 --doc-stride 32 --max-steps 4 --batch-size 8 --output-dir " +
                                           out);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "run" / "predictions.json")) << "the last evaluation's predictions";
  EXPECT_NE(test::read_text(dir_ / "run" / "model" / "config.json").find("BertForQuestionAnswering"), std::string::npos);

  r = test::run_engine("eval --model " + out + "/model --data " + (dir_ / "train.jsonl").string() +
                       " --max-length 96 --doc-stride 32 --quiet --output-dir " + (dir_ / "eval").string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  nlohmann::json m = nlohmann::json::parse(r.out);
  for (const char* k : {"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh", "loss"})
    EXPECT_TRUE(m.contains(k)) << k << " missing from " << r.out;
  EXPECT_EQ(m["total"], 40);
  nlohmann::json preds = nlohmann::json::parse(test::read_text(dir_ / "eval" / "predictions.json"));
  nlohmann::json odds = nlohmann::json::parse(test::read_text(dir_ / "eval" / "null_odds.json"));
  EXPECT_EQ(preds.size(), 40u);
  EXPECT_EQ(odds.size(), 40u);

  r = test::run_engine("predict --model " + out + "/model --data " + (dir_ / "questions.jsonl").string() +
                       " --max-length 96 --doc-stride 32 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::istringstream lines(r.out);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j["answer"] == "empty") continue;  // run_qa.py's answer when no span qualifies: no offsets
    const std::string& context = file.examples[size_t(n)].context;
    const std::vector<int64_t> byte_at = char_to_byte(context);
    const int64_t s = j["start"], e = j["end"];
    ASSERT_TRUE(s >= 0 && s <= e && e < int64_t(byte_at.size())) << line;
    EXPECT_EQ(context.substr(size_t(byte_at[size_t(s)]), size_t(byte_at[size_t(e)] - byte_at[size_t(s)])),
              j["answer"].get<std::string>())
        << line;
    EXPECT_GT(j["score"].get<double>(), 0) << line;
  }
  EXPECT_EQ(n, 5);

  r = test::run_engine("eval --model " + out + "/model --data " + write("bad.jsonl", "{\"id\": \"x1\", \"context\": \"c\"}\n"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("'x1'"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace engine
