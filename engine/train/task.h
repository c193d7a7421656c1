// Tasks: what a fine-tune learns and how a file of text becomes tokenized examples, and model
// outputs become predictions and metrics.
//   classify  sequence classification, single sentences or pairs, any number of labels
//             (cross-entropy); metrics accuracy, macro F1, MCC
//   regress   one output per sequence (MSE); metrics Pearson, Spearman
//   tokens    token classification from CoNLL-style files; the label of a word sits on its first
//             WordPiece and the others are ignored (-100), as Hugging Face's run_ner.py does;
//             metrics entity-level precision, recall, F1 (seqeval) and token accuracy
//   qa        extractive question answering from SQuAD files (v1.1 and v2.0, JSON or JSON Lines):
//             start/end logits over every token of each window (engine/data/squad.h), answers as
//             run_qa.py post-processes them (engine/train/qa_postprocess.h); metrics the official
//             SQuAD exact match and F1 (engine/train/squad_metrics.h)
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/data/batcher.h"
#include "engine/data/conll.h"
#include "engine/data/dataset.h"
#include "engine/data/labels.h"
#include "engine/data/squad.h"
#include "engine/model/bert.h"
#include "engine/train/qa_postprocess.h"
#include "tokenizer/encode.h"

namespace engine {

enum class Task { classify, regress, tokens, qa };
Task parse_task(const std::string& name);  // "classify", "regress", "tokens", "qa"
const char* task_name(Task t);
Head task_head(Task t);
// What a saved model directory was trained for (config.json architectures / problem_type).
Task task_of_model(const BertConfig& config);

struct DataOptions {
  DatasetOptions columns;  // classify / regress files
  ConllOptions conll;      // tokens files
  tokenizer::EncodeOptions encode;  // max length and truncation
  int threads = 0;         // tokenizer threads (0: all)
  QaOptions qa;            // qa: windows and post-processing
};

// A question answering file behind a TaskData: the questions, the windows cut from them (one per
// TaskData example, in order) and how answers are picked.
struct QaSet {
  SquadFile file;
  std::vector<QaFeature> features;
  bool version_2 = false;  // the file's, or forced by QaOptions::version_2_with_negative
  QaOptions options;
  std::string describe() const;  // "1407 questions in 1461 windows, SQuAD v2 (is_impossible in the file)"
};

// A file's examples ready for the batcher, plus what is needed to turn outputs back into
// per-input predictions.
struct TaskData {
  std::string path;
  Task task = Task::classify;
  bool has_labels = false;
  std::vector<TokenizedExample> examples;  // index = row of the file (its position in the input)
  // tokens: for each example, the word each token starts (-1 for [CLS], [SEP], continuation
  // pieces), and the gold tags of the words that kept a token (truncation drops the rest).
  std::vector<std::vector<int32_t>> first_piece_word;
  std::vector<std::vector<std::string>> words;
  std::vector<std::vector<std::string>> gold_tags;
  // qa: the questions and windows (examples are the windows).
  std::shared_ptr<const QaSet> qa;
  int64_t tokens() const;
  int64_t max_length() const;
};

// Reads and tokenizes a file for `task`. labels: the label map (classify, tokens); with
// labels_required, rows without labels or with labels outside the map are errors naming the line.
TaskData load_task_data(const std::string& path, Task task, const tokenizer::BertTokenizer& tok,
                        const LabelMap* labels, bool labels_required, const DataOptions& options);
// Texts given directly (predict from standard input): one line each, a tab separating a pair
// (classify, regress), whitespace separating words (tokens), or a JSON object {"question",
// "context"} (qa).
TaskData task_data_from_lines(const std::vector<std::string>& lines, Task task, const tokenizer::BertTokenizer& tok,
                              const DataOptions& options);
// The label map a training file defines (classify: its labels; tokens: its tags; qa: the two
// outputs LABEL_0 (start) and LABEL_1 (end), as HF names them).
LabelMap label_map_of(const std::string& path, Task task, const DataOptions& options);

// The model's outputs for every example of a TaskData, in input order, and the metrics when the
// data has labels.
struct Predictions {
  Task task = Task::classify;
  std::vector<std::vector<float>> logits;  // classify: [C] per example; regress: [1]
  std::vector<std::vector<std::string>> tags;  // tokens: one per word that kept a token
  std::vector<QaAnswer> answers;           // qa: one per question, in file order
  std::map<std::string, double> metrics;   // "loss", "accuracy", "f1", ... (empty without labels)
};

// Evaluation shared by the ranks of a data-parallel run: this rank runs the batches b with
// b % world == rank, and sum() adds a buffer across the ranks in place (engine/dist/world.h). Every
// logit and every batch's loss is computed by exactly one rank and is zero on the others, so the
// sums are exact: every rank scores the same numbers, in the same order, as one process would.
struct EvalShard {
  int rank = 0, world = 1;
  std::function<void(std::vector<float>&)> sum_f32;
  std::function<void(std::vector<double>&)> sum_f64;
};

// Runs the model in eval mode over the data in batches of at most batch_size sequences and
// max_tokens tokens, and scores it. rows_done, when given, is called after every batch with the
// number of rows done so far (progress).
Predictions predict(BertModel& model, const TaskData& data, const LabelMap& labels, int64_t batch_size,
                    int64_t max_tokens, const std::function<void(int64_t rows_done)>& rows_done = {},
                    const EvalShard& shard = {});
// The metric a run keeps its best checkpoint by, by default: accuracy, pearson or f1.
std::string default_best_metric(Task task);
// qa: writes predictions.json (id -> answer text) and, for v2, null_odds.json (id -> null_odds)
// into dir, as run_qa.py and the official v2 evaluation script's --na-prob-file read them.
void write_qa_predictions(const Predictions& p, const TaskData& data, const std::string& dir);

}  // namespace engine
