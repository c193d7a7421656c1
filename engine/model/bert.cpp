#include "engine/model/bert.h"

#include <cmath>
#include <random>

#include "engine/bf16.h"
#include "engine/model/init.h"

namespace engine {

namespace {

// Dropout streams: each site of each layer draws from its own stream of the step's seed.
constexpr uint32_t kEmbeddingDropout = 1, kHeadDropout = 2;
uint32_t attention_probs_stream(int layer) { return 16u + 4u * uint32_t(layer); }
uint32_t attention_output_stream(int layer) { return 17u + 4u * uint32_t(layer); }
uint32_t ffn_output_stream(int layer) { return 18u + 4u * uint32_t(layer); }

std::string layer_prefix(int i) { return "bert.encoder.layer." + std::to_string(i) + "."; }

}  // namespace

// One encoder layer: its parameter views (working copy for compute, f32 for gradients) and the
// activations it saves for backward.
struct BertModel::Layer {
  // Working-copy weights (act dtype) and f32 gradients. QKV is one fused [3H, H] matrix.
  Tensor w_qkv, b_qkv, w_out, b_out, ln1_g, ln1_b, w_ffn1, b_ffn1, w_ffn2, b_ffn2, ln2_g, ln2_b;
  Tensor dw_qkv, db_qkv, dw_out, db_out, dln1_g, dln1_b, dw_ffn1, db_ffn1, dw_ffn2, db_ffn2, dln2_g, dln2_b;
  // Saved activations.
  Tensor qkv, ctx, lse, s1, mean1, rstd1, h1, ffn_pre, ffn_act, s2, mean2, rstd2, h2;
};

BertModel::BertModel(Backend& backend, const BertConfig& config, const ModelOptions& options)
    : backend_(backend),
      config_(config),
      options_(options),
      param_arena_(backend, "parameters"),
      act_arena_(backend, "activations"),
      graph_(backend) {
  config_.validate("model config");
  ENGINE_CHECK(backend.supports(options.act), "backend ", backend.name(), " cannot run activations in ",
               dtype_name(options.act));
  ENGINE_CHECK(options.max_tokens > 0 && options.max_sequences > 0, "model capacity must be positive (max_tokens ",
               options.max_tokens, ", max_sequences ", options.max_sequences, ")");
  ENGINE_CHECK(options.head != Head::question_answering || config_.num_labels == 2,
               "question answering needs num_labels 2 (start, end logits); the config has ", config_.num_labels);
  for (int i = 0; i < config_.num_hidden_layers; ++i) layers_.push_back(std::make_unique<Layer>());
  plan_parameters();
  plan_activations();
  param_arena_.allocate();
  act_arena_.allocate();
  backend_.fill(params_.master(), 0.f);
  backend_.fill(params_.grads(), 0.f);
  backend_.fill(params_.adam_m(), 0.f);
  backend_.fill(params_.adam_v(), 0.f);
  params_.sync_working(backend_);
  if (lora_) lora_->bind(params_);
  build_graph();
}

BertModel::~BertModel() = default;

size_t BertModel::parameter_bytes() const { return param_arena_.bytes(); }
size_t BertModel::activation_bytes() const { return act_arena_.bytes(); }

const char* head_prefix(Head head) { return head == Head::question_answering ? "qa_outputs" : "classifier"; }

void declare_parameters(ParamStore& params, const BertConfig& config, Head head) {
  const int64_t H = config.hidden_size, I = config.intermediate_size, C = config.num_labels;
  const bool pooler = head == Head::sequence_classification;
  const std::string prefix = head_prefix(head);
  // Decayed group: every weight matrix and embedding table.
  params.add("bert.embeddings.word_embeddings.weight", {config.vocab_size, H});
  params.add("bert.embeddings.position_embeddings.weight", {config.max_position_embeddings, H});
  params.add("bert.embeddings.token_type_embeddings.weight", {config.type_vocab_size, H});
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    std::string p = layer_prefix(i);
    params.add(p + "attention.self.query.weight", {H, H});  // query, key, value back to back: fused QKV
    params.add(p + "attention.self.key.weight", {H, H}, true);
    params.add(p + "attention.self.value.weight", {H, H}, true);
    params.add(p + "attention.output.dense.weight", {H, H});
    params.add(p + "intermediate.dense.weight", {I, H});
    params.add(p + "output.dense.weight", {H, I});
  }
  if (pooler) params.add("bert.pooler.dense.weight", {H, H});
  params.add(prefix + ".weight", {C, H});
  // No decay: biases and LayerNorm parameters.
  params.begin_no_decay();
  params.add("bert.embeddings.LayerNorm.weight", {H});
  params.add("bert.embeddings.LayerNorm.bias", {H});
  for (int i = 0; i < config.num_hidden_layers; ++i) {
    std::string p = layer_prefix(i);
    params.add(p + "attention.self.query.bias", {H});
    params.add(p + "attention.self.key.bias", {H}, true);
    params.add(p + "attention.self.value.bias", {H}, true);
    params.add(p + "attention.output.dense.bias", {H});
    params.add(p + "attention.output.LayerNorm.weight", {H});
    params.add(p + "attention.output.LayerNorm.bias", {H});
    params.add(p + "intermediate.dense.bias", {I});
    params.add(p + "output.dense.bias", {H});
    params.add(p + "output.LayerNorm.weight", {H});
    params.add(p + "output.LayerNorm.bias", {H});
  }
  if (pooler) params.add("bert.pooler.dense.bias", {H});
  params.add(prefix + ".bias", {C});
}

