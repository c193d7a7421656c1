#include "engine/model/checkpoint.h"

#include <filesystem>
#include <set>

#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "engine/model/adapter_files.h"
#include "engine/model/lora.h"

namespace engine {

namespace fs = std::filesystem;

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The names a parameter may have in a file: HF's, without `bert.`, with the old gamma/beta spelling.
std::vector<std::string> candidate_names(const std::string& name) {
  std::vector<std::string> names{name};
  const std::string prefix = "bert.";
  if (name.rfind(prefix, 0) == 0) names.push_back(name.substr(prefix.size()));
  size_t n = names.size();
  for (size_t i = 0; i < n; ++i) {
    const std::string s = names[i];  // a copy: push_back below may reallocate
    if (s.size() > 16 && s.compare(s.size() - 16, 16, "LayerNorm.weight") == 0)
      names.push_back(s.substr(0, s.size() - 6) + "gamma");
    if (s.size() > 14 && s.compare(s.size() - 14, 14, "LayerNorm.bias") == 0)
      names.push_back(s.substr(0, s.size() - 4) + "beta");
  }
  return names;
}

bool is_head(const std::string& name) { return name.rfind("classifier.", 0) == 0 || name.rfind("qa_outputs.", 0) == 0; }
bool is_pooler(const std::string& name) { return name.rfind("bert.pooler.", 0) == 0; }

std::string architecture(const BertModel& model) {
  switch (model.options().head) {
    case Head::token_classification: return "BertForTokenClassification";
    case Head::question_answering: return "BertForQuestionAnswering";
    case Head::sequence_classification: break;
  }
  return "BertForSequenceClassification";
}

// model.safetensors: every parameter in f32 under its HF name.
void write_model_weights(BertModel& model, const std::string& path) {
  std::vector<std::vector<float>> values;
  std::vector<io::SafetensorsWriteEntry> entries;
  const auto& params = model.params().list();
  values.reserve(params.size());
  for (const ParamInfo& p : params) values.push_back(model.params().get_host(model.backend(), p.name));
  for (size_t i = 0; i < params.size(); ++i)
    entries.push_back({params[i].name, DType::f32, params[i].shape, values[i].data()});
  io::write_safetensors(path, entries, {{"format", "pt"}});
}

}  // namespace

std::string LoadReport::summary() const {
  std::string s = std::to_string(loaded) + " tensors loaded";
  int adapters = 0;
  std::string others;
  for (const std::string& n : initialised) {
    if (is_lora_parameter(n))
      ++adapters;
    else
      others += " " + n;
  }
  if (!others.empty()) s += "; initialised (not in the checkpoint):" + others;
  if (adapters) s += "; " + std::to_string(adapters) + " LoRA tensors initialised (A Kaiming-uniform, B zero)";
  if (!unused.empty()) s += "; " + std::to_string(unused.size()) + " checkpoint tensors unused (e.g. " + unused[0] + ")";
  return s;
}

BertConfig read_model_config(const std::string& dir) {
  ENGINE_CHECK(fs::is_directory(dir), "model directory '", dir, "' does not exist");
  std::string path = (fs::path(dir) / "config.json").string();
  ENGINE_CHECK(fs::exists(path), "model directory '", dir, "' has no config.json");
  return BertConfig::from_file(path);
}

bool checkpoint_head_matches(const std::string& dir, int64_t num_labels) {
  std::string path = (fs::path(dir) / "model.safetensors").string();
  if (!fs::exists(path)) return false;
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  // A classification head, or question answering's qa_outputs.
  const char* head = file.has("classifier.weight") ? "classifier.weight" : "qa_outputs.weight";
  if (!file.has(head)) return false;
  const auto& shape = file.get(head).shape;
  return !shape.empty() && shape[0] == num_labels;
}

