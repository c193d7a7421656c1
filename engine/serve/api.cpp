#include "engine/serve/api.h"

#include <nlohmann/json.hpp>

namespace engine::serve {

namespace {

using nlohmann::json;

[[noreturn]] void invalid(const std::string& message) { throw ApiError(422, "validation", message); }

const char* kInputsShape =
    "`inputs` must be a string, a pair of strings [\"a\", \"b\"], or a batch of single texts and pairs "
    "[[\"a\"], [\"a\", \"b\"], ...]";

std::string text_at(const json& v, const std::string& where) {
  if (!v.is_string()) invalid(where + " must be a string, not " + std::string(v.type_name()) + " (" + kInputsShape + ")");
  return v.get<std::string>();
}

// ["a"] or ["a", "b"]: one input of a batch, or the whole of a non-batch array.
TextInput sequence_from_array(const json& v, const std::string& where) {
  if (v.empty() || v.size() > 2)
    invalid(where + " has " + std::to_string(v.size()) + " elements: a single text has one, a pair two (" +
            kInputsShape + ")");
  TextInput in;
  in.a = text_at(v[0], where + "[0]");
  if (v.size() == 2) in.b = text_at(v[1], where + "[1]");
  return in;
}

bool optional_bool(const json& body, const char* key, bool fallback) {
  auto it = body.find(key);
  if (it == body.end()) return fallback;
  if (!it->is_boolean()) invalid(std::string("`") + key + "` must be true or false, not " + it->type_name());
  return it->get<bool>();
}

}  // namespace

PredictRequest parse_predict_request(const std::string& body_text) {
  json body = json::parse(body_text, nullptr, false);
  if (body.is_discarded()) invalid("the request body is not valid JSON");
  if (!body.is_object()) invalid(std::string("the request body must be a JSON object, not ") + body.type_name());
  auto inputs = body.find("inputs");
  if (inputs == body.end()) invalid("missing field `inputs`");

  PredictRequest r;
  if (inputs->is_string()) {
    r.inputs.push_back({inputs->get<std::string>(), std::nullopt});
  } else if (inputs->is_array()) {
    if (inputs->empty()) invalid("`inputs` is an empty array");
    // TEI's rule: the first element decides. A string: this array is one input (a text or a pair);
    // an array: this is a batch.
    if ((*inputs)[0].is_array()) {
      r.batch = true;
      for (size_t i = 0; i < inputs->size(); ++i) {
        const json& item = (*inputs)[i];
        const std::string where = "`inputs[" + std::to_string(i) + "]`";
        if (!item.is_array()) invalid(where + " must be an array of one or two strings in a batch (" + kInputsShape + ")");
        r.inputs.push_back(sequence_from_array(item, where));
      }
    } else {
      r.inputs.push_back(sequence_from_array(*inputs, "`inputs`"));
    }
  } else {
    invalid(std::string("`inputs` must not be ") + inputs->type_name() + " (" + kInputsShape + ")");
  }

  r.raw_scores = optional_bool(body, "raw_scores", false);
  auto truncate = body.find("truncate");
  if (truncate != body.end() && !truncate->is_null()) r.truncate = optional_bool(body, "truncate", false);
  auto direction = body.find("truncation_direction");
  if (direction != body.end()) {
    // TEI's enum serialises as "Left"/"Right"; its documentation writes "left"/"right": both are read.
    const std::string d = direction->is_string() ? direction->get<std::string>() : "";
    if (d == "left" || d == "Left") r.truncate_left = true;
    else if (d != "right" && d != "Right") invalid("`truncation_direction` must be \"left\" or \"right\"");
  }
  return r;
}

std::string error_json(const std::string& message, const std::string& type) {
  return json{{"error", message}, {"error_type", type}}.dump();
}

}  // namespace engine::serve
