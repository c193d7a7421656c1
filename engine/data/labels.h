// Label maps: the bridge between the label text in a data file and the class ids a model predicts,
// and the id2label / label2id entries of a Hugging Face config.json.
//
// Building the map from training labels follows Hugging Face's run_glue.py / run_ner.py for
// files they load themselves: the distinct labels, sorted, get ids 0..K-1 in that order.
//   - When every label is an integer ("0", "1", "-1", "7"), they sort as numbers, so labels that are
//     already 0..K-1 keep their own value as id (SST-2, MRPC), and {1..5} star ratings become 0..4.
//     The names stay the label text in its canonical form ("1", not "01").
//   - Otherwise they sort as strings by bytes (Python's order for str): AG News gets
//     Business=0, Sci/Tech=1, Sports=2, World=3; CoNLL tags get B-LOC=0 ... O=8.
// Looking a label up (to_id) with an integer map accepts any spelling of the same integer.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <unordered_map>
#include <vector>

namespace engine {

struct LabelledDataset;

class LabelMap {
 public:
  LabelMap() = default;
  // The sorted distinct labels as above. Throws on an empty list or an empty label.
  static LabelMap from_labels(const std::vector<std::string>& labels);
  // from_labels over a dataset's rows; throws if the dataset has no labels.
  static LabelMap from_dataset(const LabelledDataset& dataset);
  // Names in id order as given (no sorting). Throws on duplicates.
  static LabelMap from_names(const std::vector<std::string>& names);
  // Reads id2label from a config.json object: keys must be the strings "0".."K-1". `source`
  // (the file name) goes into error messages.
  static LabelMap from_hf_config(const nlohmann::json& config, const std::string& source);

  // The id of a label of a data file; throws "file:line: unknown label 'x' (known: a, b, c)".
  int32_t to_id(const std::string& label, const std::string& file, int64_t line) const;
  // -1 when unknown.
  int32_t find(const std::string& label) const;
  const std::string& name(int32_t id) const;
  const std::vector<std::string>& names() const { return names_; }
  int32_t size() const { return static_cast<int32_t>(names_.size()); }
  bool numeric() const { return numeric_; }

  // Sets config["id2label"] = {"0": name0, ...} and config["label2id"] = {name0: 0, ...}.
  void to_hf_config(nlohmann::json& config) const;

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, int32_t> ids_;
  bool numeric_ = false;  // every name is an integer: look-ups compare values

  void index_names();
};

// A regression target (STS-B scores): a finite decimal number, else
// "file:line: label 'x' is not a number".
float parse_regression_label(const std::string& text, const std::string& file, int64_t line);

}  // namespace engine
