// LoRA adapters on the CPU backend: gradients of A, B and the head against finite differences
// (every adaptable layer, all dropouts on), the adapted model at step 0 equal to its base, a frozen
// base bitwise unchanged by training, optimizer state sized by the trainable parameters only, and
// the errors of a bad adapter configuration.
#include <gtest/gtest.h>

#include "model_grad_check.h"
#include "test_seed.h"

#include <cmath>
#include <random>

#include "engine/model/bert.h"
#include "engine/train/optimizer.h"

namespace engine {
namespace {

const char* kAllLinear = "query,key,value,attention.output.dense,intermediate.dense,output.dense";

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

LoraConfig lora_config(const std::string& targets, float dropout) {
  LoraConfig l;
  l.r = 3;
  l.alpha = 5.f;  // scale 5/3: a wrong scale anywhere shows
  l.dropout = dropout;
  l.target_modules = split_target_modules(targets);
  return l;
}

// A mixed-length batch (lengths 1, 5, 3, 7), pairs in two of them, random ids and labels.
PackedBatch random_batch(std::mt19937_64& rng, const BertConfig& c, Head head) {
  std::vector<TokenizedExample> examples;
  for (int len : {1, 5, 3, 7}) {
    TokenizedExample e;
    for (int i = 0; i < len; ++i) {
      e.ids.push_back(int32_t(rng() % uint64_t(c.vocab_size)));
      e.type_ids.push_back(len > 4 && i > len / 2 ? 1 : 0);
      if (head == Head::token_classification) e.token_labels.push_back(int32_t(rng() % uint64_t(c.num_labels)));
    }
    e.label = int32_t(rng() % uint64_t(c.num_labels));
    e.index = int64_t(examples.size());
    examples.push_back(std::move(e));
  }
  return pack_batch(examples, {0, 1, 2, 3});
}

std::vector<float> random_values(std::mt19937_64& rng, size_t n, float scale) {
  std::vector<float> v(n);
  for (float& x : v) x = float(int64_t(rng() % 20001) - 10000) * 1e-4f * scale;
  return v;
}

// Random weights everywhere, B included (zero B would leave A without gradient), the adapters as
// large as the base weights so that their gradients stand well above the loss's rounding.
void randomise(BertModel& model, Backend& backend, std::mt19937_64& rng) {
  model.init_weights(rng());
  for (const ParamInfo& p : model.params().list())
    if (is_lora_parameter(p.name) || p.shape.size() == 1)
      model.params().set_host(backend, p.name, random_values(rng, size_t(p.numel), p.shape.size() == 1 ? 0.2f : 1.f));
}

// The directional-derivative check of tests/test_model.cpp (four-point difference along a random
// unit direction), over the trainable parameters; frozen ones must have no gradient at all.
void check_lora_gradients(Head head, const std::string& targets) {
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(3);
  ModelOptions mo;
  mo.head = head;
  mo.max_tokens = 32;
  mo.max_sequences = 8;
  mo.lora = lora_config(targets, 0.2f);
  BertModel model(*backend, c, mo);
  randomise(model, *backend, rng);
  model.set_batch(random_batch(rng, c, head));
  const uint64_t dropout_seed = rng();
  model.zero_grads();
  model.forward(Pass::train, dropout_seed);
  const double base_loss = model.loss();
  model.backward();

  int checked = 0, frozen = 0;
  for (const ParamInfo& p : model.params().list()) {
    if (!p.trainable) {
      EXPECT_TRUE(model.params().grad(p.name).empty()) << p.name;
      ++frozen;
      continue;
    }
    EXPECT_GT(test::expect_directional_gradient(model, *backend, p.name, rng, dropout_seed, base_loss), 0.0)
        << p.name << " has no gradient";
    ++checked;
  }
  const int per_layer = LoraAdapters(mo.lora, c).adapted_layers_per_encoder_layer();
  EXPECT_EQ(checked, 2 * per_layer * int(c.num_hidden_layers) + 2);  // A and B per adapter, the classifier's two
  EXPECT_GT(frozen, 0);
}

TEST(LoraGradients, AllLinearLayersSequenceClassificationMatchFiniteDifferences) {
  check_lora_gradients(Head::sequence_classification, kAllLinear);
}
TEST(LoraGradients, QueryValueTokenClassificationMatchFiniteDifferences) {
  check_lora_gradients(Head::token_classification, "query,value");
}
TEST(LoraGradients, FfnOnlyMatchFiniteDifferences) {
  check_lora_gradients(Head::sequence_classification, "intermediate.dense,output.dense");
}

// With B = 0 (peft's initialisation) the adapted model computes exactly what its base does.
TEST(Lora, FreshAdaptersReproduceTheBaseModelExactly) {
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(3);
  ModelOptions base_options;
  base_options.max_tokens = 32;
  base_options.max_sequences = 8;
  ModelOptions lora_options = base_options;
  lora_options.lora = lora_config(kAllLinear, 0.f);
  BertModel base(*backend, c, base_options), adapted(*backend, c, lora_options);
  base.init_weights(rng());
  adapted.init_weights(rng());
  for (const ParamInfo& p : base.params().list())
    adapted.params().set_host(*backend, p.name, base.params().get_host(*backend, p.name));
  const auto a = adapted.params().get_host(*backend, "bert.encoder.layer.1.output.dense.lora_A.weight");
  double bound = 0;
  for (float v : a) bound = std::max(bound, double(std::fabs(v)));
  EXPECT_GT(bound, 0.0);
  EXPECT_LE(bound, 1.0 / std::sqrt(double(c.intermediate_size)));  // Kaiming-uniform: U(-1/sqrt(in), 1/sqrt(in))
  for (float v : adapted.params().get_host(*backend, "bert.encoder.layer.0.attention.self.query.lora_B.weight"))
    EXPECT_EQ(v, 0.f);
  PackedBatch batch = random_batch(rng, c, Head::sequence_classification);
  base.set_batch(batch);
  adapted.set_batch(batch);
  base.forward(Pass::eval, 1);
  adapted.forward(Pass::eval, 1);
  EXPECT_EQ(base.logits(), adapted.logits());
}

// Training moves A, B and the classifier and nothing else, bit for bit, even with weight decay;
// the gradient and moment buffers hold only what trains.
TEST(Lora, TrainingLeavesTheFrozenBaseBitwiseUnchanged) {
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  auto backend = make_backend("cpu-ref");
  BertConfig c = tiny_config(3);
  ModelOptions mo;
  mo.max_tokens = 32;
  mo.max_sequences = 8;
  mo.lora = lora_config("query,value", 0.1f);
  BertModel model(*backend, c, mo);
  model.init_weights(rng());
  std::vector<std::vector<float>> before;
  for (const ParamInfo& p : model.params().list()) before.push_back(model.params().get_host(*backend, p.name));
  AdamWConfig ac;
  ac.weight_decay = 0.1f;
  Optimizer opt(*backend, model.params(), ac);
  for (int step = 0; step < 3; ++step) {
    model.zero_grads();
    model.set_batch(random_batch(rng, c, Head::sequence_classification));
    model.forward(Pass::train, rng());
    model.backward();
    opt.compute_grad_norm();
    opt.step(1e-2f);
  }
  const auto& list = model.params().list();
  for (size_t i = 0; i < list.size(); ++i) {
    const std::vector<float> after = model.params().get_host(*backend, list[i].name);
    if (list[i].trainable)
      EXPECT_NE(after, before[i]) << list[i].name << " did not train";
    else
      EXPECT_EQ(after, before[i]) << list[i].name << " is frozen but changed";
  }
  EXPECT_FALSE(model.params().get("bert.pooler.dense.weight").trainable);  // as peft's SEQ_CLS: classifier only
  EXPECT_TRUE(model.params().get("classifier.bias").trainable);
  EXPECT_EQ(model.params().grads().numel(), model.params().trainable_size());
  EXPECT_EQ(model.params().adam_m().numel(), model.params().trainable_size());
  EXPECT_LT(model.params().trainable_size(), model.params().size() / 4);
}

TEST(Lora, BadConfigurationsAreClearErrors) {
  BertConfig c = tiny_config(2);
  auto message = [&](LoraConfig l) {
    try {
      LoraAdapters adapters(l, c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  LoraConfig l = lora_config("query,value", 0.f);
  l.r = 0;
  EXPECT_NE(message(l).find("--lora-r must be at least 1 (got 0)"), std::string::npos) << message(l);
  l = lora_config("query,vlaue", 0.f);
  EXPECT_NE(message(l).find("unknown module 'vlaue'"), std::string::npos) << message(l);
  l = lora_config("dense", 0.f);
  EXPECT_NE(message(l).find("bert.pooler.dense"), std::string::npos) << message(l);
  l = lora_config("query", 1.f);
  EXPECT_NE(message(l).find("--lora-dropout"), std::string::npos) << message(l);
  l = lora_config("query", 0.f);
  l.bias = "all";
  EXPECT_NE(message(l).find("--lora-bias"), std::string::npos) << message(l);
  EXPECT_EQ(message(lora_config("output.dense", 0.f)), "no error");  // peft's suffix rule: both output denses
}

}  // namespace
}  // namespace engine
