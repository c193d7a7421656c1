// Flags shared by finetune, eval and predict that say how a data file is read and tokenized.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/train/task.h"

namespace engine::cli {

struct DataFlags {
  std::string format = "auto";
  bool no_header = false;
  std::string text_column, text_pair_column, label_column;
  int tag_column = -1;
  std::string truncation = "longest_first";
  int threads = 0;
  QaOptions qa;  // --task qa

  DataOptions resolve() const {
    DataOptions d;
    d.columns.format = parse_file_format(format);
    d.columns.header = !no_header;
    d.columns.text_column = text_column;
    d.columns.text_pair_column = text_pair_column;
    d.columns.label_column = label_column;
    d.conll.tag_column = tag_column;
    d.encode.truncation = tokenizer::parse_truncation(truncation);
    d.threads = threads;
    d.qa = qa;
    ENGINE_CHECK(qa.doc_stride >= 0, "--doc-stride must not be negative");
    ENGINE_CHECK(qa.n_best_size > 0 && qa.max_answer_length > 0, "--n-best-size and --max-answer-length must be positive");
    return d;
  }
};

inline std::shared_ptr<DataFlags> add_data_flags(CLI::App* cmd) {
  auto f = std::make_shared<DataFlags>();
  cmd->add_option("--format", f->format, "data file format: auto (by extension), tsv, csv, jsonl")
      ->capture_default_str();
  cmd->add_flag("--no-header", f->no_header, "TSV/CSV without a header row (columns by position: 0, 1, ...)");
  cmd->add_option("--text-column", f->text_column, "text column (default: sentence, sentence1, text, ...)");
  cmd->add_option("--text-pair-column", f->text_pair_column,
                  "second text of a pair (default: sentence2 etc. when present; none: single sentences)");
  cmd->add_option("--label-column", f->label_column, "label column (default: label, score, ...)");
  cmd->add_option("--tag-column", f->tag_column, "CoNLL tag column, 0-based; negative counts from the end")
      ->capture_default_str();
  cmd->add_option("--truncation", f->truncation, "longest_first, only_first or only_second")->capture_default_str();
  cmd->add_option("--threads", f->threads, "tokenizer threads (0: all cores)")->capture_default_str();
  cmd->add_option("--doc-stride", f->qa.doc_stride, "qa: tokens of overlap between a context's windows")
      ->capture_default_str();
  cmd->add_option("--n-best-size", f->qa.n_best_size, "qa: start and end candidates per window")->capture_default_str();
  cmd->add_option("--max-answer-length", f->qa.max_answer_length, "qa: longest answer, in tokens")
      ->capture_default_str();
  cmd->add_option("--null-score-diff-threshold", f->qa.null_score_diff_threshold,
                  "qa, SQuAD v2: answer nothing when the null score beats the best answer's by more than this")
      ->capture_default_str();
  cmd->add_flag("--version-2-with-negative", f->qa.version_2_with_negative,
                "qa: questions may have no answer (SQuAD v2 post-processing and metrics; detected from the file "
                "when it has is_impossible or empty answers; needed for predict from standard input)");
  return f;
}

}  // namespace engine::cli
