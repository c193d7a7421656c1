// Parity with Hugging Face transformers: a tiny random BertForSequenceClassification saved by
// transformers (tests/fixtures/hf_tiny_*, made by tools/make_hf_fixture.py; hf_tiny_qa, a
// BertForQuestionAnswering, by tools/make_hf_qa_fixture.py), the same mixed-length
// batch of singles and pairs, eval mode. The engine loads the directory, runs the packed batch on
// the CPU backend in f32, and must reproduce transformers' float64 logits, loss and the gradient
// of every parameter.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "engine/io/safetensors.h"
#include "engine/model/checkpoint.h"

namespace engine {
namespace {

std::string fixture(const std::string& name) { return std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/" + name; }

PackedBatch read_inputs(const std::string& dir) {
  std::ifstream in(dir + "/inputs.json");
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<TokenizedExample> examples;
  std::vector<int64_t> positions;
  for (const auto& s : j["sequences"]) {
    TokenizedExample e;
    e.ids = s["ids"].get<std::vector<int32_t>>();
    e.type_ids = s["type_ids"].get<std::vector<int32_t>>();
    if (s.contains("start")) {  // question answering: span positions, no label
      e.span_start = s["start"].get<int32_t>();
      e.span_end = s["end"].get<int32_t>();
    } else {
      if (s["label"].is_number_integer()) e.label = s["label"].get<int32_t>();
      e.target = s["label"].get<float>();
    }
    positions.push_back(int64_t(examples.size()));
    examples.push_back(std::move(e));
  }
  return pack_batch(examples, positions);
}

// Max |a - e| relative to max |e| over the tensor: errors are judged against the tensor's scale,
// so tiny elements of a large gradient do not demand impossible relative precision. NaN fails.
double scaled_error(const std::vector<float>& actual, const std::vector<float>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < expected.size() && i < actual.size(); ++i) {
    if (!std::isfinite(actual[i])) return INFINITY;
    max_err = std::max(max_err, std::fabs(double(actual[i]) - double(expected[i])));
    max_ref = std::max(max_ref, std::fabs(double(expected[i])));
  }
  return max_ref > 0 ? max_err / max_ref : max_err;
}

void check_fixture(const std::string& name, bool regression, Head head = Head::sequence_classification) {
  const std::string dir = fixture(name);
  auto backend = make_backend("cpu-ref");
  BertConfig config = read_model_config(dir);
  const bool qa = head == Head::question_answering;
  ASSERT_EQ(config.num_labels, regression ? 1 : qa ? 2 : 3);
  ModelOptions options;
  options.head = head;
  BertModel model(*backend, config, options);
  LoadReport report = load_weights(model, dir, false, 1);
  EXPECT_TRUE(report.initialised.empty()) << report.summary();
  EXPECT_EQ(report.loaded, int(model.params().list().size()));

  model.set_batch(read_inputs(dir));
  model.zero_grads();
  model.forward(Pass::eval, 0);
  model.backward();

  io::SafetensorsFile expected = io::SafetensorsFile::open(dir + "/expected.safetensors");
  EXPECT_LT(scaled_error(model.logits(), expected.to_f32("logits")), 1e-5) << "logits";
  float loss = model.loss(), ref = expected.to_f32("loss")[0];
  EXPECT_LT(std::fabs(loss - ref), 1e-5 * std::fabs(ref)) << "loss " << loss << " vs transformers " << ref;

  int compared = 0;
  for (const ParamInfo& p : model.params().list()) {
    ASSERT_TRUE(expected.has("grad." + p.name)) << p.name;
    std::vector<float> ref_grad = expected.to_f32("grad." + p.name);
    std::vector<float> grad = model.params().grad_host(*backend, p.name);
    double ref_scale = 0, max_abs = 0;
    for (float v : ref_grad) ref_scale = std::max(ref_scale, std::fabs(double(v)));
    for (float v : grad) max_abs = std::isfinite(v) ? std::max(max_abs, std::fabs(double(v))) : INFINITY;
    if (ref_scale < 1e-10) {
      // The key bias adds the same amount to every score of a query row, which softmax cancels:
      // its gradient is zero in exact arithmetic and float64 rounding noise in the reference.
      // Ours must be zero up to f32 rounding of the other gradients (~1e-7 of their scale).
      EXPECT_LT(max_abs, 1e-6) << "gradient of " << p.name << " should vanish";
    } else {
      // f32 forward and backward against a float64 reference: a few ulps of f32 at the tensor's scale.
      EXPECT_LT(scaled_error(grad, ref_grad), 2e-5) << "gradient of " << p.name;
    }
    ++compared;
  }
  EXPECT_EQ(compared, qa ? 39 : 41);  // question answering: no pooler
}

TEST(HfParity, SequenceClassificationPairsMixedLengths) { check_fixture("hf_tiny_cls", false); }
TEST(HfParity, RegressionMse) { check_fixture("hf_tiny_reg", true); }
// BertForQuestionAnswering: start/end logits of every token, the loss with a position below 0
// (clamped to [CLS]) and one at the padded length (ignored), every gradient.
TEST(HfParity, QuestionAnsweringSpans) { check_fixture("hf_tiny_qa", false, Head::question_answering); }

}  // namespace
}  // namespace engine
