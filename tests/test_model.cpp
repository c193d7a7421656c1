// The whole model on the CPU backend: every parameter's gradient against central finite
// differences (sequence classification, regression, token classification and question answering
// heads, dropout on), checkpoints saved and loaded back, Hugging Face name variants, config errors.
#include <gtest/gtest.h>

#include "model_grad_check.h"
#include "test_seed.h"

#include <cmath>
#include <filesystem>
#include <random>

#include "engine/io/safetensors.h"
#include "engine/model/checkpoint.h"

namespace engine {
namespace {

namespace fs = std::filesystem;

BertConfig tiny_config(int64_t labels) {
  BertConfig c;
  c.vocab_size = 50;
  c.hidden_size = 16;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 24;
  c.max_position_embeddings = 16;
  c.num_labels = labels;
  c.hidden_dropout_prob = 0.1f;
  c.attention_probs_dropout_prob = 0.1f;
  c.initializer_range = 0.3f;  // far above BERT's 0.02 so every path carries signal
  return c;
}

// A mixed-length batch (lengths 1, 5, 3, 7), pairs in two of them, random ids and labels.
PackedBatch random_batch(std::mt19937_64& rng, const BertConfig& c, Head head) {
  std::vector<TokenizedExample> examples;
  for (int len : {1, 5, 3, 7}) {
    TokenizedExample e;
    for (int i = 0; i < len; ++i) {
      e.ids.push_back(int32_t(rng() % uint64_t(c.vocab_size)));
      e.type_ids.push_back(len > 4 && i > len / 2 ? 1 : 0);
      if (head == Head::token_classification)
        e.token_labels.push_back(i % 3 == 2 ? -100 : int32_t(rng() % uint64_t(c.num_labels)));
    }
    if (head == Head::question_answering) {  // the end may sit before the start; past the end: ignored
      e.span_start = int32_t(rng() % uint64_t(len));
      e.span_end = int32_t(rng() % uint64_t(len + 1));
    }
    e.label = c.num_labels > 1 ? int32_t(rng() % uint64_t(c.num_labels)) : -1;
    e.target = float(rng() % 1000) / 200.f;
    e.index = int64_t(examples.size());
    examples.push_back(std::move(e));
  }
  return pack_batch(examples, {0, 1, 2, 3});
}

PackedBatch single_sequence(std::vector<int32_t> ids, int32_t label) {
  TokenizedExample e;
  e.type_ids.assign(ids.size(), 0);
  e.ids = std::move(ids);
  e.label = label;
  return pack_batch({e}, {0});
}

// For each parameter tensor, the directional check of model_grad_check.h. The loss is f32, so the difference quotient carries a few ulps of |L| divided by eps of
// rounding (one ulp of a loss near 10 over 2e-2 is already 5e-5). Its truncation error is
// O(eps^4): the two-point (L(+eps) - L(-eps)) / 2 eps used before had an O(eps^2) error that
// reached 1% for the token type embeddings (shared by every token, so the loss curves most along
// them) and failed them for 2 seeds in 400 (68 and 126); halving eps quartered the error, so it
// was truncation, not a wrong gradient. Checked: |fd - g.u| <= 2e-3 |g| + 16 ulp(|L|) / (2 eps),
// where |g| is the tensor's gradient norm (the largest g.u can be).
void check_model_gradients(Head head, int64_t labels) {
  uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(labels);
  ModelOptions mo;
  mo.head = head;
  mo.max_tokens = 32;
  mo.max_sequences = 8;
  BertModel model(*backend, c, mo);
  model.init_weights(seed);
  // LayerNorm parameters away from 1 and 0, biases non-zero: init_weights sets them trivially.
  for (const ParamInfo& p : model.params().list()) {
    if (p.shape.size() == 1) {
      std::vector<float> v = model.params().get_host(*backend, p.name);
      for (float& x : v) x += float(int64_t(rng() % 2001) - 1000) * 2e-4f;
      model.params().set_host(*backend, p.name, v);
    }
  }
  model.set_batch(random_batch(rng, c, head));
  const uint64_t dropout_seed = rng();
  model.zero_grads();
  model.forward(Pass::train, dropout_seed);
  const double base_loss = model.loss();
  model.backward();

  int checked = 0;
  for (const ParamInfo& p : model.params().list()) {
    test::expect_directional_gradient(model, *backend, p.name, rng, dropout_seed, base_loss);
    ++checked;
  }
  EXPECT_EQ(checked, int(model.params().list().size()));
}

TEST(ModelGradients, SequenceClassificationMatchesFiniteDifferences) {
  check_model_gradients(Head::sequence_classification, 3);
}
TEST(ModelGradients, RegressionMatchesFiniteDifferences) { check_model_gradients(Head::sequence_classification, 1); }
TEST(ModelGradients, TokenClassificationMatchesFiniteDifferences) {
  check_model_gradients(Head::token_classification, 4);
}
TEST(ModelGradients, QuestionAnsweringMatchesFiniteDifferences) {
  check_model_gradients(Head::question_answering, 2);
}

TEST(Model, DropoutChangesTrainingButNotEval) {
  std::mt19937_64 rng(pick_seed());
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(3);
  BertModel model(*backend, c, ModelOptions{Head::sequence_classification, DType::f32, 32, 8});
  model.init_weights(rng());
  model.set_batch(random_batch(rng, c, Head::sequence_classification));
  model.forward(Pass::eval, 1);
  std::vector<float> eval1 = model.logits();
  model.forward(Pass::eval, 2);
  EXPECT_EQ(eval1, model.logits()) << "eval must not depend on the dropout seed";
  model.forward(Pass::train, 1);
  std::vector<float> train1 = model.logits();
  model.forward(Pass::train, 1);
  EXPECT_EQ(train1, model.logits()) << "the same seed must draw the same masks";
  model.forward(Pass::train, 2);
  EXPECT_NE(train1, model.logits()) << "another seed must draw other masks";
}

TEST(Model, BatchBeyondCapacityOrVocabularyIsAnError) {
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(2);
  BertModel model(*backend, c, ModelOptions{Head::sequence_classification, DType::f32, 8, 2});
  EXPECT_THROW(model.set_batch(single_sequence(std::vector<int32_t>(9, 1), 0)), Error);
  EXPECT_THROW(model.set_batch(single_sequence({1, 2, int32_t(c.vocab_size)}, 0)), Error);
  EXPECT_THROW(model.set_batch(single_sequence({1, 2}, 2)), Error);
  EXPECT_NO_THROW(model.set_batch(single_sequence({1, 2}, 1)));
}

class Checkpoints : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("engine_test_ckpt_" + unique_suffix());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(Checkpoints, SavedDirectoryLoadsBackWithIdenticalLogits) {
  std::mt19937_64 rng(pick_seed());
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(3);
  c.id2label = {{0, "neg"}, {1, "neu"}, {2, "pos"}};
  BertModel a(*backend, c, ModelOptions{Head::sequence_classification, DType::f32, 32, 8});
  a.init_weights(rng());
  PackedBatch batch = random_batch(rng, c, Head::sequence_classification);
  a.set_batch(batch);
  a.forward(Pass::eval, 0);
  std::vector<float> logits = a.logits();