void BertModel::plan_parameters() {
  declare_parameters(params_, config_, options_.head);
  if (options_.lora.enabled()) {
    lora_ = std::make_unique<LoraAdapters>(options_.lora, config_);
    lora_->declare(params_);
  }
  params_.plan(param_arena_, options_.act);
}

void BertModel::plan_activations() {
  const int64_t T = options_.max_tokens, B = options_.max_sequences;
  const int64_t H = config_.hidden_size, I = config_.intermediate_size, C = config_.num_labels;
  const int64_t heads = config_.num_attention_heads;
  const DType act = options_.act, f32 = DType::f32, i32 = DType::i32;
  const bool tokens_head = options_.head != Head::sequence_classification;  // a row of logits per token
  const int64_t rows = tokens_head ? T : B;  // rows of logits
  Arena& a = act_arena_;

  a.plan(&ids_, i32, {T}, "batch.ids");
  a.plan(&type_ids_, i32, {T}, "batch.type_ids");
  a.plan(&pos_ids_, i32, {T}, "batch.pos_ids");
  a.plan(&cu_seqlens_, i32, {B + 1}, "batch.cu_seqlens");
  a.plan(&cls_rows_, i32, {B}, "batch.cls_rows");
  a.plan(&labels_, i32, {rows}, "batch.labels");
  a.plan(&targets_, f32, {B}, "batch.targets");
  if (options_.head == Head::question_answering) a.plan(&span_positions_, i32, {B, 2}, "batch.span_positions");

  a.plan(&emb_s_, act, {T, H}, "embeddings.sum");
  a.plan(&emb_mean_, f32, {T}, "embeddings.mean");
  a.plan(&emb_rstd_, f32, {T}, "embeddings.rstd");
  a.plan(&emb_out_, act, {T, H}, "embeddings.out");
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = *layers_[i];
    std::string p = "layer." + std::to_string(i) + ".";
    a.plan(&L.qkv, act, {T, 3 * H}, p + "qkv");
    a.plan(&L.ctx, act, {T, H}, p + "context");
    a.plan(&L.lse, f32, {T, heads}, p + "lse");
    a.plan(&L.s1, act, {T, H}, p + "attention.sum");
    a.plan(&L.mean1, f32, {T}, p + "attention.mean");
    a.plan(&L.rstd1, f32, {T}, p + "attention.rstd");
    a.plan(&L.h1, act, {T, H}, p + "attention.out");
    a.plan(&L.ffn_pre, act, {T, I}, p + "ffn.pre_gelu");
    a.plan(&L.ffn_act, act, {T, I}, p + "ffn.gelu");
    a.plan(&L.s2, act, {T, H}, p + "ffn.sum");
    a.plan(&L.mean2, f32, {T}, p + "ffn.mean");
    a.plan(&L.rstd2, f32, {T}, p + "ffn.rstd");
    a.plan(&L.h2, act, {T, H}, p + "out");
  }
  a.plan(&branch_, act, {T, H}, "scratch.branch");
  if (lora_) {
    lora_->plan(a, act, T);
    a.plan(&frozen_ln_sink_, f32, {2 * H}, "grad.frozen_layernorm_sink");
  }
  if (options_.head == Head::question_answering) {
    // qa_outputs reads the encoder output directly (no dropout in HF's BertForQuestionAnswering).
  } else if (tokens_head) {
    a.plan(&head_in_drop_, act, {T, H}, "head.dropped");
  } else {
    a.plan(&cls_, act, {B, H}, "pooler.cls");
    a.plan(&pooled_, act, {B, H}, "pooler.out");
    a.plan(&pooled_drop_, act, {B, H}, "pooler.dropped");
    a.plan(&d_pooled_, act, {B, H}, "grad.pooler");
    a.plan(&d_cls_, act, {B, H}, "grad.cls");
  }
  a.plan(&logits_, act, {rows, C}, "head.logits");
  a.plan(&losses_, f32, {options_.head == Head::question_answering ? 2 * B : rows}, "head.losses");
  a.plan(&d_logits_, act, {rows, C}, "grad.logits");

  a.plan(&d_hidden_, act, {T, H}, "grad.hidden");
  a.plan(&d_h1_, act, {T, H}, "grad.attention_out");
  a.plan(&d_branch_, act, {T, H}, "grad.branch");
  a.plan(&d_ffn_, act, {T, I}, "grad.ffn");
  a.plan(&d_ctx_, act, {T, H}, "grad.context");
  a.plan(&d_qkv_, act, {T, 3 * H}, "grad.qkv");
}

