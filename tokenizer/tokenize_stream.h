// What `engine tokenize` does, as a function the tests can call: read UTF-8 lines, print one line
// of ids per input line (or one JSON object per line with --json).
#pragma once
#include <iosfwd>
#include <optional>
#include <string>

#include "tokenizer/encode.h"

namespace tokenizer {

struct TokenizeStreamOptions {
  std::string vocab_path;
  std::optional<bool> lowercase;  // unset: do_lower_case of the vocab's directory, else true
  bool pairs = false;             // the first tab of a line separates text a from text b
  EncodeOptions encode;
  bool json = false;
  int threads = 0;                // 0: all hardware threads
};

// Plain output: ids separated by single spaces, including [CLS] and [SEP], one line per input line.
// JSON output: {"ids", "type_ids", "tokens", "offsets"} with offsets in characters of the text the
// token came from (a or b), as Hugging Face reports them; [0,0] for [CLS]/[SEP].
// Throws engine::Error on bad options or a line that cannot be encoded (it names the line).
void run_tokenize(std::istream& in, std::ostream& out, const TokenizeStreamOptions& options);

}  // namespace tokenizer
