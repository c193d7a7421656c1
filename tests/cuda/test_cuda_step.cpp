// A whole training step on the CUDA backend against the CPU reference: the same tiny BERT, the
// same weights and the same mixed-length batch (dropout on, so the Philox masks must agree too).
//   fp32 (attention "simple": the fused kernel is bf16-only): loss, logits and every parameter
//   gradient match the CPU; bf16 (attention "flash"): within bf16 tolerance; ten bf16 training
//   steps follow the fp32 loss curve; twenty steps twice give bitwise identical parameters.
// Skips without a GPU.
#include <gtest/gtest.h>

#include "../test_seed.h"

#include <cmath>
#include <cstring>
#include <random>

#include "engine/bf16.h"
#include "engine/model/bert.h"
#include "engine/train/optimizer.h"

namespace engine {
namespace {

BertConfig tiny_config(Head head = Head::sequence_classification) {
  BertConfig c;
  c.vocab_size = 100;
  c.hidden_size = 128;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;  // head dim 64, which the fused kernel supports
  c.intermediate_size = 256;
  c.max_position_embeddings = 160;
  c.num_labels = head == Head::question_answering ? 2 : 3;
  c.initializer_range = 0.1f;
  return c;
}

PackedBatch random_batch(std::mt19937_64& rng, const BertConfig& c, Head head = Head::sequence_classification) {
  std::vector<TokenizedExample> examples;
  std::vector<int64_t> positions;
  for (int len : {1, 7, 129, 33, 64}) {
    TokenizedExample e;
    for (int i = 0; i < len; ++i) {
      e.ids.push_back(int32_t(rng() % uint64_t(c.vocab_size)));
      e.type_ids.push_back(i > len / 2 ? 1 : 0);
    }
    e.label = int32_t(rng() % uint64_t(c.num_labels));
    if (head == Head::question_answering) {  // an answer span; 64 (== the last length) is ignored
      e.span_start = int32_t(rng() % uint64_t(len));
      e.span_end = len == 64 ? 64 : int32_t(rng() % uint64_t(len));
    }
    positions.push_back(int64_t(examples.size()));
    examples.push_back(std::move(e));
  }
  return pack_batch(examples, positions);
}

struct StepRun {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<BertModel> model;
};

// With adapters (lora.r > 0), B is drawn too (peft starts it at zero, which would leave A without
// gradient), from the same seed on both backends.
StepRun make(const std::string& backend, DType act, const std::string& attention, uint64_t seed,
             const LoraConfig& lora = {}, Head head = Head::sequence_classification) {
  StepRun s;
  BackendOptions bo;
  bo.attention = attention;
  s.backend = make_backend(backend, bo);
  ModelOptions mo;
  mo.act = act;
  mo.max_tokens = 512;
  mo.max_sequences = 8;
  mo.lora = lora;
  mo.head = head;
  s.model = std::make_unique<BertModel>(*s.backend, tiny_config(head), mo);
  s.model->init_weights(seed);
  std::mt19937_64 rng(seed);
  for (const ParamInfo& p : s.model->params().list()) {
    if (p.name.find(".lora_B.") == std::string::npos) continue;
    std::vector<float> b(size_t(p.numel));
    for (float& v : b) v = float(int64_t(rng() % 2001) - 1000) * 1e-4f;
    s.model->params().set_host(*s.backend, p.name, b);
  }
  return s;
}

double scaled_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    err = std::max(err, std::fabs(double(a[i]) - ref[i]));
    scale = std::max(scale, std::fabs(double(ref[i])));
  }
  return scale > 0 ? err / scale : err;
}