void BertModel::build_graph() {
  add_embeddings();
  for (int i = 0; i < int(layers_.size()); ++i) add_layer(i);
  add_head();
}

// The gradient of a LayerNorm parameter, or (frozen) a slot of the sink that nothing reads.
Tensor BertModel::ln_grad(Tensor g, int which) const {
  return g.empty() ? frozen_ln_sink_.slice_rows(which * config_.hidden_size, config_.hidden_size) : g;
}

void BertModel::add_embeddings() {
  // Frozen embeddings (under adapters) need no backward at all: nothing below them trains.
  const bool trainable = !params_.grad("bert.embeddings.word_embeddings.weight").empty();
  graph_.add(
      "embeddings",
      [this] {
        const ParamStore& P = params_;
        backend_.embeddings_forward(act_rows(emb_out_), act_rows(emb_s_), emb_mean_.rows(shape_.tokens),
                                    emb_rstd_.rows(shape_.tokens), ids_.rows(shape_.tokens),
                                    pos_ids_.rows(shape_.tokens), type_ids_.rows(shape_.tokens),
                                    P.working("bert.embeddings.word_embeddings.weight"),
                                    P.working("bert.embeddings.position_embeddings.weight"),
                                    P.working("bert.embeddings.token_type_embeddings.weight"),
                                    P.working("bert.embeddings.LayerNorm.weight"),
                                    P.working("bert.embeddings.LayerNorm.bias"), config_.layer_norm_eps);
        backend_.dropout_forward(act_rows(emb_out_), act_rows(emb_out_), p(config_.hidden_dropout_prob),
                                 rng(kEmbeddingDropout));
      },
      !trainable ? Graph::Fn{} : [this] {
        const ParamStore& P = params_;
        backend_.dropout_backward(act_rows(d_hidden_), act_rows(d_hidden_), p(config_.hidden_dropout_prob),
                                  rng(kEmbeddingDropout));
        backend_.embeddings_backward(P.grad("bert.embeddings.word_embeddings.weight"),
                                     P.grad("bert.embeddings.position_embeddings.weight"),
                                     P.grad("bert.embeddings.token_type_embeddings.weight"),
                                     P.grad("bert.embeddings.LayerNorm.weight"),
                                     P.grad("bert.embeddings.LayerNorm.bias"), act_rows(d_hidden_), act_rows(emb_s_),
                                     emb_mean_.rows(shape_.tokens), emb_rstd_.rows(shape_.tokens),
                                     P.working("bert.embeddings.LayerNorm.weight"), ids_.rows(shape_.tokens),
                                     pos_ids_.rows(shape_.tokens), type_ids_.rows(shape_.tokens));
      });
}

// dW and db of a linear layer, each skipped when frozen (no gradient view): a frozen weight costs no
// product in the backward pass.
void BertModel::linear_backward_params(Tensor dw, Tensor db, Tensor dy, Tensor x) {
  if (!dw.empty()) {
    backend_.linear_backward_dw(dw, db, dy, x);
  } else if (!db.empty()) {
    fail("a trainable bias on a frozen weight is not supported");  // --lora-bias none freezes biases
  }
}

