// Readers for labelled text files (see dataset.h for the formats and the column defaults).
// The file is read whole (the largest GLUE file is a few MB), checked for UTF-8 once, split into
// records of fields (TSV, CSV) or objects (JSONL), and each record is turned into an Example.
#include "engine/data/dataset.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace engine {

// ----------------------------------------------------------------------------------------------
// Files and UTF-8

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  ENGINE_CHECK(in.good(), path, ": cannot open file");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ENGINE_CHECK(!in.bad(), path, ": read error");
  // Some GLUE files (MRPC) start with a UTF-8 byte-order mark; it is not part of the first column.
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) text.erase(0, 3);
  return text;
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i], or 0 with *why set when it is invalid.
size_t utf8_sequence_length(const std::string& s, size_t i, const char** why) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t n;
  uint32_t min_code;
  if (b0 >= 0xC2 && b0 <= 0xDF) { n = 2; min_code = 0x80; }
  else if (b0 >= 0xE0 && b0 <= 0xEF) { n = 3; min_code = 0x800; }
  else if (b0 >= 0xF0 && b0 <= 0xF4) { n = 4; min_code = 0x10000; }
  else {
    *why = (b0 >= 0x80 && b0 <= 0xBF) ? "unexpected continuation byte"
           : (b0 == 0xC0 || b0 == 0xC1) ? "overlong encoding"
                                        : "byte that never starts a character";
    return 0;
  }
  if (i + n > s.size()) { *why = "truncated sequence"; return 0; }
  uint32_t code = b0 & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) { *why = "truncated sequence"; return 0; }
    code = (code << 6) | (byte(i + k) & 0x3F);
  }
  if (code < min_code) { *why = "overlong encoding"; return 0; }
  if (code >= 0xD800 && code <= 0xDFFF) { *why = "encoded surrogate"; return 0; }
  if (code > 0x10FFFF) { *why = "code point past U+10FFFF"; return 0; }
  return n;
}

}  // namespace

void check_utf8(const std::string& text, const std::string& path, int64_t first_line) {
  int64_t line = first_line;
  size_t line_start = 0;
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '\n') {
      ++line;
      line_start = ++i;
      continue;
    }
    const char* why = "";
    const size_t n = utf8_sequence_length(text, i, &why);
    if (n == 0) fail(path, ":", line, ": invalid UTF-8 (", why, ") at byte ", i - line_start, " of the line");
    i += n;
  }
}

// ----------------------------------------------------------------------------------------------
// Formats