// qk_grad_tol: the tolerance of the query and key weights and biases, whose gradients come from dS.
void compare_step(DType act, const std::string& attention, double logits_tol, double grad_tol, double qk_grad_tol,
                  const LoraConfig& lora = {}, Head head = Head::sequence_classification) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  PackedBatch batch = random_batch(rng, tiny_config(head), head);
  StepRun cpu = make("cpu-ref", DType::f32, "simple", seed, lora, head),
          gpu = make("cuda", act, attention, seed, lora, head);
  if (act == DType::bf16) {
    // The CPU runs on the same bf16-rounded weights the GPU computes with.
    for (const ParamInfo& p : cpu.model->params().list()) {
      std::vector<float> w = gpu.model->params().get_host(*gpu.backend, p.name);
      std::vector<uint16_t> raw(w.size());
      gpu.backend->copy_to_host(raw.data(), gpu.model->params().working(p.name));
      for (size_t i = 0; i < w.size(); ++i) w[i] = bf16_to_float(raw[i]);
      cpu.model->params().set_host(*cpu.backend, p.name, w);
    }
  }
  const uint64_t dropout_seed = rng();
  for (StepRun* s : {&cpu, &gpu}) {
    s->model->set_batch(batch);
    s->model->zero_grads();
    s->model->forward(Pass::train, dropout_seed);
    s->model->backward();
  }
  EXPECT_LT(scaled_error(gpu.model->logits(), cpu.model->logits()), logits_tol) << "logits";
  float lc = cpu.model->loss(), lg = gpu.model->loss();
  EXPECT_LT(std::fabs(lg - lc), logits_tol * std::fabs(lc)) << "loss cpu " << lc << " gpu " << lg;
  // Question answering: each sequence's softmax gradient sums to zero over its tokens, so the
  // gradients of qa_outputs.bias and of the last layer's output LayerNorm bias (sums over tokens of
  // d_logits and of d_logits W) are zero analytically: both backends must give a value far below
  // the scale of qa_outputs.weight's gradient (finite: NaN fails).
  const std::string last_ln_bias =
      "bert.encoder.layer." + std::to_string(tiny_config().num_hidden_layers - 1) + ".output.LayerNorm.bias";
  double head_scale = 0;
  if (head == Head::question_answering)
    for (float v : cpu.model->params().grad_host(*cpu.backend, "qa_outputs.weight"))
      head_scale = std::max(head_scale, std::fabs(double(v)));
  for (const ParamInfo& p : cpu.model->params().list()) {
    if (!p.trainable) continue;  // frozen under adapters: no gradient
    double err = scaled_error(gpu.model->params().grad_host(*gpu.backend, p.name),
                              cpu.model->params().grad_host(*cpu.backend, p.name));
    if (head == Head::question_answering && (p.name == "qa_outputs.bias" || p.name == last_ln_bias)) {
      double largest = 0;
      for (float v : gpu.model->params().grad_host(*gpu.backend, p.name))
        largest = std::isfinite(v) ? std::max(largest, std::fabs(double(v))) : INFINITY;
      EXPECT_LT(largest, grad_tol * head_scale) << "gradient of " << p.name << " should vanish";
      continue;
    }
    if (p.name.find("attention.self.key.bias") != std::string::npos) continue;  // analytically zero
    const bool qk = p.name.find("attention.self.query") != std::string::npos ||
                    p.name.find("attention.self.key") != std::string::npos;
    EXPECT_LT(err, qk ? qk_grad_tol : grad_tol) << "gradient of " << p.name;
  }
}

// fp32: the CPU accumulates in double, cuBLASLt in f32 in another order: a few f32 ulps at the
// tensor's scale, compounded over two layers.
TEST(CudaStep, Fp32MatchesCpu) { compare_step(DType::f32, "simple", 5e-5, 1e-4, 1e-4); }
// bf16 activations: 8 bits of mantissa per stored activation, rounded at every op.
// The fused kernel also rounds dS to bf16 as the operand of dQ = dS K and dK = dS^T Q (as
// FlashAttention-2 does). Rounding breaks sum_j dS_ij = 0, and where attention is near uniform (small
// initial weights) and the keys share a common part, dQ and dK are small differences of large terms:
// the sim measured up to 7.8% on the query weights for one seed in ~40 (the simple kernel, dS in
// f32: 1.7% on the same seed), typically 2-3%. Their tolerance is 12e-2; test_attention checks the
// kernel's dQ and dK at 2e-2 on N(0, 1) inputs.
TEST(CudaStep, Bf16FlashWithinTolerance) { compare_step(DType::bf16, "flash", 3e-2, 6e-2, 12e-2); }
TEST(CudaStep, Bf16SimpleAttentionWithinTolerance) { compare_step(DType::bf16, "simple", 3e-2, 6e-2, 6e-2); }
// Question answering: qa_outputs over every token and the span loss (one softmax per sequence,
// one sequence's end ignored), same tolerances as the classifier.
TEST(CudaStep, QuestionAnsweringFp32MatchesCpu) {
  compare_step(DType::f32, "simple", 5e-5, 1e-4, 1e-4, {}, Head::question_answering);
}
TEST(CudaStep, QuestionAnsweringBf16FlashWithinTolerance) {
  compare_step(DType::bf16, "flash", 3e-2, 6e-2, 12e-2, {}, Head::question_answering);
}