void BertModel::add_layer(int index) {
  Layer& L = *layers_[index];
  const int64_t H = config_.hidden_size;
  const std::string pre = layer_prefix(index);
  const ParamStore& P = params_;
  Tensor working = P.working(), grads = P.grads();
  L.w_qkv = ParamStore::span(working, P.get(pre + "attention.self.query.weight"), {3 * H, H});
  L.b_qkv = ParamStore::span(working, P.get(pre + "attention.self.query.bias"), {3 * H});
  // Frozen (under adapters): no gradient views, and the backward skips their products.
  const ParamInfo& wq = P.get(pre + "attention.self.query.weight");
  const ParamInfo& bq = P.get(pre + "attention.self.query.bias");
  if (wq.trainable) L.dw_qkv = ParamStore::span(grads, wq, {3 * H, H});
  if (bq.trainable) L.db_qkv = ParamStore::span(grads, bq, {3 * H});
  auto both = [&](Tensor& w, Tensor& g, const std::string& name) {
    w = P.working(pre + name);
    g = P.grad(pre + name);
  };
  both(L.w_out, L.dw_out, "attention.output.dense.weight");
  both(L.b_out, L.db_out, "attention.output.dense.bias");
  both(L.ln1_g, L.dln1_g, "attention.output.LayerNorm.weight");
  both(L.ln1_b, L.dln1_b, "attention.output.LayerNorm.bias");
  both(L.w_ffn1, L.dw_ffn1, "intermediate.dense.weight");
  both(L.b_ffn1, L.db_ffn1, "intermediate.dense.bias");
  both(L.w_ffn2, L.dw_ffn2, "output.dense.weight");
  both(L.b_ffn2, L.db_ffn2, "output.dense.bias");
  both(L.ln2_g, L.dln2_g, "output.LayerNorm.weight");
  both(L.ln2_b, L.dln2_b, "output.LayerNorm.bias");

  // The layer's input: the embeddings or the previous layer's output. Its gradient is needed
  // unless it is frozen embeddings' output.
  Tensor input = index == 0 ? emb_out_ : layers_[index - 1]->h2;
  const bool need_input_grad = index > 0 || !P.grad("bert.embeddings.word_embeddings.weight").empty();
  LoraAdapters* lora = lora_.get();
  auto adapted = [lora](LoraSite site) { return lora && lora->has(site); };
  const LoraSite kQkv[] = {LoraSite::query, LoraSite::key, LoraSite::value};
  const std::string name = "layer." + std::to_string(index);
  const float scale = 1.f / std::sqrt(float(config_.head_dim()));
  const int heads = int(config_.num_attention_heads);

  graph_.add(
      name + ".attention",
      [this, &L, input, index, scale, heads, adapted, kQkv] {
        const int64_t T = shape_.tokens;
        Tensor x = input.rows(T);
        backend_.linear_forward(L.qkv.rows(T), x, L.w_qkv, L.b_qkv, Activation::none, {});
        for (LoraSite site : kQkv)
          if (adapted(site)) lora_->forward(backend_, index, site, L.qkv.rows(T), x, T, lora_p(), step_seed_);
        backend_.attention_forward(L.ctx.rows(T), L.lse.rows(T), L.qkv.rows(T), cu_seqlens_.rows(shape_.sequences + 1),
                                   shape_, heads, scale, p(config_.attention_probs_dropout_prob),
                                   rng(attention_probs_stream(index)));
        backend_.linear_forward(branch_.rows(T), L.ctx.rows(T), L.w_out, L.b_out, Activation::none, {});
        if (adapted(LoraSite::attention_output))
          lora_->forward(backend_, index, LoraSite::attention_output, branch_.rows(T), L.ctx.rows(T), T, lora_p(),
                         step_seed_);
        backend_.add_dropout_layernorm_forward(L.h1.rows(T), L.s1.rows(T), L.mean1.rows(T), L.rstd1.rows(T),
                                               branch_.rows(T), x, L.ln1_g, L.ln1_b, config_.layer_norm_eps,
                                               p(config_.hidden_dropout_prob), rng(attention_output_stream(index)));
      },
      // In: d_h1 (gradient of this block's output). Out: d_hidden (gradient of the layer input).
      [this, &L, input, index, scale, heads, adapted, kQkv, need_input_grad] {
        const int64_t T = shape_.tokens;
        Tensor x = input.rows(T);
        backend_.add_dropout_layernorm_backward(d_branch_.rows(T), d_hidden_.rows(T), ln_grad(L.dln1_g, 0),
                                                ln_grad(L.dln1_b, 1), d_h1_.rows(T), L.s1.rows(T), L.mean1.rows(T),
                                                L.rstd1.rows(T), L.ln1_g, p(config_.hidden_dropout_prob),
                                                rng(attention_output_stream(index)));
        linear_backward_params(L.dw_out, L.db_out, d_branch_.rows(T), L.ctx.rows(T));
        backend_.linear_backward_dx(d_ctx_.rows(T), d_branch_.rows(T), L.w_out, false, Activation::none, {});
        if (adapted(LoraSite::attention_output))
          lora_->backward(backend_, index, LoraSite::attention_output, d_ctx_.rows(T), d_branch_.rows(T),
                          L.ctx.rows(T), T, lora_p(), step_seed_);
        backend_.attention_backward(d_qkv_.rows(T), d_ctx_.rows(T), L.qkv.rows(T), L.ctx.rows(T), L.lse.rows(T),
                                    cu_seqlens_.rows(shape_.sequences + 1), shape_, heads, scale,
                                    p(config_.attention_probs_dropout_prob), rng(attention_probs_stream(index)));
        linear_backward_params(L.dw_qkv, L.db_qkv, d_qkv_.rows(T), x);
        Tensor dx = need_input_grad ? d_hidden_.rows(T) : Tensor{};
        if (need_input_grad)
          backend_.linear_backward_dx(dx, d_qkv_.rows(T), L.w_qkv, true, Activation::none, {});
        for (LoraSite site : kQkv)
          if (adapted(site)) lora_->backward(backend_, index, site, dx, d_qkv_.rows(T), x, T, lora_p(), step_seed_);
      });

  graph_.add(
      name + ".ffn",
      [this, &L, index, adapted] {
        const int64_t T = shape_.tokens;
        if (adapted(LoraSite::intermediate)) {
          // The adapter adds into the pre-activation, then applies the GELU.
          backend_.linear_forward(L.ffn_pre.rows(T), L.h1.rows(T), L.w_ffn1, L.b_ffn1, Activation::none, {});
          lora_->forward(backend_, index, LoraSite::intermediate, L.ffn_act.rows(T), L.h1.rows(T), T, lora_p(),
                         step_seed_, Activation::gelu, L.ffn_pre.rows(T));
        } else {
          backend_.linear_forward(L.ffn_act.rows(T), L.h1.rows(T), L.w_ffn1, L.b_ffn1, Activation::gelu,
                                  L.ffn_pre.rows(T));
        }
        backend_.linear_forward(branch_.rows(T), L.ffn_act.rows(T), L.w_ffn2, L.b_ffn2, Activation::none, {});
        if (adapted(LoraSite::output))
          lora_->forward(backend_, index, LoraSite::output, branch_.rows(T), L.ffn_act.rows(T), T, lora_p(),
                         step_seed_);
        backend_.add_dropout_layernorm_forward(L.h2.rows(T), L.s2.rows(T), L.mean2.rows(T), L.rstd2.rows(T),
                                               branch_.rows(T), L.h1.rows(T), L.ln2_g, L.ln2_b, config_.layer_norm_eps,
                                               p(config_.hidden_dropout_prob), rng(ffn_output_stream(index)));
      },
      // In: d_hidden (gradient of the layer output). Out: d_h1.
      [this, &L, index, adapted] {
        const int64_t T = shape_.tokens;
        backend_.add_dropout_layernorm_backward(d_branch_.rows(T), d_h1_.rows(T), ln_grad(L.dln2_g, 0),
                                                ln_grad(L.dln2_b, 1), d_hidden_.rows(T), L.s2.rows(T),
                                                L.mean2.rows(T), L.rstd2.rows(T), L.ln2_g,
                                                p(config_.hidden_dropout_prob), rng(ffn_output_stream(index)));
        linear_backward_params(L.dw_ffn2, L.db_ffn2, d_branch_.rows(T), L.ffn_act.rows(T));
        if (adapted(LoraSite::output)) {
          // Both paths' gradients are summed before the GELU's derivative multiplies them.
          backend_.linear_backward_dx(d_ffn_.rows(T), d_branch_.rows(T), L.w_ffn2, false, Activation::none, {});
          lora_->backward(backend_, index, LoraSite::output, d_ffn_.rows(T), d_branch_.rows(T), L.ffn_act.rows(T), T,
                          lora_p(), step_seed_, Activation::gelu, L.ffn_pre.rows(T));
        } else {
          backend_.linear_backward_dx(d_ffn_.rows(T), d_branch_.rows(T), L.w_ffn2, false, Activation::gelu,
                                      L.ffn_pre.rows(T));
        }
        linear_backward_params(L.dw_ffn1, L.db_ffn1, d_ffn_.rows(T), L.h1.rows(T));
        backend_.linear_backward_dx(d_h1_.rows(T), d_ffn_.rows(T), L.w_ffn1, true, Activation::none, {});
        if (adapted(LoraSite::intermediate))
          lora_->backward(backend_, index, LoraSite::intermediate, d_h1_.rows(T), d_ffn_.rows(T), L.h1.rows(T), T,
                          lora_p(), step_seed_);
      });
}

