// CoNLL reader (see conll.h). One pass over the lines: a token line adds a word (and its tag) to
// the open sentence, a blank line closes it, a -DOCSTART- line closes it and is dropped.
#include "engine/data/conll.h"

#include "engine/data/dataset.h"
#include "engine/error.h"

namespace engine {

namespace {

// \r counts as a space so that files with \r\n line ends read the same.
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Fields of a line split on runs of spaces and tabs (CoNLL-2003 uses single spaces; other
// CoNLL-style files use tabs).
std::vector<std::string> split_whitespace(const std::string& line) {
  std::vector<std::string> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    if (i == line.size()) break;
    size_t j = i;
    while (j < line.size() && !is_space(line[j])) ++j;
    fields.push_back(line.substr(i, j - i));
    i = j;
  }
  return fields;
}

}  // namespace

ConllDataset read_conll(const std::string& path, const ConllOptions& options) {
  const std::string text = read_text_file(path);
  check_utf8(text, path);

  ConllDataset ds;
  ds.path = path;
  ConllSentence open;
  size_t columns = 0;          // set by the first token line; every token line must match it
  int64_t columns_line = 0;
  size_t tag_index = 0;

  const auto close_sentence = [&] {
    if (!open.words.empty()) ds.sentences.push_back(std::move(open));
    open = ConllSentence();
  };

  int64_t line = 1;
  for (size_t start = 0; start < text.size(); ++line) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::vector<std::string> fields = split_whitespace(text.substr(start, end - start));
    start = end + 1;

    if (fields.empty()) {  // blank (or only spaces, or a lone \r): end of sentence
      close_sentence();
      continue;
    }
    if (fields[0] == "-DOCSTART-") {
      close_sentence();
      continue;
    }
    if (columns == 0) {
      // The first token line fixes the layout: how many columns and which one holds the tag.
      columns = fields.size();
      columns_line = line;
      ds.has_tags = columns >= 2;
      if (!ds.has_tags) {
        ENGINE_CHECK(options.tags_optional, path, ":", line,
                     ": one column (a word) and no tag column; expected `word ... tag` lines");
      } else {
        const int64_t wanted = options.tag_column < 0 ? int64_t(columns) + options.tag_column : options.tag_column;
        ENGINE_CHECK(wanted >= 1 && wanted < int64_t(columns), path, ":", line, ": tag column ", options.tag_column,
                     " is not one of columns 1..", columns - 1, " (the line has ", columns,
                     " columns; column 0 is the word)");
        tag_index = size_t(wanted);
      }
    }
    if (fields.size() != columns)
      fail(path, ":", line, ": ", fields.size(), " column", fields.size() == 1 ? "" : "s", ", expected ", columns,
           " (as on line ", columns_line, ")");
    open.words.push_back(fields[0]);
    if (ds.has_tags) open.tags.push_back(fields[tag_index]);
    open.lines.push_back(line);
  }
  close_sentence();
  ENGINE_CHECK(!ds.sentences.empty(), path, ": empty file (no sentences)");
  return ds;
}

LabelMap tag_map(const ConllDataset& dataset) {
  ENGINE_CHECK(dataset.has_tags, dataset.path, ": has no tag column, so no tag set can be built from it");
  std::vector<std::string> tags;
  for (const auto& s : dataset.sentences) tags.insert(tags.end(), s.tags.begin(), s.tags.end());
  return LabelMap::from_labels(tags);
}

}  // namespace engine
