// Extractive question answering data: reading SQuAD files and cutting each (question, context) into
// the overflowing windows a model sees, as Hugging Face's run_qa.py prepares them.
//
// Files. SQuAD JSON (v1.1 and v2.0: {"data": [{"paragraphs": [{"context", "qas": [{"id",
// "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}) and the flat JSON Lines
// form that Hugging Face datasets write ({"id", "question", "context", "answers": {"text": [...],
// "answer_start": [...]}} per line; answers may also be a list of {"text", "answer_start"}).
// answer_start counts characters (Unicode code points, as Python does). Without answers at all
// (predict), a file is read for its questions and contexts only.
// Version 2 (questions without an answer) is detected: a file is v2 when any question has
// "is_impossible" or an empty answer list; --version-2-with-negative forces it.
//
// Bad input is an engine::Error naming the file and the example id: a missing or non-string field,
// an empty question or context, a context without a single token, an answer_start outside the
// context or where the context does not read the answer text (run_qa.py would silently train on
// whatever span the offsets give; a wrong offset is a broken file, so it stops here), a duplicate id.
//
// Windows (prepare_train_features / prepare_validation_features of run_qa.py): the question with
// its leading whitespace removed goes first, the context second, truncation 'only_second' at
// max_length with `doc_stride` tokens of overlap between consecutive windows
// (tokenizer::BertTokenizer::encode_windows). A question so long that the context has no room, or
// no more room than the stride, is an error naming the example (HF fails on such input too).
// Labels: the first answer; a window that holds the whole answer gets the tokens of its first and
// last character, any other window (and every window of a question without answer) [CLS] = 0.
// One difference from run_qa.py: its search for the start token runs past the end of the context
// into [SEP] (and padding) when the answer starts in the window's last context token, and labels
// that [SEP]; here the search stops at the last context token, which is the answer's real start.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/data/batcher.h"
#include "tokenizer/encode.h"

namespace engine {

struct SquadAnswer {
  std::string text;
  int64_t start = 0;  // characters into the context
};

struct SquadExample {
  std::string id, question, context;
  std::vector<SquadAnswer> answers;  // empty: no answer (v2), or a file without answers
};

struct SquadFile {
  std::string path;
  std::vector<SquadExample> examples;
  bool has_answers = false;  // the file gives answers (training, eval); false: questions only
  bool version_2 = false;    // some question has no answer (see above)
  std::string version_reason;  // why: "is_impossible in the file", "questions without answers", ...
};

// Reads SQuAD JSON (an object with "data") or JSON Lines. answers_required: every example must have
// an "answers" field (it may be empty only in a v2 file).
SquadFile read_squad(const std::string& path, bool answers_required);
// Examples given directly, one JSON object {"question", "context"} (and optionally "id") per line
// (engine predict --task qa from standard input); source names them in errors.
SquadFile squad_from_json_lines(const std::vector<std::string>& lines, const std::string& source);

struct QaOptions {
  int doc_stride = 128;
  int n_best_size = 20;
  int max_answer_length = 30;
  float null_score_diff_threshold = 0.f;
  bool version_2_with_negative = false;  // force v2 post-processing and metrics (else detected)
};

// One window of one example. offsets: for each token, its byte range in the context, and
// is_context[t] whether token t is a context token (the only ones an answer may use).
struct QaFeature {
  int64_t example = 0;
  std::vector<tokenizer::Offset> offsets;
  std::vector<uint8_t> is_context;
};

// The windows of every example: tokenized examples for the batcher (index = feature number,
// span_start / span_end set when the file has answers) and what post-processing needs.
struct QaWindows {
  std::vector<TokenizedExample> examples;
  std::vector<QaFeature> features;
};

// Cuts every example into windows. Throws naming the example id for a question that leaves the
// context no room.
QaWindows make_qa_windows(const SquadFile& file, const tokenizer::BertTokenizer& tok, int max_length, int doc_stride,
                          int threads);

// Python's str.isspace() for one code point (what str.lstrip() and str.split() remove).
bool is_python_space(uint32_t cp);

// Byte offset of every character of `text` (size: characters + 1, the last entry text.size()).
std::vector<int64_t> char_to_byte(const std::string& text);

}  // namespace engine