void BertModel::add_head() {
  Tensor last = layers_.empty() ? emb_out_ : layers_.back()->h2;
  const float drop = config_.classifier_dropout_prob();
  if (options_.head == Head::question_answering) {
    add_qa_head(last);
  } else if (options_.head == Head::token_classification) {
    graph_.add(
        "classifier",
        [this, last, drop] {
          const int64_t T = shape_.tokens;
          backend_.dropout_forward(head_in_drop_.rows(T), last.rows(T), p(drop), rng(kHeadDropout));
          backend_.linear_forward(logits_.rows(T), head_in_drop_.rows(T), params_.working("classifier.weight"),
                                  params_.working("classifier.bias"), Activation::none, {});
        },
        [this, drop] {
          const int64_t T = shape_.tokens;
          backend_.linear_backward_dw(params_.grad("classifier.weight"), params_.grad("classifier.bias"),
                                      d_logits_.rows(T), head_in_drop_.rows(T));
          backend_.linear_backward_dx(d_hidden_.rows(T), d_logits_.rows(T), params_.working("classifier.weight"),
                                      false, Activation::none, {});
          backend_.dropout_backward(d_hidden_.rows(T), d_hidden_.rows(T), p(drop), rng(kHeadDropout));
        });
  } else {
    graph_.add(
        "pooler",
        [this, last, drop] {
          const int64_t B = shape_.sequences;
          backend_.gather_rows(cls_.rows(B), last.rows(shape_.tokens), cls_rows_.rows(B));
          backend_.linear_forward(pooled_.rows(B), cls_.rows(B), params_.working("bert.pooler.dense.weight"),
                                  params_.working("bert.pooler.dense.bias"), Activation::none, {});
          backend_.tanh_forward(pooled_.rows(B), pooled_.rows(B));
          backend_.dropout_forward(pooled_drop_.rows(B), pooled_.rows(B), p(drop), rng(kHeadDropout));
        },
        // In: d_pooled (gradient of the dropped pooler output). Out: d_hidden, zero but at [CLS] rows.
        [this, drop] {
          const int64_t B = shape_.sequences, T = shape_.tokens;
          backend_.dropout_backward(d_pooled_.rows(B), d_pooled_.rows(B), p(drop), rng(kHeadDropout));
          backend_.tanh_backward(d_pooled_.rows(B), d_pooled_.rows(B), pooled_.rows(B));
          linear_backward_params(params_.grad("bert.pooler.dense.weight"), params_.grad("bert.pooler.dense.bias"),
                                 d_pooled_.rows(B), cls_.rows(B));
          backend_.linear_backward_dx(d_cls_.rows(B), d_pooled_.rows(B), params_.working("bert.pooler.dense.weight"),
                                      false, Activation::none, {});
          backend_.fill(d_hidden_.rows(T), 0.f);
          backend_.scatter_add_rows(d_hidden_.rows(T), d_cls_.rows(B), cls_rows_.rows(B));
        });
    graph_.add(
        "classifier",
        [this] {
          const int64_t B = shape_.sequences;
          backend_.linear_forward(logits_.rows(B), pooled_drop_.rows(B), params_.working("classifier.weight"),
                                  params_.working("classifier.bias"), Activation::none, {});
        },
        [this] {
          const int64_t B = shape_.sequences;
          backend_.linear_backward_dw(params_.grad("classifier.weight"), params_.grad("classifier.bias"),
                                      d_logits_.rows(B), pooled_drop_.rows(B));
          backend_.linear_backward_dx(d_pooled_.rows(B), d_logits_.rows(B), params_.working("classifier.weight"),
                                      false, Activation::none, {});
        });
  }
  // The loss writes per-row losses and, fused, the gradient of the logits; its backward is empty.
  graph_.add(
      "loss",
      [this] {
        if (!has_labels_) return;
        const int64_t rows = logit_rows();
        const int64_t mean_over = loss_rows_ > 0 ? loss_rows_ : counted_rows_;
        const float scale = counted_rows_ > 0 ? loss_weight_ / float(mean_over) : 0.f;
        if (options_.head == Head::question_answering) {
          // Each column's mean is over its own counted positions; in a data-parallel step over the
          // global batch's rows (exact when every position counts, as run_qa.py's windows give).
          const int64_t B = shape_.sequences;
          const float start_scale = loss_rows_ > 0 ? 0.5f / float(loss_rows_) : span_scale_[0];
          const float end_scale = loss_rows_ > 0 ? 0.5f / float(loss_rows_) : span_scale_[1];
          backend_.span_cross_entropy(losses_.rows(2 * B).view({B, 2}), d_logits_.rows(rows), logits_.rows(rows),
                                      cu_seqlens_.rows(B + 1), span_positions_.rows(B), shape_,
                                      loss_weight_ * start_scale, loss_weight_ * end_scale);
        } else if (is_regression()) {
          backend_.mse(losses_.rows(rows), d_logits_.rows(rows), logits_.rows(rows), targets_.rows(rows), scale);
        } else {
          backend_.cross_entropy(losses_.rows(rows), d_logits_.rows(rows), logits_.rows(rows), labels_.rows(rows),
                                 scale);
        }
      },
      {});
}