  std::string out = (dir_ / "model").string();
  save_pretrained(a, out, SaveOptions{});
  save_pretrained(a, out, SaveOptions{});  // overwriting an existing checkpoint works too
  BertConfig loaded = read_model_config(out);
  EXPECT_EQ(loaded.id2label.at(2), "pos");
  BertModel b(*backend, loaded, ModelOptions{Head::sequence_classification, DType::f32, 32, 8});
  LoadReport report = load_weights(b, out, false, 7);
  EXPECT_TRUE(report.initialised.empty()) << report.summary();
  EXPECT_TRUE(report.unused.empty()) << report.summary();
  b.set_batch(batch);
  b.forward(Pass::eval, 0);
  EXPECT_EQ(logits, b.logits());
  for (const auto& entry : fs::directory_iterator(dir_))
    EXPECT_EQ(entry.path().filename(), "model") << "a staging leftover remained: " << entry.path();
}

// A bare BertModel checkpoint (no `bert.` prefix, no classifier, old gamma/beta names) loads;
// the head is initialised and reported.
TEST_F(Checkpoints, BareEncoderLoadsAndGetsAFreshHead) {
  std::mt19937_64 rng(pick_seed());
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(2);
  BertModel a(*backend, c, ModelOptions{});
  a.init_weights(rng());
  std::vector<std::vector<float>> values;
  std::vector<io::SafetensorsWriteEntry> entries;
  for (const ParamInfo& p : a.params().list()) values.push_back(a.params().get_host(*backend, p.name));
  size_t i = 0;
  for (const ParamInfo& p : a.params().list()) {
    std::string name = p.name;
    if (name.rfind("classifier.", 0) == 0) {
      ++i;
      continue;
    }
    name = name.substr(5);  // drop "bert."
    if (name == "embeddings.LayerNorm.weight") name = "embeddings.LayerNorm.gamma";
    entries.push_back({name, DType::f32, p.shape, values[i++].data()});
  }
  std::vector<float> extra(4, 1.f);
  entries.push_back({"cls.predictions.bias", DType::f32, {4}, extra.data()});
  fs::create_directories(dir_ / "bare");
  io::write_safetensors((dir_ / "bare" / "model.safetensors").string(), entries);

  BertModel b(*backend, c, ModelOptions{});
  LoadReport report = load_weights(b, (dir_ / "bare").string(), false, 11);
  EXPECT_EQ(report.initialised, (std::vector<std::string>{"classifier.weight", "classifier.bias"}));
  EXPECT_EQ(report.unused, std::vector<std::string>{"cls.predictions.bias"});
  EXPECT_EQ(a.params().get_host(*backend, "bert.embeddings.LayerNorm.weight"),
            b.params().get_host(*backend, "bert.embeddings.LayerNorm.weight"));
  std::vector<float> head = b.params().get_host(*backend, "classifier.weight");
  double sum2 = 0;
  for (float v : head) sum2 += double(v) * v;
  double stddev = std::sqrt(sum2 / double(head.size()));
  EXPECT_GT(stddev, 0.5 * c.initializer_range);
  EXPECT_LT(stddev, 1.5 * c.initializer_range);
  for (float v : b.params().get_host(*backend, "classifier.bias")) EXPECT_EQ(v, 0.f);
}

TEST_F(Checkpoints, WrongHeadSizeNeedsReinitAndMissingTensorsAreNamed) {
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(3);
  BertModel a(*backend, c, ModelOptions{});
  a.init_weights(3);
  std::string out = (dir_ / "three").string();
  save_pretrained(a, out, SaveOptions{});

  BertConfig five = c;
  five.num_labels = 5;
  BertModel b(*backend, five, ModelOptions{});
  try {
    load_weights(b, out, false, 1);
    FAIL() << "a 3-label head loaded into a 5-label model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--reinit-head"), std::string::npos) << e.what();
  }
  LoadReport report = load_weights(b, out, true, 1);
  EXPECT_EQ(report.initialised.size(), 2u);

