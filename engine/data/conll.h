// Reading CoNLL-style token classification files (CoNLL-2003: `word POS chunk NER`, one token a
// line, columns split by spaces or tabs, sentences separated by blank lines, `-DOCSTART-` lines
// marking documents). Each sentence becomes its words and the tags of one chosen column.
//
// Errors are engine::Error "path:line: problem": a line with a different number of columns than
// the file's first token line, a tag column past the end, invalid UTF-8, an empty file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/data/labels.h"

namespace engine {

struct ConllSentence {
  std::vector<std::string> words;
  std::vector<std::string> tags;  // empty when the file has no tag column
  std::vector<int64_t> lines;     // 1-based line of each word
};

struct ConllDataset {
  std::string path;
  std::vector<ConllSentence> sentences;
  bool has_tags = false;
};

struct ConllOptions {
  int tag_column = -1;          // 0-based; negative counts from the end (-1 = the last column)
  bool tags_optional = false;   // a one-column file (words only) is read without tags (prediction)
};

ConllDataset read_conll(const std::string& path, const ConllOptions& options = {});

// The tag set of a dataset as a label map: sorted tags get ids 0..K-1 (as run_ner.py does).
LabelMap tag_map(const ConllDataset& dataset);

}  // namespace engine
