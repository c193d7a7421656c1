// The HTTP API of `engine serve`: POST /predict as text-embeddings-inference (TEI) defines it in its
// OpenAPI document (PredictRequest / PredictResponse), read and written here without sockets.
//
// Request: {"inputs": ..., "raw_scores": false, "truncate": false, "truncation_direction": "right"}
// `inputs`, by TEI's rule (its PredictInput deserializer looks at the first element of an array):
//   "text"                    one input, a single text            -> answer [{label, score}, ...]
//   ["a"] / ["a", "b"]        one input (first element a string): a single text or a pair; three
//                             or more strings are an error (a list of strings is NOT a batch)
//   [["a"], ["a", "b"], ...]  a batch (first element an array): each element one text or a pair
//                             -> answer [[{label, score}, ...], ...], in input order
// Unknown fields are ignored, as TEI does. Errors are {"error": message, "error_type": kind}.
#pragma once
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine::serve {

// An error the client caused, with the HTTP status to answer (413, 422, ...).
struct ApiError : std::runtime_error {
  int status;
  std::string type;  // TEI's error_type: "validation", "tokenizer", "overloaded", "backend", ...
  ApiError(int status, std::string type, const std::string& message)
      : std::runtime_error(message), status(status), type(std::move(type)) {}
};

struct TextInput {
  std::string a;
  std::optional<std::string> b;  // the second text of a pair
};

struct PredictRequest {
  std::vector<TextInput> inputs;
  bool batch = false;               // answer a list per input (inputs was an array of arrays)
  bool raw_scores = false;          // logits instead of probabilities
  std::optional<bool> truncate;     // absent or null: the server's default (--auto-truncate)
  bool truncate_left = false;       // truncation_direction "left": keep the end of the text
};

// Parses a /predict body; throws ApiError(422) naming what is wrong.
PredictRequest parse_predict_request(const std::string& body);

// {"error": message, "error_type": type}
std::string error_json(const std::string& message, const std::string& type);

}  // namespace engine::serve
