// LoRA adapters against Hugging Face peft and through the engine's own files: an adapter directory
// saved by peft (tests/fixtures/peft_tiny_lora, made by tools/make_peft_fixture.py, on the tiny
// random base tests/fixtures/hf_tiny_cls) loads into the engine, whose CPU backend then reproduces
// peft's float64 logits, loss and the gradient of every adapter and of the classifier; the engine's
// saved adapter directory loads back bit for bit; merged weights give the adapted model's logits;
// and every bad adapter directory is a clear error.
#include <gtest/gtest.h>

#include "test_seed.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "engine/model/adapter_files.h"
#include "engine/model/checkpoint.h"

namespace engine {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) { return std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/" + name; }
const std::string kBase = fixture("hf_tiny_cls"), kAdapter = fixture("peft_tiny_lora");

PackedBatch read_inputs(const std::string& dir) {
  std::ifstream in(dir + "/inputs.json");
  nlohmann::json j = nlohmann::json::parse(in);
  std::vector<TokenizedExample> examples;
  std::vector<int64_t> positions;
  for (const auto& s : j["sequences"]) {
    TokenizedExample e;
    e.ids = s["ids"].get<std::vector<int32_t>>();
    e.type_ids = s["type_ids"].get<std::vector<int32_t>>();
    e.label = s["label"].get<int32_t>();
    positions.push_back(int64_t(examples.size()));
    examples.push_back(std::move(e));
  }
  return pack_batch(examples, positions);
}

// Max |a - e| over max |e|; NaN fails.
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

// The base with peft's adapters: the model the adapter directory describes, weights loaded.
std::unique_ptr<BertModel> adapted_model(Backend& backend, const std::string& adapter_dir) {
  ModelOptions mo;
  mo.lora = read_adapter_config(adapter_dir);
  auto model = std::make_unique<BertModel>(backend, read_model_config(kBase), mo);
  LoadReport report = load_weights(*model, kBase, false, 1);
  load_adapter_weights(*model, adapter_dir);
  return model;
}

std::vector<float> eval_logits(BertModel& model) {
  model.set_batch(read_inputs(kBase));
  model.forward(Pass::eval, 0);
  return model.logits();
}

TEST(LoraPeft, PeftAdapterGivesPeftsLogitsLossAndGradients) {
  auto backend = make_backend("cpu-ref");
  auto model = adapted_model(*backend, kAdapter);
  EXPECT_EQ(model->options().lora.r, 4);
  EXPECT_FLOAT_EQ(model->options().lora.scale(), 2.f);
  model->set_batch(read_inputs(kBase));
  model->zero_grads();
  model->forward(Pass::eval, 0);
  model->backward();

  io::SafetensorsFile expected = io::SafetensorsFile::open(kAdapter + "/expected.safetensors");
  EXPECT_LT(scaled_error(model->logits(), expected.to_f32("logits")), 1e-5) << "logits";
  const float loss = model->loss(), ref = expected.to_f32("loss")[0];
  EXPECT_LT(std::fabs(loss - ref), 1e-5 * std::fabs(ref)) << "loss " << loss << " vs peft " << ref;
  int compared = 0;
  for (const ParamInfo& p : model->params().list()) {
    if (!p.trainable) continue;
    ASSERT_TRUE(expected.has("grad." + p.name)) << p.name;
    EXPECT_LT(scaled_error(model->params().grad_host(*backend, p.name), expected.to_f32("grad." + p.name)), 1e-5)
        << "gradient of " << p.name;
    ++compared;
  }
  EXPECT_EQ(compared, 26);  // 2 layers x 6 adapted layers x (A, B) + the classifier's weight and bias
}

TEST(LoraPeft, SavedAdapterLoadsBackBitForBit) {
  auto backend = make_backend("cpu-ref");
  auto model = adapted_model(*backend, kAdapter);
  const std::vector<float> logits = eval_logits(*model);
  const std::string dir = testing::TempDir() + "lora_saved_" + unique_suffix();
  SaveOptions so;
  so.adapter_base = "tests/fixtures/hf_tiny_cls";
  so.extra_config[kAdapterBaseKey] = base_fingerprint(kBase);
  save_pretrained(*model, dir, so);
  EXPECT_TRUE(fs::exists(dir + "/adapter_config.json"));
  EXPECT_TRUE(fs::exists(dir + "/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/model.safetensors"));  // the frozen base is not copied
  check_adapter_base(dir, kBase);
  auto reloaded = adapted_model(*backend, dir);
  EXPECT_EQ(eval_logits(*reloaded), logits);
  // Only the adapters and the head are in the file, under peft's keys.
  io::SafetensorsFile saved = io::SafetensorsFile::open(dir + "/adapter_model.safetensors");
  EXPECT_EQ(saved.tensors().size(), 26u);
  EXPECT_TRUE(saved.has("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"));
  EXPECT_TRUE(saved.has("base_model.model.classifier.weight"));
  fs::remove_all(dir);
}

TEST(LoraPeft, MergedWeightsGiveTheAdaptedLogits) {
  auto backend = make_backend("cpu-ref");
  auto model = adapted_model(*backend, kAdapter);
  BertModel plain(*backend, model->config(), ModelOptions{});
  merge_adapters(*model, plain);
  const std::vector<float> adapted = eval_logits(*model), merged = eval_logits(plain);
  EXPECT_LT(scaled_error(merged, adapted), 1e-5);
  // The merge changed the adapted weights and nothing else.
  EXPECT_NE(plain.params().get_host(*backend, "bert.encoder.layer.0.attention.self.key.weight"),
            model->params().get_host(*backend, "bert.encoder.layer.0.attention.self.key.weight"));
  EXPECT_EQ(plain.params().get_host(*backend, "bert.pooler.dense.weight"),
            model->params().get_host(*backend, "bert.pooler.dense.weight"));
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// A copy of the fixture adapter in a temporary directory, for corrupting.
std::string copy_adapter() {
  const std::string dir = testing::TempDir() + "lora_bad_" + unique_suffix();
  fs::create_directories(dir);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(kAdapter + "/" + f, dir + "/" + f);
  return dir;
}

TEST(LoraPeft, BadAdapterDirectoriesAreClearErrors) {
  auto backend = make_backend("cpu-ref");
  std::string dir = copy_adapter();
  fs::remove(dir + "/adapter_config.json");
  std::string e = error_of([&] { read_adapter_config(dir); });
  EXPECT_NE(e.find("has no adapter_config.json"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { read_adapter_config(kBase); }).find("it holds a whole model"), std::string::npos);

  // A base of another shape (intermediate size 96 instead of 128).
  dir = copy_adapter();
  BertConfig other = read_model_config(kBase);
  other.intermediate_size = 96;
  ModelOptions mo;
  mo.lora = read_adapter_config(dir);
  BertModel wrong(*backend, other, mo);
  e = error_of([&] { load_adapter_weights(wrong, dir); });
  EXPECT_NE(e.find("has shape [128, 4] but the model needs [96, 4]"), std::string::npos) << e;

  // A recorded base fingerprint that is not this base's.
  std::ofstream(dir + "/config.json") << "{\"" << kAdapterBaseKey << "\": \"0123456789abcdef\"}";
  e = error_of([&] { check_adapter_base(dir, kBase); });
  EXPECT_NE(e.find("trained on another base model"), std::string::npos) << e;

  // peft options the engine does not implement, and a target it does not know.
  auto with = [&](const std::string& key, nlohmann::json value) {
    nlohmann::json j = nlohmann::json::parse(io::read_file(kAdapter + "/adapter_config.json"));
    j[key] = value;
    io::write_file_atomic(dir + "/adapter_config.json", j.dump());
    return error_of([&] { read_adapter_config(dir); });
  };
  EXPECT_NE(with("use_rslora", true).find("rank-stabilised"), std::string::npos);
  EXPECT_NE(with("use_dora", true).find("DoRA"), std::string::npos);
  EXPECT_NE(with("target_modules", ".*query").find("regular expression"), std::string::npos);
  EXPECT_NE(with("target_modules", {"qurey"}).find("unknown module 'qurey'"), std::string::npos);
  EXPECT_NE(with("r", 0).find("--lora-r must be at least 1"), std::string::npos);
  EXPECT_NE(with("peft_type", "IA3").find("LORA adapters only"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace engine
