// Label maps (see labels.h for the id rule) and regression label parsing.
#include "engine/data/labels.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "engine/data/dataset.h"
#include "engine/error.h"

namespace engine {

namespace {

// The integer a label spells ("7", "-1", "+3", "007"), if it is one and fits in 64 bits.
std::optional<int64_t> as_integer(const std::string& s) {
  const char* begin = s.data();
  const char* end = s.data() + s.size();
  if (begin != end && *begin == '+') ++begin;
  if (begin == end) return std::nullopt;
  int64_t value = 0;
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

// "a, b, c", cut short for label sets too long to read in one message.
std::string known_list(const std::vector<std::string>& names) {
  constexpr size_t kShown = 20;
  std::string s;
  for (size_t i = 0; i < names.size() && i < kShown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > kShown) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

}  // namespace

void LabelMap::index_names() {
  ids_.clear();
  numeric_ = !names_.empty();
  for (size_t i = 0; i < names_.size(); ++i) {
    ENGINE_CHECK(!names_[i].empty(), "empty label name for id ", i);
    const bool inserted = ids_.emplace(names_[i], static_cast<int32_t>(i)).second;
    ENGINE_CHECK(inserted, "label '", names_[i], "' appears twice in the label list");
    const auto v = as_integer(names_[i]);
    if (!v || std::to_string(*v) != names_[i]) numeric_ = false;
  }
}

LabelMap LabelMap::from_labels(const std::vector<std::string>& labels) {
  ENGINE_CHECK(!labels.empty(), "cannot build a label map from no labels");
  std::set<std::string> distinct(labels.begin(), labels.end());
  const bool all_integers =
      std::all_of(distinct.begin(), distinct.end(), [](const std::string& s) { return as_integer(s).has_value(); });
  LabelMap map;
  if (all_integers) {
    // Sort by value; "1" and "01" are the same class, named canonically.
    std::set<int64_t> values;
    for (const auto& s : distinct) values.insert(*as_integer(s));
    for (int64_t v : values) map.names_.push_back(std::to_string(v));
  } else {
    map.names_.assign(distinct.begin(), distinct.end());  // std::set<std::string> sorts by bytes
  }
  map.index_names();
  return map;
}

LabelMap LabelMap::from_dataset(const LabelledDataset& dataset) {
  ENGINE_CHECK(dataset.has_labels, dataset.path, ": has no label column, so no label set can be built from it");
  std::vector<std::string> labels;
  labels.reserve(dataset.rows.size());
  for (const auto& row : dataset.rows) labels.push_back(row.label);
  ENGINE_CHECK(!labels.empty(), dataset.path, ": no rows, so no label set can be built from it");
  return from_labels(labels);
}

LabelMap LabelMap::from_names(const std::vector<std::string>& names) {
  ENGINE_CHECK(!names.empty(), "empty label list");
  LabelMap map;
  map.names_ = names;
  map.index_names();
  return map;
}

LabelMap LabelMap::from_hf_config(const nlohmann::json& config, const std::string& source) {
  const auto it = config.find("id2label");
  ENGINE_CHECK(it != config.end(), source, ": no id2label");
  ENGINE_CHECK(it->is_object() && !it->empty(), source, ": id2label is not a non-empty object");
  // Keys are the strings of ids (JSON objects have string keys); every id 0..K-1 exactly once.
  std::vector<std::string> names(it->size());
  std::vector<bool> seen(it->size(), false);
  for (auto entry = it->begin(); entry != it->end(); ++entry) {
    const auto id = as_integer(entry.key());
    ENGINE_CHECK(id && *id >= 0 && *id < static_cast<int64_t>(names.size()), source, ": id2label key '", entry.key(),
                 "' is not an id in 0..", names.size() - 1);
    ENGINE_CHECK(!seen[*id], source, ": id2label has id ", *id, " twice");
    ENGINE_CHECK(entry.value().is_string(), source, ": id2label[\"", entry.key(), "\"] is not a string");
    seen[*id] = true;
    names[*id] = entry.value().get<std::string>();
  }
  try {
    return from_names(names);
  } catch (const Error& e) {
    fail(source, ": id2label: ", e.what());
  }
}

int32_t LabelMap::find(const std::string& label) const {
  const auto it = ids_.find(label);
  if (it != ids_.end()) return it->second;
  if (numeric_) {
    if (const auto v = as_integer(label)) {
      const auto canonical = ids_.find(std::to_string(*v));
      if (canonical != ids_.end()) return canonical->second;
    }
  }
  return -1;
}

int32_t LabelMap::to_id(const std::string& label, const std::string& file, int64_t line) const {
  const int32_t id = find(label);
  if (id < 0) fail(file, ":", line, ": unknown label '", label, "' (known: ", known_list(names_), ")");
  return id;
}

const std::string& LabelMap::name(int32_t id) const {
  ENGINE_CHECK(id >= 0 && id < size(), "label id ", id, " out of range (", size(), " labels)");
  return names_[id];
}

void LabelMap::to_hf_config(nlohmann::json& config) const {
  nlohmann::json id2label = nlohmann::json::object();
  nlohmann::json label2id = nlohmann::json::object();
  for (size_t i = 0; i < names_.size(); ++i) {
    id2label[std::to_string(i)] = names_[i];
    label2id[names_[i]] = static_cast<int64_t>(i);
  }
  config["id2label"] = std::move(id2label);
  config["label2id"] = std::move(label2id);
}

float parse_regression_label(const std::string& text, const std::string& file, int64_t line) {
  // std::from_chars: the same digits whatever the C locale says a decimal point is.
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  while (begin != end && (*begin == ' ' || *begin == '\t')) ++begin;
  while (end != begin && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) --end;
  if (begin != end && *begin == '+') ++begin;
  double value = 0;
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  ENGINE_CHECK(begin != end && ec == std::errc() && ptr == end, file, ":", line, ": label '", text,
               "' is not a number (a regression task needs numeric labels)");
  ENGINE_CHECK(std::isfinite(value), file, ":", line, ": label '", text, "' is not a finite number");
  return static_cast<float>(value);
}

}  // namespace engine