// BertForQuestionAnswering's head: qa_outputs, a linear layer [2, H] over every token of the
// encoder output, straight from the last layer (no dropout, no pooler): column 0 is the start logit,
// column 1 the end logit.
void BertModel::add_qa_head(Tensor last) {
  graph_.add(
      "qa_outputs",
      [this, last] {
        const int64_t T = shape_.tokens;
        backend_.linear_forward(logits_.rows(T), last.rows(T), params_.working("qa_outputs.weight"),
                                params_.working("qa_outputs.bias"), Activation::none, {});
      },
      [this, last] {
        const int64_t T = shape_.tokens;
        backend_.linear_backward_dw(params_.grad("qa_outputs.weight"), params_.grad("qa_outputs.bias"),
                                    d_logits_.rows(T), last.rows(T));
        backend_.linear_backward_dx(d_hidden_.rows(T), d_logits_.rows(T), params_.working("qa_outputs.weight"), false,
                                    Activation::none, {});
      });
}

void BertModel::init_weights(uint64_t seed) {
  std::vector<std::string> all;
  for (const ParamInfo& info : params_.list()) all.push_back(info.name);
  init_parameters(all, seed);
}

void BertModel::init_parameters(const std::vector<std::string>& names, uint64_t seed) {
  NormalSampler normal(seed);
  for (const std::string& name : names) {
    const ParamInfo& info = params_.get(name);
    std::vector<float> values(size_t(info.numel), 0.f);
    if (name.find("LayerNorm.weight") != std::string::npos) {
      std::fill(values.begin(), values.end(), 1.f);
    } else if (name.find(".lora_B.") != std::string::npos) {
      // zero: the adapted model starts as the base model
    } else if (name.find(".lora_A.") != std::string::npos) {
      const double bound = 1.0 / std::sqrt(double(info.shape[1]));  // Kaiming-uniform, a = sqrt(5)
      for (float& v : values) v = float(normal.uniform(-bound, bound));
    } else if (info.shape.size() == 2) {
      for (float& v : values) v = normal(config_.initializer_range);
    }
    if (name == "bert.embeddings.word_embeddings.weight" && config_.pad_token_id >= 0 &&
        config_.pad_token_id < config_.vocab_size) {
      std::fill_n(values.begin() + config_.pad_token_id * config_.hidden_size, config_.hidden_size, 0.f);
    }
    params_.set_host(backend_, name, values);
  }
}

