#include "engine/model/config.h"

#include <fstream>

#include "engine/error.h"

namespace engine {

namespace {

template <typename T>
void read_field(const nlohmann::json& j, const char* key, T& out, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(where, ": field '", key, "' has the wrong type (", it->type_name(), ")");
  }
}

const char* kKnownKeys[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                            "intermediate_size", "max_position_embeddings", "type_vocab_size", "pad_token_id",
                            "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                            "layer_norm_eps", "initializer_range", "hidden_act", "num_labels", "id2label",
                            "label2id", "problem_type"};

}  // namespace

void BertConfig::validate(const std::string& where) const {
  auto positive = [&](int64_t v, const char* name) {
    ENGINE_CHECK(v > 0, where, ": ", name, " must be positive (got ", v, ")");
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(intermediate_size, "intermediate_size");
  positive(max_position_embeddings, "max_position_embeddings");
  positive(type_vocab_size, "type_vocab_size");
  positive(num_labels, "num_labels");
  ENGINE_CHECK(hidden_size % num_attention_heads == 0, where, ": hidden_size ", hidden_size,
               " is not a multiple of num_attention_heads ", num_attention_heads);
  ENGINE_CHECK(max_position_embeddings < 65536, where, ": max_position_embeddings ", max_position_embeddings,
               " is too large (attention dropout indexes keys with 16 bits)");
  ENGINE_CHECK(hidden_act == "gelu", where, ": hidden_act '", hidden_act,
               "' is not supported (this engine implements BERT's exact erf GELU, \"gelu\")");
  auto probability = [&](float p, const char* name) {
    ENGINE_CHECK(p >= 0.f && p < 1.f, where, ": ", name, " must be in [0, 1) (got ", p, ")");
  };
  probability(hidden_dropout_prob, "hidden_dropout_prob");
  probability(attention_probs_dropout_prob, "attention_probs_dropout_prob");
  probability(classifier_dropout_prob(), "classifier_dropout");
  ENGINE_CHECK(layer_norm_eps > 0.f, where, ": layer_norm_eps must be positive");
}

int64_t BertConfig::parameter_count(bool with_pooler, int64_t labels) const {
  const int64_t H = hidden_size, I = intermediate_size;
  int64_t embeddings = (vocab_size + max_position_embeddings + type_vocab_size) * H + 2 * H;
  int64_t layer = 4 * (H * H + H) + (H * I + I) + (I * H + H) + 4 * H;
  int64_t pooler = with_pooler ? H * H + H : 0;
  return embeddings + num_hidden_layers * layer + pooler + labels * H + labels;
}

double BertConfig::train_flops_per_token(int64_t seq) const {
  const double H = double(hidden_size), I = double(intermediate_size);
  double matmul_params = num_hidden_layers * (4 * H * H + 2 * H * I);
  double attention = num_hidden_layers * 4.0 * double(seq) * H;  // QK^T and PV, 2 FLOPs per MAC
  return 3.0 * (2.0 * matmul_params + attention);
}

double BertConfig::train_flops(int64_t tokens, double sum_len_sq) const {
  const double H = double(hidden_size), I = double(intermediate_size);
  double matmul_params = num_hidden_layers * (4 * H * H + 2 * H * I);
  return 3.0 * (2.0 * matmul_params * double(tokens) + 4.0 * H * double(num_hidden_layers) * sum_len_sq);
}

BertConfig BertConfig::from_json(const nlohmann::json& j, const std::string& where) {
  ENGINE_CHECK(j.is_object(), where, ": config is not a JSON object");
  BertConfig c;
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) {
    std::string type = it->get<std::string>();
    ENGINE_CHECK(type == "bert", where, ": model_type '", type, "' is not supported (expected \"bert\")");
  }
  read_field(j, "vocab_size", c.vocab_size, where);
  read_field(j, "hidden_size", c.hidden_size, where);
  read_field(j, "num_hidden_layers", c.num_hidden_layers, where);
  read_field(j, "num_attention_heads", c.num_attention_heads, where);
  read_field(j, "intermediate_size", c.intermediate_size, where);
  read_field(j, "max_position_embeddings", c.max_position_embeddings, where);
  read_field(j, "type_vocab_size", c.type_vocab_size, where);
  read_field(j, "pad_token_id", c.pad_token_id, where);
  read_field(j, "hidden_dropout_prob", c.hidden_dropout_prob, where);
  read_field(j, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, where);
  read_field(j, "classifier_dropout", c.classifier_dropout, where);
  read_field(j, "layer_norm_eps", c.layer_norm_eps, where);
  read_field(j, "initializer_range", c.initializer_range, where);
  read_field(j, "hidden_act", c.hidden_act, where);
  read_field(j, "problem_type", c.problem_type, where);
  if (auto it = j.find("id2label"); it != j.end() && it->is_object()) {
    for (auto& [key, value] : it->items()) {
      ENGINE_CHECK(value.is_string(), where, ": id2label['", key, "'] is not a string");
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(key, &used);
        ENGINE_CHECK(used == key.size(), where, ": id2label key '", key, "' is not an integer");
      } catch (const std::logic_error&) {
        fail(where, ": id2label key '", key, "' is not an integer");
      }
      c.id2label[id] = value.get<std::string>();
    }
    c.num_labels = int64_t(c.id2label.size());
  }
  read_field(j, "num_labels", c.num_labels, where);
  if (c.problem_type == "regression") c.num_labels = 1;
  for (auto& [key, value] : j.items()) {
    bool known = false;
    for (const char* k : kKnownKeys) known = known || key == k;
    if (!known) c.extra[key] = value;
  }
  c.validate(where);
  return c;
}

