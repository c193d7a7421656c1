// SQuAD files and question answering windows (see squad.h).
#include "engine/data/squad.h"

#include <algorithm>
#include <exception>
#include <thread>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "engine/data/dataset.h"
#include "engine/error.h"
#include "tokenizer/utf8.h"

namespace engine {

namespace {

using nlohmann::json;

// The question as run_qa.py passes it: leading whitespace removed (some SQuAD questions start with
// spaces, which would otherwise cost window room).
std::string lstrip(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    uint32_t cp;
    const size_t n = tokenizer::decode_utf8(p, end, &cp);
    if (!is_python_space(cp)) break;
    p += n;
  }
  return s.substr(size_t(p - reinterpret_cast<const unsigned char*>(s.data())));
}

std::string string_field(const json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  ENGINE_CHECK(it != obj.end(), where, ": no \"", key, "\" field");
  ENGINE_CHECK(it->is_string(), where, ": \"", key, "\" is ", it->type_name(), ", expected a string");
  return it->get<std::string>();
}

// The id of a question: a string, or a number written as its decimal text.
std::string id_field(const json& obj, const std::string& where) {
  auto it = obj.find("id");
  ENGINE_CHECK(it != obj.end(), where, ": no \"id\" field");
  if (it->is_number_integer()) return std::to_string(it->get<int64_t>());
  ENGINE_CHECK(it->is_string(), where, ": \"id\" is ", it->type_name(), ", expected a string");
  return it->get<std::string>();
}

int64_t start_value(const json& v, const std::string& where) {
  ENGINE_CHECK(v.is_number_integer(), where, ": answer_start is ", v.dump(), ", expected an integer");
  return v.get<int64_t>();
}

// answers as SQuAD JSON writes them ([{"text", "answer_start"}, ...]) or as HF datasets do
// ({"text": [...], "answer_start": [...]}).
std::vector<SquadAnswer> read_answers(const json& a, const std::string& where) {
  std::vector<SquadAnswer> out;
  if (a.is_array()) {
    for (const json& x : a) {
      ENGINE_CHECK(x.is_object(), where, ": an answer is ", x.type_name(), ", expected {\"text\", \"answer_start\"}");
      ENGINE_CHECK(x.contains("answer_start"), where, ": an answer has no \"answer_start\"");
      out.push_back({string_field(x, "text", where), start_value(x["answer_start"], where)});
    }
    return out;
  }
  ENGINE_CHECK(a.is_object(), where, ": \"answers\" is ", a.type_name(), ", expected a list or {text, answer_start}");
  ENGINE_CHECK(a.contains("text") && a.contains("answer_start") && a["text"].is_array() &&
                   a["answer_start"].is_array(),
               where, ": \"answers\" needs the lists \"text\" and \"answer_start\"");
  ENGINE_CHECK(a["text"].size() == a["answer_start"].size(), where, ": ", a["text"].size(), " answer texts but ",
               a["answer_start"].size(), " answer_start values");
  for (size_t i = 0; i < a["text"].size(); ++i) {
    ENGINE_CHECK(a["text"][i].is_string(), where, ": answer text ", i, " is not a string");
    out.push_back({a["text"][i].get<std::string>(), start_value(a["answer_start"][i], where)});
  }
  return out;
}

// Each answer must be where answer_start says: the context's characters from there read the text.
void check_answers(const SquadExample& e, const std::string& where) {
  if (e.answers.empty()) return;
  const std::vector<int64_t> byte_at = char_to_byte(e.context);
  const int64_t chars = int64_t(byte_at.size()) - 1;
  for (const SquadAnswer& a : e.answers) {
    ENGINE_CHECK(!a.text.empty(), where, ": an answer's text is empty");
    const int64_t len = int64_t(char_to_byte(a.text).size()) - 1;
    ENGINE_CHECK(a.start >= 0 && a.start + len <= chars, where, ": answer_start ", a.start, " with the ", len,
                 "-character answer '", a.text, "' runs outside the ", chars, "-character context");
    const std::string there = e.context.substr(size_t(byte_at[size_t(a.start)]),
                                               size_t(byte_at[size_t(a.start + len)] - byte_at[size_t(a.start)]));
    ENGINE_CHECK(there == a.text, where, ": answer_start ", a.start, " does not match the answer text '", a.text,
                 "' (the context reads '", there, "' there)");
  }
}

void add_example(SquadFile& f, SquadExample e, const json& qa, bool answers_required, const std::string& where,
                 std::unordered_set<std::string>& ids) {
  ENGINE_CHECK(ids.insert(e.id).second, where, ": the id appears twice");
  ENGINE_CHECK(!lstrip(e.question).empty(), where, ": the question is empty");
  ENGINE_CHECK(!lstrip(e.context).empty(), where, ": the context is empty");
  const bool impossible = qa.contains("is_impossible") && qa["is_impossible"].is_boolean() &&
                          qa["is_impossible"].get<bool>();
  if (qa.contains("answers") && !qa["answers"].is_null()) {
    e.answers = read_answers(qa["answers"], where);
    f.has_answers = true;
  } else {
    ENGINE_CHECK(!answers_required, where, ": no \"answers\" field (a file to train or score on needs answers)");
  }
  if (impossible) e.answers.clear();  // v2 JSON keeps "plausible_answers" aside; answers is empty anyway
  if (qa.contains("is_impossible") && f.version_reason.empty()) f.version_reason = "is_impossible in the file";
  if (qa.contains("answers") && e.answers.empty() && f.version_reason.empty())
    f.version_reason = "questions without answers";
  check_answers(e, where);
  f.examples.push_back(std::move(e));
}

void read_squad_json(SquadFile& f, const json& root, bool answers_required) {
  ENGINE_CHECK(root.contains("data") && root["data"].is_array(), f.path, ": no \"data\" list (SQuAD JSON)");
  std::unordered_set<std::string> ids;
  for (const json& article : root["data"]) {
    ENGINE_CHECK(article.is_object() && article.contains("paragraphs") && article["paragraphs"].is_array(), f.path,
                 ": an article without a \"paragraphs\" list");
    for (const json& para : article["paragraphs"]) {
      ENGINE_CHECK(para.is_object() && para.contains("qas") && para["qas"].is_array(), f.path,
                   ": a paragraph without a \"qas\" list");
      const std::string context = string_field(para, "context", f.path + ": a paragraph");
      for (const json& qa : para["qas"]) {
        ENGINE_CHECK(qa.is_object(), f.path, ": a question is ", qa.type_name(), ", expected an object");
        SquadExample e;
        e.id = id_field(qa, f.path + ": a question");
        const std::string where = f.path + ": example '" + e.id + "'";
        e.question = string_field(qa, "question", where);
        e.context = context;
        add_example(f, std::move(e), qa, answers_required, where, ids);
      }
    }
  }
}

void read_json_lines(SquadFile& f, const std::vector<std::string>& lines, bool answers_required) {
  std::unordered_set<std::string> ids;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string line_where = f.path + ":" + std::to_string(i + 1);
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    json obj;
    try {
      obj = json::parse(lines[i]);
    } catch (const json::exception& e) {
      fail(line_where, ": not valid JSON (", e.what(), ")");
    }
    ENGINE_CHECK(obj.is_object(), line_where, ": expected a JSON object");
    SquadExample e;
    e.id = obj.contains("id") ? id_field(obj, line_where) : std::to_string(i + 1);  // line number when absent
    const std::string where = line_where + ": example '" + e.id + "'";
    e.question = string_field(obj, "question", where);
    e.context = string_field(obj, "context", where);
    add_example(f, std::move(e), obj, answers_required, where, ids);
  }
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t begin = 0;
  while (begin <= text.size()) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(begin, end - begin);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    begin = end + 1;
  }
  return lines;
}