int64_t BertModel::logit_rows() const {
  return options_.head == Head::sequence_classification ? shape_.sequences : shape_.tokens;
}

// Question answering's labels: each sequence's gold start and end token. HF's loss is the mean of
// the start cross-entropy over the positions it counts and the same for the end, halved: positions
// past a sequence's end are ignored (see Backend::span_cross_entropy), so each column is scaled by
// its own count.
void BertModel::set_span_positions(const PackedBatch& batch) {
  const int64_t B = shape_.sequences;
  ENGINE_CHECK(int64_t(batch.span_positions.size()) == 2 * B, "batch: ", batch.span_positions.size(),
               " span positions for ", B, " sequences (two each)");
  int64_t counted[2] = {0, 0};
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = batch.cu_seqlens[b + 1] - batch.cu_seqlens[b];
    for (int j = 0; j < 2; ++j) counted[j] += std::max<int32_t>(batch.span_positions[b * 2 + j], 0) < len;
  }
  for (int j = 0; j < 2; ++j) span_scale_[j] = counted[j] > 0 ? 0.5f / float(counted[j]) : 0.f;
  counted_rows_ = std::max(counted[0], counted[1]);
  backend_.copy_from_host(span_positions_.rows(B), batch.span_positions.data());
}

// (mean start loss + mean end loss) / 2, each mean over its counted positions (span_scale_ = 0.5 / count).
float BertModel::span_loss() {
  const int64_t B = shape_.sequences;
  std::vector<float> host(size_t(2 * B));
  backend_.copy_to_host(host.data(), losses_.rows(2 * B));
  double loss = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int j = 0; j < 2; ++j) loss += double(host[size_t(b * 2 + j)]) * double(span_scale_[j]);
  return float(loss);
}

void BertModel::set_batch(const PackedBatch& batch, bool with_labels) {
  const int64_t T = int64_t(batch.ids.size()), B = int64_t(batch.cu_seqlens.size()) - 1;
  ENGINE_CHECK(B > 0 && T > 0, "empty batch");
  ENGINE_CHECK(T <= options_.max_tokens, "batch of ", T, " tokens exceeds the planned capacity of ", options_.max_tokens);
  ENGINE_CHECK(B <= options_.max_sequences, "batch of ", B, " sequences exceeds the planned capacity of ",
               options_.max_sequences);
  ENGINE_CHECK(int64_t(batch.type_ids.size()) == T && int64_t(batch.pos_ids.size()) == T,
               "batch: ids, type_ids and pos_ids differ in length");
  ENGINE_CHECK(batch.cu_seqlens.front() == 0 && batch.cu_seqlens.back() == T, "batch: cu_seqlens must run from 0 to ",
               T);
  int64_t max_len = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t len = batch.cu_seqlens[b + 1] - batch.cu_seqlens[b];
    ENGINE_CHECK(len > 0, "batch: sequence ", b, " is empty");
    ENGINE_CHECK(len <= config_.max_position_embeddings, "batch: sequence ", b, " has ", len,
                 " tokens, more than max_position_embeddings ", config_.max_position_embeddings);
    max_len = std::max(max_len, len);
  }
  for (int64_t t = 0; t < T; ++t) {
    ENGINE_CHECK(batch.ids[t] >= 0 && batch.ids[t] < config_.vocab_size, "batch: token id ", batch.ids[t],
                 " outside the vocabulary of ", config_.vocab_size);
    ENGINE_CHECK(batch.type_ids[t] >= 0 && batch.type_ids[t] < config_.type_vocab_size, "batch: token type id ",
                 batch.type_ids[t], " outside type_vocab_size ", config_.type_vocab_size);
    ENGINE_CHECK(batch.pos_ids[t] >= 0 && batch.pos_ids[t] < config_.max_position_embeddings, "batch: position ",
                 batch.pos_ids[t], " outside max_position_embeddings ", config_.max_position_embeddings);
  }
  shape_ = BatchShape{T, B, max_len};
  backend_.copy_from_host(ids_.rows(T), batch.ids.data());
  backend_.copy_from_host(type_ids_.rows(T), batch.type_ids.data());
  backend_.copy_from_host(pos_ids_.rows(T), batch.pos_ids.data());
  backend_.copy_from_host(cu_seqlens_.rows(B + 1), batch.cu_seqlens.data());
  backend_.copy_from_host(cls_rows_.rows(B), batch.cu_seqlens.data());

  counted_rows_ = 0;
  token_offset_ = sequence_offset_ = loss_rows_ = 0;
  if (lora_) lora_->set_token_offset(0);
  has_labels_ = with_labels;
  if (!with_labels) {
    // nothing to upload
  } else if (options_.head == Head::question_answering) {
    set_span_positions(batch);
  } else if (is_regression()) {
    ENGINE_CHECK(int64_t(batch.targets.size()) == B, "batch: ", batch.targets.size(), " targets for ", B,
                 " sequences");
    for (float t : batch.targets) ENGINE_CHECK(std::isfinite(t), "batch: regression target ", t, " is not finite");
    backend_.copy_from_host(targets_.rows(B), batch.targets.data());
    counted_rows_ = B;
  } else {
    const bool per_token = options_.head == Head::token_classification;
    const std::vector<int32_t>& labels = per_token ? batch.token_labels : batch.labels;
    const int64_t rows = per_token ? T : B;
    ENGINE_CHECK(int64_t(labels.size()) == rows, "batch: ", labels.size(), " labels for ", rows,
                 per_token ? " tokens" : " sequences");
    for (int32_t label : labels) {
      ENGINE_CHECK(label < config_.num_labels, "batch: label ", label, " but the model has ", config_.num_labels,
                   " labels");
      counted_rows_ += label >= 0;
    }
    backend_.copy_from_host(labels_.rows(rows), labels.data());
  }
  backward_ready_ = false;
}

