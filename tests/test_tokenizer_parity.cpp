// Parity with Hugging Face's BertTokenizer (the `tokenizers` fast tokenizer) on the committed
// corpus of tests/fixtures/tokenizer/, made by tools/make_tokenizer_parity.py: every id, token
// type id and offset of every line, for the uncased and the cased BERT vocabularies, singles and
// pairs with truncation, plus how every Unicode code point is cleaned, split and normalized.
// The vocabularies are read from ../shared/data/vocab at run time; the tests skip without them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "tokenizer/basic.h"
#include "tokenizer/encode.h"
#include "tokenizer/tokenize_stream.h"
#include "tokenizer/utf8.h"

using namespace tokenizer;

namespace {

const std::string kFixtures = std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/tokenizer/";

std::string data_dir() {
  if (const char* d = std::getenv("ENGINE_DATA_DIR")) return d;
  return std::string(ENGINE_SOURCE_DIR) + "/../shared/data";
}

std::string vocab_path(const std::string& mode) {
  return data_dir() + "/vocab/bert-base-" + mode + "/vocab.txt";
}

bool have_vocab(const std::string& mode) { return std::ifstream(vocab_path(mode)).good(); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw engine::Error("cannot open fixture " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Lines split on "\n" only: the corpus holds \r, \v, U+2028 and friends inside lines.
std::vector<std::string> read_lines(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1)
    lines.push_back(text.substr(start, nl - start));
  return lines;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.push_back("");
  return out;
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::istringstream in(s);
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::vector<Offset> parse_offsets(const std::string& s) {
  std::vector<Offset> out;
  std::istringstream in(s);
  std::string pair;
  while (in >> pair) {
    const size_t comma = pair.find(',');
    out.push_back(Offset{static_cast<uint32_t>(std::stoul(pair.substr(0, comma))),
                         static_cast<uint32_t>(std::stoul(pair.substr(comma + 1)))});
  }
  return out;
}

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? " " : "") + std::to_string(v[i]);
  return s;
}

std::string join(const std::vector<Offset>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? " " : "") + std::to_string(v[i].begin) + "," + std::to_string(v[i].end);
  return s;
}

// Character offsets of an encoding, each token's relative to the text it came from (HF's unit).
std::vector<Offset> hf_offsets(const Encoding& e, std::string_view a, std::string_view b) {
  std::vector<Offset> bytes_a, bytes_b;
  for (size_t i = 0; i < e.size(); ++i) (e.sequence_ids[i] == 1 ? bytes_b : bytes_a).push_back(e.offsets[i]);
  const auto ca = char_offsets(a, bytes_a), cb = char_offsets(b, bytes_b);
  std::vector<Offset> out;
  size_t ia = 0, ib = 0;
  for (size_t i = 0; i < e.size(); ++i) out.push_back(e.sequence_ids[i] == 1 ? cb[ib++] : ca[ia++]);
  return out;
}

// Reports the first few differing lines in full and counts the rest.
struct MismatchLog {
  size_t count = 0;
  void add(size_t line, const std::string& what, const std::string& expected, const std::string& got) {
    if (++count <= 8)
      ADD_FAILURE() << "line " << line + 1 << ": " << what << "\n  HF:     " << expected.substr(0, 600)
                    << "\n  engine: " << got.substr(0, 600);
  }
};

class Parity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!have_vocab(GetParam())) GTEST_SKIP() << "no vocabulary at " << vocab_path(GetParam());
  }
  BertTokenizer tokenizer() const { return BertTokenizer(Vocab::load(vocab_path(GetParam())), GetParam() == "uncased"); }
};

