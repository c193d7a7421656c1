// Unit tests of the tokenizer rules on a tiny hand-written vocabulary: each expectation below is
// worked out by hand from BERT's rules (see tests/test_tokenizer_parity.cpp for Hugging Face parity).
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "engine/error.h"
#include "tokenizer/basic.h"
#include "tokenizer/encode.h"
#include "tokenizer/tokenize_stream.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

using namespace tokenizer;

namespace {

// ids: 0 [PAD] 1 [UNK] 2 [CLS] 3 [SEP] 4 [MASK] then the tokens below in order.
const char* kVocab =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n"
    "un\n##want\n##ed\nwant\nrunn\n##ing\n,\n.\n!\nhello\nworld\n"  // 5..15
    "cafe\ncafé\nHello\n中\n文\nab\ncd\n##c\na\n##b\n"                // 16..25
    "ᄒ\n##ᅡ\n##ᆫ\n$\n^\n`\nσ\nοδοσ\n[\n]\nmask\n";                    // 26..36

Vocab tiny_vocab() { return Vocab::from_text(kVocab, "tiny vocab"); }

std::vector<std::string> words_of(std::string_view text, bool lowercase) {
  static const Vocab vocab = tiny_vocab();
  Words w;
  split_words(text, lowercase, vocab, w);
  std::vector<std::string> out;
  for (const auto& word : w.words) {
    if (word.special_id >= 0) {
      out.push_back("<" + std::to_string(word.special_id) + ">");
      continue;
    }
    const uint32_t b = w.char_pos[word.first_char], e = w.byte_of(word.first_char + word.n_chars);
    out.push_back(w.text.substr(b, e - b));
  }
  return out;
}

using Strings = std::vector<std::string>;
using Ids = std::vector<int32_t>;

std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("engine_test_tokenizer_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

// ---- vocabulary ----

TEST(TokenizerVocab, FindsTokensAndSpecials) {
  const Vocab v = tiny_vocab();
  EXPECT_EQ(v.size(), 37);
  EXPECT_EQ(v.pad_id(), 0);
  EXPECT_EQ(v.unk_id(), 1);
  EXPECT_EQ(v.cls_id(), 2);
  EXPECT_EQ(v.sep_id(), 3);
  EXPECT_EQ(v.mask_id(), 4);
  EXPECT_EQ(v.find("want"), 8);
  EXPECT_EQ(v.find("##want"), 6);
  EXPECT_EQ(v.find_continuation("want"), 6);
  EXPECT_EQ(v.find_word_start("ed"), -1);
  EXPECT_EQ(v.find_continuation("ed"), 7);
  EXPECT_EQ(v.find("missing"), -1);
  EXPECT_EQ(v.token(17), "café");
}

TEST(TokenizerVocab, CrlfLinesAndDuplicates) {
  const Vocab v = Vocab::from_text("[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\n[MASK]\r\nx\r\ny\r\nx");
  EXPECT_EQ(v.size(), 8);
  EXPECT_EQ(v.find("y"), 6);
  EXPECT_EQ(v.find("x"), 7);  // a repeated token maps to its last line, as in Hugging Face
}

TEST(TokenizerVocab, MissingFileIsAClearError) {
  try {
    Vocab::load("/nonexistent/dir/vocab.txt");
    FAIL() << "no error";
  } catch (const engine::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/vocab.txt"), std::string::npos) << e.what();
  }
}

TEST(TokenizerVocab, MalformedVocabulariesAreErrors) {
  EXPECT_THROW(Vocab::from_text(""), engine::Error);
  EXPECT_THROW(Vocab::from_text("[PAD]\n[CLS]\n[SEP]\n[MASK]\nhello\n"), engine::Error);  // no [UNK]
  EXPECT_THROW(Vocab::from_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nbad\xff\n"), engine::Error);
  EXPECT_THROW(Vocab::from_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ntwo words\n"), engine::Error);
  const std::string dir = temp_dir("binary");
  write_file(dir + "/vocab.txt", std::string("\x00\x01\x02\xfe\xff", 5));
  EXPECT_THROW(Vocab::load(dir + "/vocab.txt"), engine::Error);
}

// ---- UTF-8 ----

TEST(TokenizerUtf8, ReplacementFollowsMaximalSubparts) {
  // Python: b"a\xe2\x82b\xf0\x9f\x98\xff\xed\xa0\x80c".decode("utf-8", "replace") has
  // a, FFFD, b, FFFD, FFFD, FFFD, FFFD, FFFD, c = 9 characters.
  EXPECT_EQ(count_chars("a\xe2\x82" "b\xf0\x9f\x98\xff\xed\xa0\x80" "c"), 9u);
  EXPECT_EQ(count_chars("h\xc3\xa9llo"), 5u);
  EXPECT_EQ(count_chars("\xf0\x9f\x98\x80"), 1u);  // one emoji
  EXPECT_EQ(count_chars("\xc0\xaf"), 2u);          // overlong: two bytes, two replacements
  EXPECT_TRUE(is_valid_utf8("caf\xc3\xa9 \xef\xbf\xbd"));
  EXPECT_FALSE(is_valid_utf8("\xf0\x9f\x98"));
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));  // a surrogate
}

// ---- the basic step ----

TEST(TokenizerBasic, CleanDropsNulReplacementAndControls) {
  EXPECT_EQ(words_of(std::string("a\0b", 3), true), Strings{"ab"});
  EXPECT_EQ(words_of("a\xef\xbf\xbd" "b", true), Strings{"ab"});      // U+FFFD
  EXPECT_EQ(words_of("a\x07" "b\x7f" "c", true), Strings{"abc"});    // Cc
  EXPECT_EQ(words_of("a\xe2\x80\x8b" "b", true), Strings{"ab"});     // U+200B ZERO WIDTH SPACE is Cf
  EXPECT_EQ(words_of("a\xc2\xad" "b", true), Strings{"ab"});         // soft hyphen, Cf
  EXPECT_EQ(words_of("a\xee\x80\x80" "b", true), Strings{"ab"});     // private use, Co
  EXPECT_EQ(words_of("a\x0b" "b\x0c" "c", true), Strings{"abc"});    // VT and FF are controls first
  EXPECT_EQ(words_of("a\xff" "b", true), Strings{"ab"});             // an invalid byte is U+FFFD
}

TEST(TokenizerBasic, WhitespaceOfAllKindsSplits) {
  EXPECT_EQ(words_of("a b\tc\nd\re", true), (Strings{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(words_of("a\xc2\xa0" "b\xe3\x80\x80" "c\xe2\x80\xa8" "d\xe2\x80\x83" "e", true),
            (Strings{"a", "b", "c", "d", "e"}));  // NBSP, ideographic space, LINE SEPARATOR, EM SPACE
  EXPECT_EQ(words_of("   ", true), Strings{});
}

TEST(TokenizerBasic, PunctuationIsAlwaysItsOwnWord) {
  EXPECT_EQ(words_of("hello,world!!", true), (Strings{"hello", ",", "world", "!", "!"}));
  // ASCII symbols that are not Unicode punctuation still split, as in BERT.
  EXPECT_EQ(words_of("a$b^c`d", true), (Strings{"a", "$", "b", "^", "c", "`", "d"}));
  EXPECT_EQ(words_of("x\xc2\xbfy", true), (Strings{"x", "\xc2\xbf", "y"}));  // inverted ?, Po
  EXPECT_EQ(words_of("x\xe2\x80\x94y", true), (Strings{"x", "\xe2\x80\x94", "y"}));  // em dash, Pd
  EXPECT_EQ(words_of("x\xe2\x82\xacy", true), Strings{"x\xe2\x82\xacy"});  // euro sign is Sc: no split
}

TEST(TokenizerBasic, CjkIdeographsStandAlone) {
  EXPECT_EQ(words_of("ab\xe4\xb8\xad\xe6\x96\x87" "cd", true), (Strings{"ab", "中", "文", "cd"}));
  // Hiragana and Hangul are not CJK ideographs in BERT's sense: they stay in the word.
  EXPECT_EQ(words_of("a\xe3\x81\x82" "b", false), Strings{"a\xe3\x81\x82" "b"});
}

TEST(TokenizerBasic, UncasedLowercasesAndStripsAccents) {
  EXPECT_EQ(words_of("H\xc3\xa9llo W\xc3\x96RLD", true), (Strings{"hello", "world"}));
  EXPECT_EQ(words_of("H\xc3\xa9llo W\xc3\x96RLD", false), (Strings{"H\xc3\xa9llo", "W\xc3\x96RLD"}));
  // e + COMBINING ACUTE: the mark (Mn) is dropped only for uncased.
  EXPECT_EQ(words_of("e\xcc\x81", true), Strings{"e"});
  EXPECT_EQ(words_of("e\xcc\x81", false), Strings{"e\xcc\x81"});
  // Dotted capital I: NFD gives I + U+0307, the mark goes, then lowercase: "i".
  EXPECT_EQ(words_of("\xc4\xb0", true), Strings{"i"});
  // Greek capital sigma lowercases to sigma even at the end of a word (per character, like HF).
  EXPECT_EQ(words_of("\xce\x9f\xce\x94\xce\x9f\xce\xa3", true), Strings{"οδοσ"});
  // A Hangul syllable decomposes into conjoining jamo when accents are stripped.
  EXPECT_EQ(words_of("\xed\x95\x9c", true), Strings{"\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab"});
  EXPECT_EQ(words_of("\xed\x95\x9c", false), Strings{"\xed\x95\x9c"});
}

TEST(TokenizerBasic, SpecialTokensInTextAreKeptWhole) {
  EXPECT_EQ(words_of("a [MASK] b", true), (Strings{"a", "<4>", "b"}));
  EXPECT_EQ(words_of("x[SEP]y", true), (Strings{"x", "<3>", "y"}));
  // Matching is on the raw text and case-sensitive: "[mask]" is punctuation and a word.
  EXPECT_EQ(words_of("[mask]", true), (Strings{"[", "mask", "]"}));
  EXPECT_EQ(words_of("[MASK", true), (Strings{"[", "mask"}));
}

// ---- WordPiece and encoding ----

TEST(TokenizerWordPiece, GreedyLongestMatchFirst) {
  const BertTokenizer tok(tiny_vocab(), true);
  EXPECT_EQ(tok.tokenize_ids("unwanted running"), (Ids{5, 6, 7, 9, 10}));  // un ##want ##ed runn ##ing
  EXPECT_EQ(tok.tokenize_ids("abc"), (Ids{21, 23}));   // "ab" then "##c", not "a" "##b" "##c"
  EXPECT_EQ(tok.tokenize_ids("abx"), (Ids{1}));        // no cut for "x": the whole word is [UNK]
  EXPECT_EQ(tok.tokenize_ids("wanted"), (Ids{8, 7}));
  EXPECT_EQ(tok.tokenize_ids("edwant"), (Ids{1}));     // "ed" only exists as a continuation
}

TEST(TokenizerWordPiece, WordsOverHundredCharactersAreUnknown) {
  const BertTokenizer tok(tiny_vocab(), true);
  std::string ok = "a";
  for (int i = 0; i < 99; ++i) ok += "b";  // 100 characters: "ab" then 98 "##b"
  EXPECT_EQ(tok.tokenize_ids(ok).size(), 99u);
  EXPECT_EQ(tok.tokenize_ids(ok + "b"), (Ids{1}));
  // The limit counts normalized characters: 101 characters of which the last is a combining mark
  // that the uncased rules drop leave 100, which is not too long.
  EXPECT_EQ(tok.tokenize_ids(ok + "\xcc\x81").size(), 99u);
  EXPECT_EQ(BertTokenizer(tiny_vocab(), false).tokenize_ids(ok + "\xcc\x81"), (Ids{1}));
}

TEST(TokenizerEncode, SingleAndPairLayout) {
  const BertTokenizer tok(tiny_vocab(), true);
  Encoding e = tok.encode("Hello, world!");
  EXPECT_EQ(e.ids, (Ids{2, 14, 11, 15, 13, 3}));
  EXPECT_EQ(e.type_ids, (Ids{0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(e.word_ids, (Ids{-1, 0, 1, 2, 3, -1}));
  e = tok.encode("hello", std::string_view("world ."));
  EXPECT_EQ(e.ids, (Ids{2, 14, 3, 15, 12, 3}));
  EXPECT_EQ(e.type_ids, (Ids{0, 0, 0, 1, 1, 1}));
  EXPECT_EQ(e.sequence_ids, (std::vector<int8_t>{-1, 0, -1, 1, 1, -1}));
  e = tok.encode("", std::string_view(""));
  EXPECT_EQ(e.ids, (Ids{2, 3, 3}));
}

TEST(TokenizerEncode, CasedVocabularyKeepsCase) {
  const BertTokenizer cased(tiny_vocab(), false);
  EXPECT_EQ(cased.tokenize_ids("Hello hello HELLO caf\xc3\xa9"), (Ids{18, 14, 1, 17}));
  const BertTokenizer uncased(tiny_vocab(), true);
  EXPECT_EQ(uncased.tokenize_ids("Hello hello HELLO caf\xc3\xa9"), (Ids{14, 14, 14, 16}));
}

TEST(TokenizerEncode, ByteAndCharacterOffsets) {
  const BertTokenizer tok(tiny_vocab(), true);
  const std::string text = "Caf\xc3\xa9 \xe4\xb8\xad!";  // "Café 中!"
  const Encoding e = tok.encode(text);
  EXPECT_EQ(e.ids, (Ids{2, 16, 19, 13, 3}));
  ASSERT_EQ(e.offsets.size(), 5u);
  EXPECT_EQ(e.offsets[1], (Offset{0, 5}));
  EXPECT_EQ(e.offsets[2], (Offset{6, 9}));
  EXPECT_EQ(e.offsets[3], (Offset{9, 10}));
  EXPECT_EQ(e.offsets[0], (Offset{0, 0}));
  const std::vector<Offset> chars = char_offsets(text, e.offsets);
  EXPECT_EQ(chars[1], (Offset{0, 4}));
  EXPECT_EQ(chars[2], (Offset{5, 6}));
  EXPECT_EQ(chars[3], (Offset{6, 7}));
  // Pieces of one word: "unwanted" = un [0,2) ##want [2,6) ##ed [6,8); an invalid byte before it
  // shifts characters by one.
  const std::string bad = "\xff unwanted";
  const Encoding u = tok.encode(bad);
  const std::vector<Offset> uc = char_offsets(bad, u.offsets);
  EXPECT_EQ(uc[1], (Offset{2, 4}));
  EXPECT_EQ(uc[2], (Offset{4, 8}));
  EXPECT_EQ(uc[3], (Offset{8, 10}));
  // Hangul jamo pieces all point at the syllable they come from.
  const Encoding h = tok.encode("\xed\x95\x9c");
  EXPECT_EQ(h.ids, (Ids{2, 26, 27, 28, 3}));
  EXPECT_EQ(h.offsets[1], (Offset{0, 3}));
  EXPECT_EQ(h.offsets[3], (Offset{0, 3}));
}

TEST(TokenizerEncode, TruncationStrategies) {
  const BertTokenizer tok(tiny_vocab(), true);
  auto lengths = [&](const std::string& a, const std::string& b, int max_length, Truncation t) {
    const Encoding e = tok.encode(a, std::string_view(b), EncodeOptions{max_length, t});
    int na = 0, nb = 0;
    for (auto s : e.sequence_ids) (s == 0 ? na : s == 1 ? nb : na) += s >= 0;
    return std::make_pair(na, nb);
  };
  const std::string a6 = "a a a a a a", b4 = "cd cd cd cd", b6 = "cd cd cd cd cd cd";
  // longest_first: the shorter text keeps up to half of the budget, the longer one the rest.
  EXPECT_EQ(lengths(a6, b4, 10, Truncation::kLongestFirst), std::make_pair(4, 3));  // budget 7
  EXPECT_EQ(lengths(a6, b6, 10, Truncation::kLongestFirst), std::make_pair(3, 4));  // tie: b longer
  EXPECT_EQ(lengths("a", b6, 6, Truncation::kLongestFirst), std::make_pair(1, 2));
  EXPECT_EQ(lengths(a6, b4, 100, Truncation::kLongestFirst), std::make_pair(6, 4));
  EXPECT_EQ(lengths(a6, b4, 9, Truncation::kOnlyFirst), std::make_pair(2, 4));
  EXPECT_EQ(lengths(a6, b6, 12, Truncation::kOnlySecond), std::make_pair(6, 3));
  EXPECT_THROW(lengths(a6, b4, 9, Truncation::kOnlySecond), engine::Error);  // b would vanish
  EXPECT_EQ(lengths(a6, b4, 3, Truncation::kOnlyFirst), std::make_pair(0, 0));  // budget 0 empties both
  EXPECT_THROW(lengths("a", b6, 6, Truncation::kOnlyFirst), engine::Error);     // a too short
  EXPECT_THROW(lengths(a6, "cd", 6, Truncation::kOnlySecond), engine::Error);
  EXPECT_THROW(lengths(a6, b4, 2, Truncation::kLongestFirst), engine::Error);   // < 3 specials
  // Singles keep the first max_length - 2 pieces.
  const Encoding s = tok.encode("a a a a a a", std::nullopt, EncodeOptions{4, Truncation::kOnlyFirst});
  EXPECT_EQ(s.ids, (Ids{2, 24, 24, 3}));
  EXPECT_THROW(tok.encode("a", std::nullopt, EncodeOptions{4, Truncation::kOnlySecond}), engine::Error);
  EXPECT_EQ(parse_truncation("only_second"), Truncation::kOnlySecond);
  EXPECT_THROW(parse_truncation("shortest"), engine::Error);
}

TEST(TokenizerEncode, InvalidUtf8NeverCrashes) {
  const BertTokenizer tok(tiny_vocab(), true);
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 40, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? "a[]\xc3\xe2\x80\xf0"[rng() % 8] : rng());
    const Encoding e = tok.encode(s, std::string_view(s));
    for (size_t k = 0; k < e.size(); ++k) {
      ASSERT_LE(e.offsets[k].begin, e.offsets[k].end);
      ASSERT_LE(e.offsets[k].end, s.size());
      ASSERT_GE(e.ids[k], 0);
      ASSERT_LT(e.ids[k], tok.vocab().size());
    }
    (void)char_offsets(s, e.offsets);
  }
}

TEST(TokenizerEncode, BatchIsDeterministicAcrossThreadCounts) {
  const BertTokenizer tok(tiny_vocab(), true);
  std::vector<std::string> texts;
  for (int i = 0; i < 1000; ++i) texts.push_back("unwanted " + std::string(i % 13, 'a') + " hello, world" + std::to_string(i));
  std::vector<std::string_view> a(texts.begin(), texts.end());
  const EncodeOptions opt{12, Truncation::kLongestFirst};
  const auto one = tok.encode_batch(a, {}, opt, 1);
  const auto many = tok.encode_batch(a, a, opt, 4);
  const auto many_single = tok.encode_batch(a, {}, opt, 7);
  ASSERT_EQ(one.size(), 1000u);
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i].ids, tok.encode(texts[i], std::nullopt, opt).ids);
    EXPECT_EQ(many_single[i].ids, one[i].ids);
    EXPECT_EQ(many[i].ids, tok.encode(texts[i], std::string_view(texts[i]), opt).ids);
  }
  EXPECT_THROW(tok.encode_batch(a, {a[0]}, opt, 2), engine::Error);
}

// ---- model directory and the `engine tokenize` logic ----

TEST(TokenizerConfig, ReadsDoLowerCase) {
  const std::string dir = temp_dir("config");
  EXPECT_EQ(read_do_lower_case(dir), std::nullopt);
  write_file(dir + "/tokenizer_config.json", R"({"do_lower_case": false, "model_max_length": 512})");
  EXPECT_EQ(read_do_lower_case(dir), std::optional<bool>(false));
  write_file(dir + "/tokenizer_config.json", R"({"do_lower_case": true})");
  EXPECT_EQ(read_do_lower_case(dir), std::optional<bool>(true));
  write_file(dir + "/tokenizer_config.json", R"({"do_lower_case": tru)");
  EXPECT_THROW(read_do_lower_case(dir), engine::Error);
  write_file(dir + "/tokenizer_config.json", R"({"do_lower_case": "yes"})");
  EXPECT_THROW(read_do_lower_case(dir), engine::Error);
  write_file(dir + "/tokenizer_config.json", R"({"do_lower_case": true, "strip_accents": false})");
  EXPECT_THROW(read_do_lower_case(dir), engine::Error);
  write_file(dir + "/tokenizer_config.json", R"({"do_lower_case": false})");
  write_file(dir + "/vocab.txt", kVocab);
  const BertTokenizer tok = BertTokenizer::from_model_dir(dir);
  EXPECT_FALSE(tok.lowercase());
}

TEST(TokenizerStream, PlainFormatPairsAndJson) {
  const std::string dir = temp_dir("stream");
  write_file(dir + "/vocab.txt", kVocab);
  TokenizeStreamOptions opt;
  opt.vocab_path = dir + "/vocab.txt";
  {
    std::istringstream in("Hello, world!\nunwanted\n\n");
    std::ostringstream out;
    run_tokenize(in, out, opt);
    EXPECT_EQ(out.str(), "2 14 11 15 13 3\n2 5 6 7 3\n2 3\n");
  }
  {
    opt.pairs = true;
    opt.encode = EncodeOptions{5, Truncation::kLongestFirst};
    std::istringstream in("hello world\tun\tun\n");  // only the first tab separates
    std::ostringstream out;
    run_tokenize(in, out, opt);
    EXPECT_EQ(out.str(), "2 14 3 5 3\n");
    std::istringstream no_tab("hello\n");
    EXPECT_THROW(run_tokenize(no_tab, out, opt), engine::Error);
  }
  {
    opt.pairs = false;
    opt.encode = EncodeOptions{};
    opt.json = true;
    opt.lowercase = false;
    std::istringstream in("Caf\xc3\xa9!\n");
    std::ostringstream out;
    run_tokenize(in, out, opt);
    EXPECT_EQ(out.str(),
              R"({"ids":[2,1,13,3],"type_ids":[0,0,0,0],"tokens":["[CLS]","[UNK]","!","[SEP]"],)"
              R"("offsets":[[0,0],[0,4],[4,5],[0,0]]})" "\n");
  }
  opt.vocab_path = dir + "/missing.txt";
  std::istringstream in("x\n");
  std::ostringstream out;
  EXPECT_THROW(run_tokenize(in, out, opt), engine::Error);
}
