// BertModel: Hugging Face's BertForSequenceClassification (single sentences and pairs; regression
// when num_labels == 1), BertForTokenClassification and BertForQuestionAnswering, built once as a Graph over a Backend.
// Parameters live in a ParamStore under their HF names; activations and their gradients are planned
// in one arena for the largest batch (max_tokens, max_sequences) and each step views the rows it
// uses. The backward pass is written by hand, node by node, next to each forward.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/arena.h"
#include "engine/graph.h"
#include "engine/data/batcher.h"
#include "engine/model/config.h"
#include "engine/model/lora.h"
#include "engine/model/params.h"

namespace engine {

enum class Head { sequence_classification, token_classification, question_answering };
// The head's parameter prefix in HF names: "qa_outputs" for question answering, else "classifier".
const char* head_prefix(Head head);

struct ModelOptions {
  Head head = Head::sequence_classification;
  DType act = DType::f32;     // activation and working-weight dtype (bf16 only on the GPU)
  int64_t max_tokens = 4096;  // planned capacity of one batch
  int64_t max_sequences = 256;
  LoraConfig lora;  // lora.r > 0: LoRA adapters on a frozen base (engine/model/lora.h)
};

enum class Pass { train, eval };  // eval: dropout off

// Adds the parameters of a BERT with this config and head to `params` (names and shapes, in memory
// order; nothing is allocated): the model's own list, also what a checkpoint is checked against.
void declare_parameters(ParamStore& params, const BertConfig& config, Head head);

class BertModel {
 public:
  BertModel(Backend& backend, const BertConfig& config, const ModelOptions& options);
  ~BertModel();
  BertModel(const BertModel&) = delete;
  BertModel& operator=(const BertModel&) = delete;

  const BertConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }
  Backend& backend() { return backend_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }
  bool is_regression() const { return options_.head == Head::sequence_classification && config_.num_labels == 1; }
  // Bytes of each arena (parameters with optimizer state; activations and their gradients).
  size_t parameter_bytes() const;
  size_t activation_bytes() const;

  // Hugging Face's initialisation: Linear and Embedding weights ~ normal(0, initializer_range),
  // the padding row of the word embeddings zero, biases zero, LayerNorm weight 1 and bias 0;
  // LoRA A ~ U(-1/sqrt(in), 1/sqrt(in)) (peft's Kaiming-uniform, a = sqrt(5)) and B zero.
  void init_weights(uint64_t seed);
  // The same rule for the named parameters only (a checkpoint without a head, or --reinit-head).
  void init_parameters(const std::vector<std::string>& names, uint64_t seed);

  // Uploads a packed batch. with_labels: the batch's labels (or regression targets, or token
  // labels for token classification, or answer spans for question answering) are real and
  // forward() computes the loss. Throws when the
  // batch exceeds the planned capacity or holds ids or labels out of range.
  void set_batch(const PackedBatch& batch, bool with_labels = true);
  const BatchShape& shape() const { return shape_; }

  // Runs the forward pass over the current batch. With labels in the batch it also computes the
  // loss and, fused with it, the gradient of the logits, scaled by loss_weight / (rows counted):
  // pass 1 / accumulation_steps when accumulating gradients over micro-batches.
  void forward(Pass pass, uint64_t dropout_seed, float loss_weight = 1.f);
  // Accumulates parameter gradients (+=) for the last forward. Needs labels.
  void backward();
  // Told each graph node's name ("layer.3.attention") once its backward is queued; {}: nobody.
  void set_after_backward(std::function<void(const std::string& node)> f) { graph_.set_after_backward(std::move(f)); }
  // Mean loss of the last forward over the rows counted (reads from the device: do it when logging).
  float loss();
  // Rows of the current batch that count in the loss (labelled sequences, or tokens not ignored).
  int64_t counted_rows() const { return counted_rows_; }
  // Logits of the last forward on the host, [rows, num_labels] row-major: rows are sequences, or
  // tokens for token classification and question answering (start, end).
  std::vector<float> logits();
  int64_t logit_rows() const;

  // Where the current batch sits in the global batch of a data-parallel step (its first token and
  // first sequence): dropout masks are indexed from there, so an example draws the same mask on any
  // rank (engine/dist/sharded_batches.h). set_batch() resets both to 0.
  void set_global_offset(int64_t token_offset, int64_t sequence_offset);
  // The rows the loss gradient is averaged over: the counted rows of the whole global batch in a
  // data-parallel step (so each rank scales by loss_weight / global rows, exactly as one process
  // would). set_batch() resets it to the batch's own counted rows.
  void set_loss_rows(int64_t rows);

  // Zeroes the gradient buffer (before each optimizer step's first micro-batch).
  void zero_grads();

 private:
  struct Layer;
  void plan_parameters();
  void plan_activations();
  void build_graph();
  void add_embeddings();
  void add_layer(int index);
  void add_head();
  void add_qa_head(Tensor last);
  void set_span_positions(const PackedBatch& batch);
  float span_loss();
  DropoutRng rng(uint32_t stream) const;
  float p(float prob) const { return pass_ == Pass::train ? prob : 0.f; }
  Tensor act_rows(Tensor t) const { return t.rows(shape_.tokens); }

  Backend& backend_;
  BertConfig config_;
  ModelOptions options_;
  ParamStore params_;
  Arena param_arena_;
  Arena act_arena_;
  Graph graph_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::unique_ptr<LoraAdapters> lora_;  // null without adapters

  // Current batch and pass.
  BatchShape shape_;
  Pass pass_ = Pass::eval;
  uint64_t step_seed_ = 0;
  float loss_weight_ = 1.f;
  bool has_labels_ = false;
  int64_t counted_rows_ = 0;  // rows that contribute to the loss
  int64_t token_offset_ = 0, sequence_offset_ = 0;  // set_global_offset()
  int64_t loss_rows_ = 0;                           // set_loss_rows(); 0: counted_rows_
  bool backward_ready_ = false;

  // Batch on the device.
  Tensor ids_, type_ids_, pos_ids_, cu_seqlens_, cls_rows_, labels_, targets_, span_positions_;
  // Question answering: the loss scales of the start and end columns (1 / counted positions each).
  float span_scale_[2] = {0.f, 0.f};
  // Embeddings.
  Tensor emb_s_, emb_mean_, emb_rstd_, emb_out_;
  // Head.
  Tensor cls_, pooled_, pooled_drop_, head_in_drop_, logits_, losses_;
  Tensor d_logits_, d_head_in_, d_pooled_, d_cls_;
  // Gradient scratch shared by all layers (backward walks one layer at a time).
  Tensor d_hidden_, d_h1_, d_branch_, d_ffn_, d_ctx_, d_qkv_;
  Tensor branch_;  // forward scratch: output of a block's last matmul before dropout + residual + LN
  // Where the LayerNorm parameter gradients of frozen LayerNorms land (f32 [2, H], never read):
  // the layernorm backward op always writes them.
  Tensor frozen_ln_sink_;
  Tensor ln_grad(Tensor g, int which) const;
  void linear_backward_params(Tensor dw, Tensor db, Tensor dy, Tensor x);
  float lora_p() const { return lora_ ? p(lora_->config().dropout) : 0.f; }
};

}  // namespace engine