void finish(SquadFile& f) {
  ENGINE_CHECK(!f.examples.empty(), f.path, ": no questions");
  f.version_2 = !f.version_reason.empty();
}

// run_qa.py's labels for one window: the tokens of the answer's first and last character when the
// window's context holds the whole answer, else [CLS] (0).
void label_window(TokenizedExample& t, const QaFeature& f, int64_t start_byte, int64_t end_byte) {
  t.span_start = t.span_end = 0;
  int64_t first = -1, last = -1;  // the window's context tokens
  for (size_t i = 0; i < f.is_context.size(); ++i)
    if (f.is_context[i]) {
      if (first < 0) first = int64_t(i);
      last = int64_t(i);
    }
  if (first < 0) return;
  if (!(int64_t(f.offsets[size_t(first)].begin) <= start_byte && int64_t(f.offsets[size_t(last)].end) >= end_byte))
    return;
  int64_t s = first;
  while (s <= last && int64_t(f.offsets[size_t(s)].begin) <= start_byte) ++s;
  int64_t e = last;
  while (int64_t(f.offsets[size_t(e)].end) >= end_byte) --e;
  t.span_start = int32_t(s - 1);
  t.span_end = int32_t(e + 1);
}

// The windows of one example, labelled when it has answers.
void windows_of(const SquadExample& ex, int64_t example, const tokenizer::BertTokenizer& tok, int max_length,
                int doc_stride, bool labelled, std::vector<TokenizedExample>& out, std::vector<QaFeature>& features) {
  std::vector<tokenizer::Encoding> enc;
  try {
    enc = tok.encode_windows(lstrip(ex.question), ex.context, max_length, doc_stride);
  } catch (const Error& e) {
    fail("example '", ex.id, "': ", e.what());
  }
  int64_t start_byte = -1, end_byte = -1;
  if (labelled && !ex.answers.empty()) {
    const std::vector<int64_t> byte_at = char_to_byte(ex.context);
    const SquadAnswer& a = ex.answers[0];
    const int64_t len = int64_t(char_to_byte(a.text).size()) - 1;
    start_byte = byte_at[size_t(a.start)];
    end_byte = byte_at[size_t(a.start + len)];
  }
  for (tokenizer::Encoding& e : enc) {
    QaFeature f;
    f.example = example;
    f.offsets = std::move(e.offsets);
    bool any_context = false;
    for (int8_t s : e.sequence_ids) {
      f.is_context.push_back(s == 1);
      any_context |= s == 1;
    }
    ENGINE_CHECK(any_context, "example '", ex.id, "': the context has no tokens (nothing but characters BERT drops)");
    TokenizedExample t;
    t.ids = std::move(e.ids);
    t.type_ids = std::move(e.type_ids);
    if (labelled) {
      if (start_byte >= 0) label_window(t, f, start_byte, end_byte);
      else t.span_start = t.span_end = 0;
    }
    out.push_back(std::move(t));
    features.push_back(std::move(f));
  }
}

}  // namespace