FileFormat parse_file_format(const std::string& name) {
  if (name == "auto" || name.empty()) return FileFormat::detect;
  if (name == "tsv") return FileFormat::tsv;
  if (name == "csv") return FileFormat::csv;
  if (name == "jsonl" || name == "json") return FileFormat::jsonl;
  fail("unknown data format '", name, "' (known: auto, tsv, csv, jsonl)");
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

FileFormat format_from_extension(const std::string& path) {
  const std::string p = lowercase(path);
  if (ends_with(p, ".tsv") || ends_with(p, ".txt")) return FileFormat::tsv;
  if (ends_with(p, ".csv")) return FileFormat::csv;
  if (ends_with(p, ".jsonl") || ends_with(p, ".json")) return FileFormat::jsonl;
  fail(path, ": cannot tell the format from the file name (expected .tsv, .csv, .jsonl or .json); give the format");
}

namespace {

// One row of fields and the line it starts on.
struct Record {
  std::vector<std::string> fields;
  int64_t line = 0;
};

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

std::string trim(const std::string& s) {
  const char* space = " \t\r\n";
  const size_t begin = s.find_first_not_of(space);
  if (begin == std::string::npos) return "";
  return s.substr(begin, s.find_last_not_of(space) - begin + 1);
}

// Calls f(line_text, line_number) for every line, with a trailing \r removed.
template <typename F>
void for_each_line(const std::string& text, F f) {
  int64_t line = 1;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    size_t len = end - start;
    if (len > 0 && text[start + len - 1] == '\r') --len;
    f(text.substr(start, len), line);
    start = end + 1;
    ++line;
  }
}

// TSV as GLUE writes it: fields split on tabs, no quoting (quotes are ordinary characters, as in
// Hugging Face's GLUE readers, which use quotechar=None).
std::vector<Record> split_tsv(const std::string& text) {
  std::vector<Record> records;
  for_each_line(text, [&](const std::string& line, int64_t number) {
    if (line.empty()) return;
    Record r;
    r.line = number;
    size_t start = 0;
    while (true) {
      const size_t tab = line.find('\t', start);
      r.fields.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    records.push_back(std::move(r));
  });
  return records;
}

// RFC 4180 CSV: fields separated by commas, records by \n or \r\n; a field in double quotes may
// hold commas, newlines and "" for one quote. A quote inside an unquoted field is kept as an
// ordinary character (as Python's csv module does); text after a closing quote is an error.
std::vector<Record> split_csv(const std::string& text, const std::string& path) {
  std::vector<Record> records;
  Record record;
  std::string field;
  bool structured = false;  // the record has a comma or a quote, so it is no blank line
  int64_t line = 1;
  const size_t n = text.size();

  const auto end_field = [&] {
    record.fields.push_back(std::move(field));
    field.clear();
  };
  const auto end_record = [&] {
    const bool blank_line = !structured && record.fields.empty() && is_blank(field);
    end_field();
    if (!blank_line) records.push_back(std::move(record));
    record = Record();
    structured = false;
  };

  size_t i = 0;
  while (i < n) {
    if (record.fields.empty() && field.empty() && !structured) record.line = line;
    const char c = text[i];
    if (c == '"' && field.empty()) {
      // A quoted field runs to the matching quote, over commas and newlines.
      structured = true;
      const int64_t open_line = line;
      for (++i;; ++i) {
        ENGINE_CHECK(i < n, path, ":", open_line, ": unterminated quoted field (the quote opened on line ",
                     open_line, " is never closed)");
        if (text[i] == '"') {
          if (i + 1 < n && text[i + 1] == '"') {
            field += '"';
            ++i;
            continue;
          }
          ++i;
          break;
        }
        if (text[i] == '\n') ++line;
        field += text[i];
      }
      // After the closing quote comes a comma, the end of the record or the end of the file.
      if (i + 1 < n && text[i] == '\r' && text[i + 1] == '\n') ++i;
      if (i < n && text[i] != ',' && text[i] != '\n')
        fail(path, ":", line, ": unexpected character '", text[i],
             "' after a closing quote (a quote inside a quoted field is written \"\")");
      if (i == n) break;
      // Fall through to the comma or newline below.
    }
    const char d = text[i];
    if (d == ',') {
      structured = true;
      end_field();
      ++i;
    } else if (d == '\n' || (d == '\r' && i + 1 < n && text[i + 1] == '\n')) {
      end_record();
      i += (d == '\r') ? 2 : 1;
      ++line;
    } else {
      field += d;
      ++i;
    }
  }
  if (structured || !record.fields.empty() || !field.empty()) end_record();
  return records;
}

// ----------------------------------------------------------------------------------------------
// Choosing columns

const std::vector<std::string> kTextCandidates = {"sentence", "sentence1", "text", "text_a", "question1",
                                                  "premise", "#1 String"};
const std::vector<std::pair<std::string, std::string>> kPairPartners = {
    {"sentence1", "sentence2"}, {"text_a", "text_b"},        {"text", "text_pair"},
    {"question1", "question2"}, {"premise", "hypothesis"}, {"#1 String", "#2 String"}};
const std::vector<std::string> kLabelCandidates = {"label", "score", "Quality", "is_duplicate", "gold_label"};

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s;
}

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 9 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The columns of a file, by name (header or JSON keys) or by position only (headerless).
struct Columns {
  std::vector<std::string> names;  // empty for a headerless file
  size_t count = 0;
  int64_t line = 1;                // where the names come from, for messages

  int find(const std::string& name) const {
    const auto it = std::find(names.begin(), names.end(), name);
    return it == names.end() ? -1 : static_cast<int>(it - names.begin());
  }
  std::string describe() const {
    if (!names.empty()) return "columns: " + join(names);
    return "rows have " + std::to_string(count) + " column" + (count == 1 ? "" : "s") + ", numbered from 0";
  }
  std::string name_of(int i) const {
    return names.empty() ? "column " + std::to_string(i) : "column '" + names[i] + "'";
  }
  // A user's choice: a header name, else a 0-based position. -1 when absent.
  int resolve(const std::string& spec) const {
    const int by_name = find(spec);
    if (by_name >= 0) return by_name;
    if (is_index(spec) && std::stoul(spec) < count) return static_cast<int>(std::stoul(spec));
    return -1;
  }
};

struct ColumnChoice {
  int text = -1, pair = -1, label = -1;
};

ColumnChoice choose_columns(const Columns& cols, const DatasetOptions& opt, const std::string& path) {
  ColumnChoice c;
  const auto where = [&] { return path + ":" + std::to_string(cols.line); };

  if (!opt.text_column.empty()) {
    c.text = cols.resolve(opt.text_column);
    ENGINE_CHECK(c.text >= 0, where(), ": no column '", opt.text_column, "' for the text (", cols.describe(), ")");
  } else if (cols.names.empty()) {
    c.text = 0;
  } else {
    for (const auto& name : kTextCandidates)
      if ((c.text = cols.find(name)) >= 0) break;
    ENGINE_CHECK(c.text >= 0, where(), ": no text column: looked for ", join(kTextCandidates), " (",
                 cols.describe(), "); choose one by name");
  }

  if (opt.text_pair_column == "none") {
    c.pair = -1;
  } else if (!opt.text_pair_column.empty()) {
    c.pair = cols.resolve(opt.text_pair_column);
    ENGINE_CHECK(c.pair >= 0, where(), ": no column '", opt.text_pair_column, "' for the second text (",
                 cols.describe(), ")");
  } else if (!cols.names.empty()) {
    for (const auto& [first, second] : kPairPartners)
      if (cols.names[c.text] == first && (c.pair = cols.find(second)) >= 0) break;
  }

  if (!opt.label_column.empty()) {
    c.label = cols.resolve(opt.label_column);
    ENGINE_CHECK(c.label >= 0 || opt.labels_optional, where(), ": no column '", opt.label_column,
                 "' for the label (", cols.describe(), ")");
  } else if (cols.names.empty()) {
    c.label = cols.count >= 2 ? static_cast<int>(cols.count) - 1 : -1;
    ENGINE_CHECK(c.label >= 0 || opt.labels_optional, where(),
                 ": no label column: rows have a single column; give the label column's position");
  } else {
    for (const auto& name : kLabelCandidates)
      if ((c.label = cols.find(name)) >= 0) break;
    ENGINE_CHECK(c.label >= 0 || opt.labels_optional, where(), ": no label column: looked for ",
                 join(kLabelCandidates), " (", cols.describe(), "); choose one by name");
  }
  ENGINE_CHECK(c.text != c.pair && c.text != c.label && (c.pair < 0 || c.pair != c.label), where(),
               ": the text, second text and label must be different columns (", cols.describe(), ")");
  return c;
}

// The text of a field, refusing one that is empty or only spaces (it would tokenize to nothing).
std::string checked_text(std::string value, const std::string& what, const std::string& path, int64_t line) {
  ENGINE_CHECK(!is_blank(value), path, ":", line, ": empty text in ", what);
  return value;
}

std::string checked_label(const std::string& value, const std::string& what, const std::string& path,
                          int64_t line) {
  std::string label = trim(value);
  ENGINE_CHECK(!label.empty(), path, ":", line, ": empty label in ", what);
  return label;
}

// TSV and CSV: a table of records, the first one the header unless the file has none.
void read_table(LabelledDataset& ds, std::vector<Record> records, const DatasetOptions& opt) {
  const std::string& path = ds.path;
  ENGINE_CHECK(!records.empty(), path, ": empty file (no rows)");
  Columns cols;
  cols.count = records[0].fields.size();
  cols.line = records[0].line;
  size_t first_row = 0;
  if (opt.header) {
    cols.names = records[0].fields;
    first_row = 1;
    ENGINE_CHECK(records.size() > 1, path, ": only a header row (", cols.describe(), "), no data rows");
  }
  const ColumnChoice c = choose_columns(cols, opt, path);
  ds.has_labels = c.label >= 0;

  ds.rows.reserve(records.size() - first_row);
  for (size_t r = first_row; r < records.size(); ++r) {
    Record& rec = records[r];
    if (rec.fields.size() != cols.count)
      fail(path, ":", rec.line, ": ", rec.fields.size(), " field", rec.fields.size() == 1 ? "" : "s", ", expected ",
           cols.count, opt.header ? " (as in the header on line " : " (as on line ", cols.line, ")");
    Example ex;
    ex.line = rec.line;
    ex.text_a = checked_text(std::move(rec.fields[c.text]), cols.name_of(c.text), path, rec.line);
    if (c.pair >= 0) ex.text_b = checked_text(std::move(rec.fields[c.pair]), cols.name_of(c.pair), path, rec.line);
    if (c.label >= 0) ex.label = checked_label(rec.fields[c.label], cols.name_of(c.label), path, rec.line);
    ds.rows.push_back(std::move(ex));
  }
}

// ----------------------------------------------------------------------------------------------
// JSON Lines

std::vector<std::string> keys_of(const nlohmann::json& obj) {
  std::vector<std::string> keys;
  for (auto it = obj.begin(); it != obj.end(); ++it) keys.push_back(it.key());
  return keys;
}

nlohmann::json parse_json_object(const std::string& line, const std::string& path, int64_t number) {
  nlohmann::json obj;
  try {
    obj = nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    fail(path, ":", number, ": not valid JSON (", e.what(), ")");
  }
  ENGINE_CHECK(obj.is_object(), path, ":", number, ": expected a JSON object per line, found a ", obj.type_name(),
               obj.is_array() && number == 1 ? " (a JSON array file is not JSON Lines: write one object per line)" : "");
  return obj;
}

// A field of one object as text: strings as they are, numbers printed (labels are often numbers).
std::string json_field(const nlohmann::json& obj, const std::string& key, bool is_label, const std::string& path,
                       int64_t line) {
  const auto it = obj.find(key);
  if (it == obj.end()) fail(path, ":", line, ": no field '", key, "' (fields: ", join(keys_of(obj)), ")");
  if (it->is_string()) return it->get<std::string>();
  if (is_label && it->is_number_integer()) return std::to_string(it->get<int64_t>());
  if (is_label && it->is_number_unsigned()) return std::to_string(it->get<uint64_t>());
  if (is_label && it->is_number_float()) return it->dump();
  fail(path, ":", line, ": field '", key, "' is a ", it->type_name(), ", expected ",
       is_label ? "a string or a number" : "a string");
}

void read_jsonl(LabelledDataset& ds, const std::string& text, const DatasetOptions& opt) {
  const std::string& path = ds.path;
  std::vector<std::pair<nlohmann::json, int64_t>> objects;
  for_each_line(text, [&](const std::string& line, int64_t number) {
    if (is_blank(line)) return;
    objects.emplace_back(parse_json_object(line, path, number), number);
  });
  ENGINE_CHECK(!objects.empty(), path, ": empty file (no rows)");

  // Columns are chosen from the first object's keys; every later object must have them.
  Columns cols;
  cols.names = keys_of(objects[0].first);
  cols.count = cols.names.size();
  cols.line = objects[0].second;
  ENGINE_CHECK(cols.count > 0, path, ":", cols.line, ": empty JSON object");
  const ColumnChoice c = choose_columns(cols, opt, path);
  ds.has_labels = c.label >= 0;

  ds.rows.reserve(objects.size());
  for (const auto& [obj, line] : objects) {
    Example ex;
    ex.line = line;
    const std::string& text_key = cols.names[c.text];
    ex.text_a = checked_text(json_field(obj, text_key, false, path, line), "field '" + text_key + "'", path, line);
    if (c.pair >= 0) {
      const std::string& key = cols.names[c.pair];
      ex.text_b = checked_text(json_field(obj, key, false, path, line), "field '" + key + "'", path, line);
    }
    if (c.label >= 0) {
      const std::string& key = cols.names[c.label];
      ex.label = checked_label(json_field(obj, key, true, path, line), "field '" + key + "'", path, line);
    }
    ds.rows.push_back(std::move(ex));
  }
}

}  // namespace

// ----------------------------------------------------------------------------------------------

LabelledDataset read_dataset(const std::string& path, const DatasetOptions& options) {
  const std::string text = read_text_file(path);
  const FileFormat format = options.format == FileFormat::detect ? format_from_extension(path) : options.format;
  ENGINE_CHECK(!is_blank(text), path, ": empty file");
  check_utf8(text, path);

  LabelledDataset ds;
  ds.path = path;
  switch (format) {
    case FileFormat::tsv: read_table(ds, split_tsv(text), options); break;
    case FileFormat::csv: read_table(ds, split_csv(text, path), options); break;
    case FileFormat::jsonl: read_jsonl(ds, text, options); break;
    case FileFormat::detect: break;  // resolved above
  }
  return ds;
}

}  // namespace engine