WeightFit fit_weights(const std::vector<ParamInfo>& params, const io::SafetensorsFile& file, bool reinit_head) {
  const std::string& path = file.path();
  WeightFit fit;
  std::set<std::string> used;
  for (const ParamInfo& p : params) {
    const io::SafetensorsTensor* found = nullptr;
    for (const std::string& candidate : candidate_names(p.name)) {
      if (file.has(candidate)) {
        found = &file.get(candidate);
        break;
      }
    }
    if (found) used.insert(found->name);
    if (found && found->shape != p.shape) {
      if (!(is_head(p.name) && reinit_head)) {
        fit.problems.push_back(path + ": tensor '" + found->name + "' has shape " + shape_str(found->shape) +
                               " but the model needs " + shape_str(p.shape) +
                               (is_head(p.name) ? " (the classifier has another number of labels: pass --reinit-head "
                                                  "to start a fresh head)"
                                                : ""));
        continue;
      }
      found = nullptr;
    }
    if (found && is_head(p.name) && reinit_head) found = nullptr;
    if (found) {
      fit.loads.push_back({&p, found});
    } else if (is_head(p.name) || is_pooler(p.name) || is_lora_parameter(p.name)) {
      fit.initialised.push_back(p.name);
    } else {
      std::string looked_for;
      for (const std::string& c : candidate_names(p.name)) looked_for += (looked_for.empty() ? "" : ", ") + c;
      fit.problems.push_back(path + ": no tensor for parameter '" + p.name + "' (looked for: " + looked_for + ")");
    }
  }
  for (const io::SafetensorsTensor& t : file.tensors())
    if (!used.count(t.name)) fit.unused.push_back(t.name);
  return fit;
}

LoadReport load_weights(BertModel& model, const std::string& dir, bool reinit_head, uint64_t seed) {
  io::recover_directory(dir);
  std::string path = (fs::path(dir) / "model.safetensors").string();
  ENGINE_CHECK(fs::exists(path), "model directory '", dir, "' has no model.safetensors",
               fs::exists(fs::path(dir) / "pytorch_model.bin")
                   ? " (it has pytorch_model.bin: convert it with tools/convert_to_safetensors.py)"
                   : "");
  io::SafetensorsFile file = io::SafetensorsFile::open(path);
  WeightFit fit = fit_weights(model.params().list(), file, reinit_head);
  const size_t more = fit.problems.empty() ? 0 : fit.problems.size() - 1;
  ENGINE_CHECK(fit.problems.empty(), fit.problems[0],
               more ? " (and " + std::to_string(more) + (more == 1 ? " more problem" : " more problems") +
                          ": `engine info " + dir + "` lists them all)"
                    : "");
  for (const WeightFit::Load& l : fit.loads) model.params().set_host(model.backend(), l.param->name, file.to_f32(l.tensor->name));
  LoadReport report;
  report.loaded = int(fit.loads.size());
  report.initialised = fit.initialised;
  report.unused = fit.unused;
  if (!report.initialised.empty()) model.init_parameters(report.initialised, seed);
  return report;
}

void save_pretrained(BertModel& model, const std::string& dir, const SaveOptions& options) {
  fs::path final_dir = fs::absolute(dir).lexically_normal();
  if (final_dir.filename().empty()) final_dir = final_dir.parent_path();
  fs::create_directories(final_dir.parent_path());
  fs::path staged = io::temp_path_for(final_dir.string());
  fs::remove_all(staged);
  fs::create_directories(staged);
  try {
    // config.json with the head, the labels and the architecture transformers should build.
    nlohmann::json config = model.config().to_json();
    config["architectures"] = {architecture(model)};
    if (model.is_regression()) config["problem_type"] = "regression";
    for (auto& [k, v] : options.extra_config.items()) config[k] = v;
    io::write_file_atomic((staged / "config.json").string(), config.dump(2) + "\n");

    if (model.options().lora.enabled())
      write_adapter_files(model, staged.string(), options.adapter_base);
    else
      write_model_weights(model, (staged / "model.safetensors").string());

    if (!options.vocab_path.empty()) {
      io::write_file_atomic((staged / "vocab.txt").string(), io::read_file(options.vocab_path));
      nlohmann::json tok = {{"tokenizer_class", "BertTokenizer"},
                            {"do_lower_case", options.do_lower_case},
                            {"model_max_length", model.config().max_position_embeddings},
                            {"unk_token", "[UNK]"},
                            {"sep_token", "[SEP]"},
                            {"pad_token", "[PAD]"},
                            {"cls_token", "[CLS]"},
                            {"mask_token", "[MASK]"}};
      io::write_file_atomic((staged / "tokenizer_config.json").string(), tok.dump(2) + "\n");
    }
    if (options.extra_files) options.extra_files(staged.string());
  } catch (...) {
    std::error_code ec;
    fs::remove_all(staged, ec);
    throw;
  }
  io::replace_directory_atomic(final_dir.string(), staged.string());
}

}  // namespace engine