  // A checkpoint missing an encoder tensor is an error that names it.
  io::SafetensorsFile file = io::SafetensorsFile::open(out + "/model.safetensors");
  std::vector<std::vector<float>> values;
  std::vector<io::SafetensorsWriteEntry> entries;
  for (const auto& t : file.tensors()) values.push_back(file.to_f32(t.name));
  for (size_t i = 0; i < file.tensors().size(); ++i) {
    const auto& t = file.tensors()[i];
    if (t.name != "bert.encoder.layer.1.output.dense.weight") entries.push_back({t.name, DType::f32, t.shape, values[i].data()});
  }
  io::write_safetensors(out + "/model.safetensors", entries);
  BertModel d(*backend, c, ModelOptions{});
  try {
    load_weights(d, out, false, 1);
    FAIL() << "a checkpoint without an encoder weight loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bert.encoder.layer.1.output.dense.weight"), std::string::npos) << e.what();
  }
}

TEST(Config, BadConfigsAreClearErrors) {
  auto expect_error = [](nlohmann::json j, const std::string& word) {
    try {
      BertConfig::from_json(j, "config.json");
      FAIL() << "accepted " << j.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  expect_error({{"hidden_size", 100}, {"num_attention_heads", 12}}, "multiple");
  expect_error({{"hidden_act", "relu"}}, "hidden_act");
  expect_error({{"model_type", "roberta"}}, "model_type");
  expect_error({{"hidden_size", "big"}}, "hidden_size");
  expect_error({{"hidden_dropout_prob", 1.5}}, "hidden_dropout_prob");
  BertConfig ok = BertConfig::from_json({{"id2label", {{"0", "a"}, {"1", "b"}, {"2", "c"}}}}, "config.json");
  EXPECT_EQ(ok.num_labels, 3);
  EXPECT_EQ(BertConfig::from_json(ok.to_json(), "again").id2label, ok.id2label);
}

}  // namespace
}  // namespace engine