// LoRA adapters on every linear layer, adapter dropout on: the adapters' and the classifier's
// gradients (the only ones there are), with the tolerances of the plain step.
LoraConfig all_linear_lora() {
  LoraConfig l;
  l.r = 8;
  l.alpha = 16;
  l.dropout = 0.1f;
  l.target_modules = {"query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"};
  return l;
}
TEST(CudaStep, Fp32LoraMatchesCpu) { compare_step(DType::f32, "simple", 5e-5, 1e-4, 1e-4, all_linear_lora()); }
TEST(CudaStep, Bf16LoraWithinTolerance) { compare_step(DType::bf16, "simple", 3e-2, 6e-2, 6e-2, all_linear_lora()); }

std::vector<float> train_losses(StepRun& s, const std::vector<PackedBatch>& batches, uint64_t seed) {
  Optimizer opt(*s.backend, s.model->params(), AdamWConfig{});
  std::vector<float> losses;
  for (size_t step = 0; step < batches.size(); ++step) {
    s.model->set_batch(batches[step]);
    s.model->zero_grads();
    s.model->forward(Pass::train, seed + step);
    s.model->backward();
    opt.compute_grad_norm();
    opt.step(1e-3f);
    losses.push_back(s.model->loss());
  }
  return losses;
}

// Two random batches, alternated for ten steps: the model memorises them, so the fp32 loss on the
// same two batches falls for every seed (ten fresh batches of random labels gave no such guarantee:
// the first run in the sim failed it for a seed).
TEST(CudaStep, TenBf16StepsFollowTheFp32LossCurve) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const PackedBatch two[2] = {random_batch(rng, tiny_config()), random_batch(rng, tiny_config())};
  std::vector<PackedBatch> batches;
  for (int i = 0; i < 10; ++i) batches.push_back(two[i % 2]);
  StepRun f32 = make("cuda", DType::f32, "simple", seed), bf16 = make("cuda", DType::bf16, "flash", seed);
  std::vector<float> a = train_losses(f32, batches, seed), b = train_losses(bf16, batches, seed);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_TRUE(std::isfinite(b[i])) << "step " << i;
    EXPECT_LT(std::fabs(a[i] - b[i]), 0.05 * std::fabs(a[i]) + 0.02) << "step " << i << ": fp32 " << a[i] << ", bf16 " << b[i];
  }
  EXPECT_LT(a[8] + a[9], 0.9 * (a[0] + a[1])) << "the fp32 loss on the same two batches should fall";
}

TEST(CudaStep, TwentyStepsAreBitwiseDeterministic) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA GPU visible";
  const uint64_t seed = pick_seed();
  std::mt19937_64 rng(seed);
  std::vector<PackedBatch> batches;
  for (int i = 0; i < 20; ++i) batches.push_back(random_batch(rng, tiny_config()));
  std::vector<float> params[2];
  for (int run = 0; run < 2; ++run) {
    StepRun s = make("cuda", DType::bf16, "flash", seed);
    train_losses(s, batches, seed);
    params[run] = s.model->params().master_host(*s.backend);
  }
  ASSERT_EQ(params[0].size(), params[1].size());
  EXPECT_EQ(0, std::memcmp(params[0].data(), params[1].data(), params[0].size() * sizeof(float)))
      << "two runs with seed " << seed << " differ";
}

}  // namespace
}  // namespace engine