BertConfig BertConfig::from_file(const std::string& path) {
  std::ifstream in(path);
  ENGINE_CHECK(in, path, ": cannot open config file");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  return from_json(j, path);
}

nlohmann::json BertConfig::to_json() const {
  nlohmann::json j = extra;
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["intermediate_size"] = intermediate_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["type_vocab_size"] = type_vocab_size;
  j["pad_token_id"] = pad_token_id;
  j["hidden_dropout_prob"] = hidden_dropout_prob;
  j["attention_probs_dropout_prob"] = attention_probs_dropout_prob;
  j["classifier_dropout"] = classifier_dropout >= 0 ? nlohmann::json(classifier_dropout) : nlohmann::json(nullptr);
  j["layer_norm_eps"] = layer_norm_eps;
  j["initializer_range"] = initializer_range;
  j["hidden_act"] = hidden_act;
  nlohmann::json id2 = nlohmann::json::object(), label2 = nlohmann::json::object();
  for (int64_t i = 0; i < num_labels; ++i) {
    auto it = id2label.find(i);
    std::string name = it != id2label.end() ? it->second : "LABEL_" + std::to_string(i);
    id2[std::to_string(i)] = name;
    label2[name] = i;
  }
  j["id2label"] = id2;
  j["label2id"] = label2;
  if (!problem_type.empty()) j["problem_type"] = problem_type;
  return j;
}

BertConfig BertConfig::named(const std::string& name) {
  BertConfig c;
  if (name == "bert-base") return c;
  if (name == "bert-large") {
    c.hidden_size = 1024;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 16;
    c.intermediate_size = 4096;
    return c;
  }
  if (name == "bert-mini") {  // google/bert_uncased_L-4_H-256_A-4
    c.hidden_size = 256;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.intermediate_size = 1024;
    return c;
  }
  if (name == "bert-tiny") {  // google/bert_uncased_L-2_H-128_A-2
    c.hidden_size = 128;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.intermediate_size = 512;
    return c;
  }
  fail("unknown named config '", name, "' (expected bert-tiny, bert-mini, bert-base or bert-large)");
}

}  // namespace engine
