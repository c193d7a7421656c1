// Line-oriented tokenization for `engine tokenize`: blocks of lines are encoded on threads and
// printed in input order.
#include "tokenizer/tokenize_stream.h"

#include <istream>
#include <ostream>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace tokenizer {
namespace {

// Directory part of a path ("." when none).
std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

void write_ids(std::ostream& out, const Encoding& e) {
  std::string line;
  for (size_t i = 0; i < e.ids.size(); ++i) {
    if (i) line.push_back(' ');
    line += std::to_string(e.ids[i]);
  }
  line.push_back('\n');
  out << line;
}

void write_json(std::ostream& out, const Encoding& e, const Vocab& vocab, std::string_view a,
                std::string_view b) {
  // Offsets of each text are converted separately: HF reports them per text.
  std::vector<Offset> bytes_a, bytes_b;
  for (size_t i = 0; i < e.size(); ++i) {
    if (e.sequence_ids[i] == 1) bytes_b.push_back(e.offsets[i]);
    else bytes_a.push_back(e.offsets[i]);
  }
  const std::vector<Offset> chars_a = char_offsets(a, bytes_a);
  const std::vector<Offset> chars_b = char_offsets(b, bytes_b);
  nlohmann::ordered_json j;  // keys in the documented order
  j["ids"] = e.ids;
  j["type_ids"] = e.type_ids;
  nlohmann::ordered_json tokens = nlohmann::ordered_json::array(), offsets = nlohmann::ordered_json::array();
  size_t ia = 0, ib = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    tokens.push_back(std::string(vocab.token(e.ids[i])));
    const Offset o = e.sequence_ids[i] == 1 ? chars_b[ib++] : chars_a[ia++];
    offsets.push_back({o.begin, o.end});
  }
  j["tokens"] = std::move(tokens);
  j["offsets"] = std::move(offsets);
  out << j.dump() << '\n';
}

}  // namespace

void run_tokenize(std::istream& in, std::ostream& out, const TokenizeStreamOptions& options) {
  bool lowercase = true;
  if (options.lowercase) lowercase = *options.lowercase;
  else if (auto from_config = read_do_lower_case(directory_of(options.vocab_path))) lowercase = *from_config;
  const BertTokenizer tok(Vocab::load(options.vocab_path), lowercase);

  constexpr size_t kBlock = 8192;  // lines per parallel batch: bounded memory on endless input
  std::vector<std::string> lines;
  std::vector<std::string_view> a, b;
  size_t line_number = 0;
  auto flush = [&] {
    a.clear();
    b.clear();
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string_view line = lines[i];
      if (!options.pairs) {
        a.push_back(line);
        continue;
      }
      const size_t tab = line.find('\t');
      if (tab == std::string_view::npos)
        engine::fail("line ", line_number - lines.size() + i + 1, ": --pairs needs a tab between the two texts");
      a.push_back(line.substr(0, tab));
      b.push_back(line.substr(tab + 1));
    }
    std::vector<Encoding> enc;
    try {
      enc = tok.encode_batch(a, b, options.encode, options.threads);
    } catch (const engine::Error&) {
      // Find the first line that fails, to name it (rare path: encode them one by one).
      for (size_t i = 0; i < a.size(); ++i) {
        try {
          tok.encode(a[i], options.pairs ? std::optional<std::string_view>(b[i]) : std::nullopt, options.encode);
        } catch (const engine::Error& e) {
          engine::fail("line ", line_number - lines.size() + i + 1, ": ", e.what());
        }
      }
      throw;
    }
    for (size_t i = 0; i < enc.size(); ++i) {
      if (options.json) write_json(out, enc[i], tok.vocab(), a[i], options.pairs ? b[i] : std::string_view());
      else write_ids(out, enc[i]);
    }
    lines.clear();
  };
  std::string line;
  while (std::getline(in, line)) {
    ++line_number;
    lines.push_back(std::move(line));
    line.clear();
    if (lines.size() == kBlock) flush();
  }
  if (!lines.empty()) flush();
  out.flush();
}

}  // namespace tokenizer