TEST_P(Parity, EveryLineOfTheCorpus) {
  const BertTokenizer tok = tokenizer();
  const auto corpus = read_lines(kFixtures + "corpus.txt");
  const auto expected = read_lines(kFixtures + "expected_" + GetParam() + ".txt");
  ASSERT_GE(corpus.size(), 10000u);
  ASSERT_EQ(corpus.size(), expected.size());
  MismatchLog log;
  size_t tokens = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const auto fields = split(expected[i], '\t');
    ASSERT_EQ(fields.size(), 2u) << "fixture line " << i + 1;
    const Encoding e = tok.encode(corpus[i]);
    tokens += e.size();
    const std::string ids = join(e.ids), offsets = join(hf_offsets(e, corpus[i], ""));
    if (ids != fields[0]) log.add(i, "ids", fields[0], ids);
    else if (offsets != fields[1]) log.add(i, "offsets", fields[1], offsets);
  }
  EXPECT_EQ(log.count, 0u) << "of " << corpus.size() << " lines differ";
  std::printf("[ parity  ] %s: %zu lines, %zu tokens, %zu differ\n", GetParam().c_str(), corpus.size(), tokens, log.count);
}

// Truncated singles are checked against HF's untruncated ids: [CLS] + first n-2 pieces + [SEP].
TEST_P(Parity, TruncatedSingles) {
  const BertTokenizer tok = tokenizer();
  const auto corpus = read_lines(kFixtures + "corpus.txt");
  const auto expected = read_lines(kFixtures + "expected_" + GetParam() + ".txt");
  MismatchLog log;
  for (int max_length : {2, 7, 32}) {
    for (size_t i = 0; i < corpus.size(); ++i) {
      std::vector<int32_t> want = parse_ids(split(expected[i], '\t')[0]);
      if (want.size() > static_cast<size_t>(max_length)) {
        want.resize(static_cast<size_t>(max_length) - 1);
        want.push_back(tok.vocab().sep_id());
      }
      const auto got = tok.encode(corpus[i], std::nullopt, EncodeOptions{max_length, Truncation::kLongestFirst}).ids;
      if (got != want) log.add(i, "max_length " + std::to_string(max_length), join(want), join(got));
    }
  }
  EXPECT_EQ(log.count, 0u);
}

TEST_P(Parity, PairsWithTruncation) {
  const BertTokenizer tok = tokenizer();
  const auto pairs = read_lines(kFixtures + "pairs.txt");
  const auto expected = read_lines(kFixtures + "expected_pairs_" + GetParam() + ".txt");
  ASSERT_EQ(pairs.size(), expected.size());
  MismatchLog log;
  size_t errors = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const size_t tab = pairs[i].find('\t');
    ASSERT_NE(tab, std::string::npos);
    const std::string a = pairs[i].substr(0, tab), b = pairs[i].substr(tab + 1);
    const auto f = split(expected[i], '\t');
    const EncodeOptions opt{std::stoi(f[0]), parse_truncation(f[1])};
    if (f[2] == "ERROR") {
      ++errors;
      try {
        tok.encode(a, std::string_view(b), opt);
        log.add(i, "HF refuses this truncation", "ERROR", "no error");
      } catch (const engine::Error&) {
      }
      continue;
    }
    ASSERT_EQ(f.size(), 5u) << "fixture line " << i + 1;
    Encoding e;
    try {
      e = tok.encode(a, std::string_view(b), opt);
    } catch (const engine::Error& err) {
      log.add(i, "error", f[2], err.what());
      continue;
    }
    std::string types;
    for (int32_t t : e.type_ids) types += std::to_string(t);
    const std::string ids = join(e.ids), offsets = join(hf_offsets(e, a, b));
    if (ids != f[2]) log.add(i, f[0] + " " + f[1] + " ids", f[2], ids);
    else if (types != f[3]) log.add(i, "type ids", f[3], types);
    else if (offsets != f[4]) log.add(i, "offsets", f[4], offsets);
  }
  EXPECT_GT(errors, 0u);  // the fixture does exercise HF's refusals
  EXPECT_EQ(log.count, 0u) << "of " << pairs.size() << " pairs differ";
}

