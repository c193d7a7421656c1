// Reading labelled text files: GLUE-style TSV (with or without a header row), RFC 4180 CSV and
// JSON Lines. Each row becomes an Example holding one or two texts and the raw label text; turning
// labels into ids or floats is labels.h's job, turning text into ids is the tokenizer's.
//
// TSV is split on tabs with no quoting (quotes are text, as Hugging Face's GLUE readers use
// quotechar=None); CSV follows RFC 4180 (quoted fields may hold commas, "" and newlines); JSONL
// is one object per line, numbers allowed as labels. A .json file is read as JSON Lines.
//
// Every mistake in a file is an engine::Error of the form "path:line: problem", so a user with a
// 67,000-row file can open it at the right line. The whole file is checked for valid UTF-8 before
// anything else (the tokenizer assumes it), a UTF-8 byte-order mark is dropped, and \r\n line ends
// are accepted everywhere. Blank lines (outside CSV quotes) are skipped.
//
// Column choice. A column is named by its header name, or by a 0-based position ("0", "3"), which
// is the only way for a file without a header. With no column given:
//   text      the first that exists of: sentence, sentence1, text, text_a, question1, premise,
//             "#1 String" (MRPC)
//   text pair the partner of the text column when the file has it: sentence1 -> sentence2,
//             text_a -> text_b, text -> text_pair, question1 -> question2, premise -> hypothesis,
//             "#1 String" -> "#2 String"; otherwise none ("none" turns it off by hand)
//   label     the first that exists of: label, score, Quality (MRPC), is_duplicate, gold_label
//   no header text = column 0, label = the last column when there are two or more, no pair
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace engine {

enum class FileFormat { detect, tsv, csv, jsonl };

// "tsv", "csv", "jsonl"/"json" or "auto"; anything else throws.
FileFormat parse_file_format(const std::string& name);
// From the extension: .tsv/.txt -> tsv, .csv -> csv, .jsonl/.json -> jsonl; throws otherwise.
FileFormat format_from_extension(const std::string& path);

struct Example {
  std::string text_a;
  std::optional<std::string> text_b;  // the second sentence of a pair task
  std::string label;                  // raw label text, trimmed of surrounding spaces
  int64_t line = 0;                   // 1-based line of the file where the row starts
};

struct LabelledDataset {
  std::string path;
  std::vector<Example> rows;
  bool has_labels = false;
};

struct DatasetOptions {
  FileFormat format = FileFormat::detect;
  bool header = true;             // TSV/CSV: the first row names the columns (JSONL always names them)
  std::string text_column;        // empty = the defaults above
  std::string text_pair_column;   // empty = the defaults above; "none" = single-sentence task
  std::string label_column;       // empty = the defaults above
  bool labels_optional = false;   // a file without a label column is allowed (prediction)
};

// Reads one file. Throws engine::Error "path:line: problem" for any malformed row.
LabelledDataset read_dataset(const std::string& path, const DatasetOptions& options = {});

// --- Small pieces shared with the other readers (conll.cpp) ---

// The whole file as bytes, without a leading UTF-8 BOM. Throws if it cannot be read.
std::string read_text_file(const std::string& path);
// Throws "path:line: invalid UTF-8 (what) at byte B of the line" at the first bad sequence (B is
// 0-based, counted from the start of that line); overlong forms, surrogates and code points past
// U+10FFFF are rejected too. first_line is the line number of text[0].
void check_utf8(const std::string& text, const std::string& path, int64_t first_line = 1);

}  // namespace engine
