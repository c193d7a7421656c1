// BertConfig: the architecture of a BERT-family encoder, read from (and written to) a Hugging Face
// config.json. Only what the engine computes is kept; unknown keys are preserved in `extra` so a
// saved config.json still carries them.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace engine {

struct BertConfig {
  int64_t vocab_size = 30522;
  int64_t hidden_size = 768;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t intermediate_size = 3072;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  int64_t pad_token_id = 0;
  float hidden_dropout_prob = 0.1f;
  float attention_probs_dropout_prob = 0.1f;
  float classifier_dropout = -1.f;  // < 0: HF's null, use hidden_dropout_prob
  float layer_norm_eps = 1e-12f;
  float initializer_range = 0.02f;
  std::string hidden_act = "gelu";
  // Head: number of labels and their names (HF id2label); empty names mean "LABEL_i".
  int64_t num_labels = 2;
  std::map<int64_t, std::string> id2label;
  std::string problem_type;  // "", "single_label_classification", "regression"
  nlohmann::json extra = nlohmann::json::object();

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  float classifier_dropout_prob() const { return classifier_dropout >= 0 ? classifier_dropout : hidden_dropout_prob; }
  // Checks the numbers make a model this engine can run; throws engine::Error naming the field.
  void validate(const std::string& where) const;

  // Parameters of the encoder (embeddings, layers, pooler when with_pooler) and a head of num_labels.
  int64_t parameter_count(bool with_pooler, int64_t labels) const;
  // Training FLOPs per token at sequence length `seq` (forward + backward = 3x forward): matmuls
  // 6 * (encoder matmul parameters) plus attention 3 * 4 * seq * hidden per layer.
  double train_flops_per_token(int64_t seq) const;
  // Training FLOPs of a packed batch of `tokens` tokens whose sequence lengths squared sum to
  // sum_len_sq: attention work grows with each sequence's own length, not a padded one.
  double train_flops(int64_t tokens, double sum_len_sq) const;

  static BertConfig from_json(const nlohmann::json& j, const std::string& where);
  static BertConfig from_file(const std::string& path);
  nlohmann::json to_json() const;

  // Named shapes for benches and the embedded default.
  static BertConfig named(const std::string& name);  // "bert-tiny", "bert-mini", "bert-base", "bert-large"
};

}  // namespace engine