// The batch path on all threads and the `engine tokenize` text format give the same ids.
TEST_P(Parity, BatchAndCommandLineFormat) {
  const auto corpus = read_lines(kFixtures + "corpus.txt");
  const auto expected = read_lines(kFixtures + "expected_" + GetParam() + ".txt");
  const BertTokenizer tok = tokenizer();
  std::vector<std::string_view> texts(corpus.begin(), corpus.end());
  const auto batch = tok.encode_batch(texts, {}, EncodeOptions{}, 4);
  std::string want_plain;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::string ids = split(expected[i], '\t')[0];
    ASSERT_EQ(join(batch[i].ids), ids) << "line " << i + 1;
    want_plain += ids + "\n";
  }
  TokenizeStreamOptions opt;
  opt.vocab_path = vocab_path(GetParam());
  opt.lowercase = GetParam() == "uncased";
  std::istringstream in(read_file(kFixtures + "corpus.txt"));
  std::ostringstream out;
  run_tokenize(in, out, opt);
  EXPECT_TRUE(out.str() == want_plain) << "engine tokenize output differs from the HF ids";
}

INSTANTIATE_TEST_SUITE_P(Vocab, Parity, ::testing::Values("uncased", "cased"));

// ---- every code point ----

// Renders how the basic step treats the probe "a" + c + "a" as the fixture does: words joined by
// "|", each character "C" (c itself), "a", or its code point in hex followed by ".".
std::string render_probe(uint32_t c, bool lowercase, const Vocab& vocab) {
  std::string probe = "a";
  append_utf8(probe, c);
  probe += "a";
  Words w;
  split_words(probe, lowercase, vocab, w);
  std::string out;
  for (size_t k = 0; k < w.words.size(); ++k) {
    if (k) out += "|";
    const auto& word = w.words[k];
    const std::string_view text(w.text);
    const auto* p = reinterpret_cast<const unsigned char*>(text.data()) + w.char_pos[word.first_char];
    const auto* end = reinterpret_cast<const unsigned char*>(text.data()) + w.byte_of(word.first_char + word.n_chars);
    while (p < end) {
      uint32_t ch;
      p += decode_utf8(p, end, &ch);
      if (ch == c) out += "C";
      else if (ch == 'a') out += "a";
      else {
        char hex[16];
        std::snprintf(hex, sizeof hex, "%X.", ch);
        out += hex;
      }
    }
  }
  return out;
}

TEST(ParityCodePoints, EveryCodePointCleanedSplitAndNormalizedAsHF) {
  const Vocab vocab = Vocab::from_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n");
  const auto rows = read_lines(kFixtures + "codepoints.tsv");
  ASSERT_GT(rows.size(), 1000u);
  size_t checked = 0, differ = 0;
  uint32_t next = 0;
  for (const std::string& row : rows) {
    const auto f = split(row, '\t');
    ASSERT_EQ(f.size(), 4u) << row;
    const auto first = static_cast<uint32_t>(std::stoul(f[0], nullptr, 16));
    const auto last = static_cast<uint32_t>(std::stoul(f[1], nullptr, 16));
    if (next == 0xD800) next = 0xE000;  // surrogates are not characters
    ASSERT_EQ(first, next) << "gap in the fixture";
    for (uint32_t c = first; c <= last; ++c, ++checked) {
      const std::string cased = render_probe(c, false, vocab), uncased = render_probe(c, true, vocab);
      if (cased != f[2] || uncased != f[3]) {
        if (++differ <= 20)
          ADD_FAILURE() << std::hex << "U+" << c << ": HF cased '" << f[2] << "' uncased '" << f[3]
                        << "', engine cased '" << cased << "' uncased '" << uncased << "'";
      }
    }
    next = last + 1;
  }
  EXPECT_EQ(next, 0x110000u);
  EXPECT_EQ(differ, 0u) << "of " << checked << " code points differ";
}

}  // namespace