bool is_python_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

std::vector<int64_t> char_to_byte(const std::string& text) {
  std::vector<int64_t> out;
  out.reserve(text.size() + 1);
  for (size_t i = 0; i < text.size(); ++i)
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) out.push_back(int64_t(i));  // a character starts
  out.push_back(int64_t(text.size()));
  return out;
}

SquadFile read_squad(const std::string& path, bool answers_required) {
  SquadFile f;
  f.path = path;
  const std::string text = read_text_file(path);
  check_utf8(text, path);
  const size_t first = text.find_first_not_of(" \t\r\n");
  bool whole_json = false;
  json root;
  if (first != std::string::npos && text[first] == '{') {
    // One JSON object for the whole file (SQuAD JSON), unless it is the first line of JSON Lines.
    try {
      root = json::parse(text);
      whole_json = root.is_object() && root.contains("data");
    } catch (const json::exception&) {
      whole_json = false;
    }
  }
  if (whole_json) read_squad_json(f, root, answers_required);
  else read_json_lines(f, split_lines(text), answers_required);
  finish(f);
  return f;
}

SquadFile squad_from_json_lines(const std::vector<std::string>& lines, const std::string& source) {
  SquadFile f;
  f.path = source;
  read_json_lines(f, lines, false);
  finish(f);
  return f;
}

QaWindows make_qa_windows(const SquadFile& file, const tokenizer::BertTokenizer& tok, int max_length, int doc_stride,
                          int threads) {
  const size_t n = file.examples.size();
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  threads = int(std::min<size_t>(size_t(threads), std::max<size_t>(1, n / 64)));
  // Contiguous chunks, one per thread, joined in order: the windows never depend on the thread count.
  std::vector<QaWindows> parts(static_cast<size_t>(threads));
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  auto work = [&](int part) {
    try {
      for (size_t i = n * size_t(part) / size_t(threads); i < n * size_t(part + 1) / size_t(threads); ++i)
        windows_of(file.examples[i], int64_t(i), tok, max_length, doc_stride, file.has_answers, parts[size_t(part)].examples,
                   parts[size_t(part)].features);
    } catch (...) {
      errors[size_t(part)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  QaWindows out;
  for (QaWindows& p : parts) {
    for (TokenizedExample& t : p.examples) {
      t.index = int64_t(out.examples.size());
      out.examples.push_back(std::move(t));
    }
    for (QaFeature& f : p.features) out.features.push_back(std::move(f));
  }
  return out;
}

}  // namespace engine