void BertModel::set_global_offset(int64_t token_offset, int64_t sequence_offset) {
  ENGINE_CHECK(token_offset >= 0 && sequence_offset >= 0, "negative batch offset");
  token_offset_ = token_offset;
  sequence_offset_ = sequence_offset;
  if (lora_) lora_->set_token_offset(token_offset);
}

void BertModel::set_loss_rows(int64_t rows) {
  ENGINE_CHECK(rows >= counted_rows_, "the loss cannot be averaged over ", rows, " rows: the batch counts ",
               counted_rows_);
  loss_rows_ = rows;
}

// A site's element indices start at its first row's index in the global batch: rows are tokens
// ([T, H] sites and attention probabilities) but for the pooled [CLS] rows ([B, H]).
DropoutRng BertModel::rng(uint32_t stream) const {
  const uint64_t H = uint64_t(config_.hidden_size);
  uint64_t offset = uint64_t(token_offset_) * H;
  if (stream >= attention_probs_stream(0) && (stream - attention_probs_stream(0)) % 4 == 0)
    offset = attention_dropout_index(token_offset_, 0, int(config_.num_attention_heads), 0);
  else if (stream == kHeadDropout && options_.head == Head::sequence_classification)
    offset = uint64_t(sequence_offset_) * H;
  return DropoutRng{step_seed_, stream, offset};
}

void BertModel::forward(Pass pass, uint64_t dropout_seed, float loss_weight) {
  ENGINE_CHECK(shape_.tokens > 0, "forward() before set_batch()");
  pass_ = pass;
  step_seed_ = dropout_seed;
  loss_weight_ = loss_weight;
  graph_.forward();
  backward_ready_ = has_labels_;
}

void BertModel::backward() {
  ENGINE_CHECK(backward_ready_, "backward() needs a forward pass over a batch with labels");
  graph_.backward();
  backward_ready_ = false;
}

float BertModel::loss() {
  ENGINE_CHECK(has_labels_, "loss() of a batch without labels");
  if (options_.head == Head::question_answering) return span_loss();
  const int64_t rows = logit_rows();
  std::vector<float> host(static_cast<size_t>(rows));
  backend_.copy_to_host(host.data(), losses_.rows(rows));
  double sum = 0;
  for (float v : host) sum += v;
  return counted_rows_ > 0 ? float(sum / double(counted_rows_)) : 0.f;
}

std::vector<float> BertModel::logits() {
  Tensor t = logits_.rows(logit_rows());
  std::vector<float> out(size_t(t.numel()));
  if (t.dtype == DType::f32) {
    backend_.copy_to_host(out.data(), t);
  } else {
    std::vector<uint16_t> raw(out.size());
    backend_.copy_to_host(raw.data(), t);
    for (size_t i = 0; i < raw.size(); ++i)
      out[i] = t.dtype == DType::bf16 ? bf16_to_float(raw[i]) : fp16_to_float(raw[i]);
  }
  return out;
}

void BertModel::zero_grads() { backend_.fill(params_.grads(), 0.f); }

}  // namespace engine
