// Tests of the data side: the TSV / CSV / JSONL readers, label maps, the CoNLL reader and the
// batcher. Small files written by each test check every format rule and every error message
// (each must name the file and the line); the real GLUE / AG News / CoNLL-2003 files in
// ../shared/data check row counts and columns, and skip with a message when that folder is absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "engine/data/batcher.h"
#include "engine/data/conll.h"
#include "engine/data/dataset.h"
#include "engine/data/labels.h"
#include "engine/error.h"

namespace fs = std::filesystem;
using namespace engine;

namespace {

// A fresh file with these exact bytes, in a folder of this test binary's own.
std::string write_file(const std::string& name, const std::string& bytes) {
  const fs::path dir = fs::path(::testing::TempDir()) / "engine_test_data";
  fs::create_directories(dir);
  const fs::path path = dir / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  return path.string();
}

// Runs f, expects an engine::Error whose message contains every piece.
template <typename F>
void expect_error(F f, const std::vector<std::string>& pieces) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& piece : pieces) EXPECT_NE(msg.find(piece), std::string::npos) << "message: " << msg
                                                                                   << "\nmissing: " << piece;
    return;
  }
  ADD_FAILURE() << "no engine::Error thrown (expected one mentioning '" << (pieces.empty() ? "" : pieces[0]) << "')";
}

// The shared data folder: $ENGINE_DATA_DIR, else ../shared/data beside the source tree.
std::string data_dir() {
  if (const char* env = std::getenv("ENGINE_DATA_DIR")) return env;
  return (fs::path(ENGINE_SOURCE_DIR) / ".." / "shared" / "data").lexically_normal().string();
}

#define REQUIRE_DATA(relative)                                                                         \
  const std::string data_path = data_dir() + "/" + relative;                                           \
  if (!fs::exists(data_path)) GTEST_SKIP() << "real data not found: " << data_path << " (set ENGINE_DATA_DIR)"

}  // namespace

// =============================================================================================
// TSV

TEST(DatasetTsv, ReadsHeaderAndRowsWithLineNumbers) {
  const auto path = write_file("basic.tsv", "sentence\tlabel\nit is good \t1\nit is \"bad\"\t0\n");
  const LabelledDataset ds = read_dataset(path);
  EXPECT_EQ(ds.path, path);
  EXPECT_TRUE(ds.has_labels);
  ASSERT_EQ(ds.rows.size(), 2u);
  EXPECT_EQ(ds.rows[0].text_a, "it is good ");  // text kept as is: the tokenizer strips it
  EXPECT_EQ(ds.rows[0].label, "1");
  EXPECT_EQ(ds.rows[0].line, 2);
  EXPECT_FALSE(ds.rows[0].text_b.has_value());
  EXPECT_EQ(ds.rows[1].text_a, "it is \"bad\"");  // TSV has no quoting: quotes are text
  EXPECT_EQ(ds.rows[1].line, 3);
}

TEST(DatasetTsv, BomCrLfAndMrpcDefaults) {
  const auto path = write_file("mrpc_like.tsv",
                               "\xEF\xBB\xBFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
                               "1\t11\t12\tHe said so.\tSo he said.\r\n"
                               "0\t13\t14\tA cat.\tA dog.\r\n");
  const LabelledDataset ds = read_dataset(path);
  ASSERT_EQ(ds.rows.size(), 2u);
  EXPECT_EQ(ds.rows[0].text_a, "He said so.");
  ASSERT_TRUE(ds.rows[0].text_b.has_value());
  EXPECT_EQ(*ds.rows[0].text_b, "So he said.");  // no \r left at the end of the last column
  EXPECT_EQ(ds.rows[0].label, "1");             // the BOM is not part of the "Quality" name
  EXPECT_EQ(ds.rows[1].label, "0");
}

TEST(DatasetTsv, PairDefaultsAndExplicitColumns) {
  const auto path = write_file("stsb_like.tsv",
                               "index\tsentence1\tsentence2\tscore\n0\tA plane.\tAn air plane.\t5.000\n");
  LabelledDataset ds = read_dataset(path);
  EXPECT_EQ(ds.rows[0].text_a, "A plane.");
  EXPECT_EQ(*ds.rows[0].text_b, "An air plane.");
  EXPECT_EQ(ds.rows[0].label, "5.000");

  DatasetOptions single;
  single.text_pair_column = "none";
  ds = read_dataset(path, single);
  EXPECT_FALSE(ds.rows[0].text_b.has_value());

  DatasetOptions by_name;  // columns by name, swapped on purpose
  by_name.text_column = "sentence2";
  by_name.text_pair_column = "sentence1";
  by_name.label_column = "index";
  ds = read_dataset(path, by_name);
  EXPECT_EQ(ds.rows[0].text_a, "An air plane.");
  EXPECT_EQ(*ds.rows[0].text_b, "A plane.");
  EXPECT_EQ(ds.rows[0].label, "0");
}

TEST(DatasetTsv, HeaderlessByPosition) {
  const auto path = write_file("agnews_like.tsv", "Stocks fell.\tBusiness\nA goal.\tSports\n\n");
  DatasetOptions opt;
  opt.header = false;
  LabelledDataset ds = read_dataset(path, opt);  // defaults: text 0, label = last column
  ASSERT_EQ(ds.rows.size(), 2u);                 // the blank last line is skipped
  EXPECT_EQ(ds.rows[0].text_a, "Stocks fell.");
  EXPECT_EQ(ds.rows[1].label, "Sports");
  EXPECT_EQ(ds.rows[0].line, 1);

  opt.text_column = "1";
  opt.label_column = "0";
  ds = read_dataset(path, opt);
  EXPECT_EQ(ds.rows[0].text_a, "Business");
  EXPECT_EQ(ds.rows[0].label, "Stocks fell.");

  opt.text_column = "5";
  expect_error([&] { read_dataset(path, opt); }, {path + ":1:", "no column '5'", "rows have 2 columns"});
}

TEST(DatasetTsv, WrongFieldCountNamesFileAndLine) {
  const auto path = write_file("fields.tsv", "sentence\tlabel\ngood\t1\nbad\t0\textra\n");
  expect_error([&] { read_dataset(path); }, {path + ":3:", "3 fields, expected 2", "header on line 1"});
}

TEST(DatasetTsv, MissingColumnListsTheColumns) {
  const auto path = write_file("cols.tsv", "words\ttarget\ngood\t1\n");
  expect_error([&] { read_dataset(path); }, {path + ":1:", "no text column", "columns: words, target"});
  DatasetOptions opt;
  opt.text_column = "words";
  expect_error([&] { read_dataset(path, opt); }, {path + ":1:", "no label column", "columns: words, target"});
  opt.label_column = "gold";
  expect_error([&] { read_dataset(path, opt); }, {path + ":1:", "no column 'gold'", "columns: words, target"});
  opt.label_column = "target";
  EXPECT_EQ(read_dataset(path, opt).rows[0].label, "1");
}

TEST(DatasetTsv, EmptyTextAndEmptyLabel) {
  const auto empty_text = write_file("empty_text.tsv", "sentence\tlabel\ngood\t1\n  \t0\n");
  expect_error([&] { read_dataset(empty_text); }, {empty_text + ":3:", "empty text", "'sentence'"});
  const auto empty_label = write_file("empty_label.tsv", "sentence\tlabel\ngood\t1\nbad\t \n");
  expect_error([&] { read_dataset(empty_label); }, {empty_label + ":3:", "empty label", "'label'"});
}

TEST(DatasetTsv, InvalidUtf8NamesLineAndByte) {
  // Each bad sequence sits at byte 4 of line 3 ("abc " comes first).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xC0\x80", "overlong"},           // NUL in two bytes
      {"\xE0\x80\xAF", "overlong"},       // '/' in three bytes
      {"\xED\xA0\x80", "surrogate"},      // U+D800
      {"\xF4\x90\x80\x80", "U+10FFFF"},   // U+110000
      {"\xF5\x80\x80\x80", "never starts"},
      {"\x80", "continuation"},
      {"\xE2\x82", "truncated"},          // the first two bytes of the euro sign, then a tab
  };
  for (const auto& [bytes, why] : cases) {
    const auto path = write_file("utf8.tsv", "sentence\tlabel\nfine \xE2\x82\xAC\t1\nabc " + bytes + "\t0\n");
    expect_error([&] { read_dataset(path); }, {path + ":3:", "invalid UTF-8", why, "byte 4 of the line"});
  }
}

TEST(DatasetTsv, EmptyFileAndHeaderOnly) {
  const auto empty = write_file("empty.tsv", "");
  expect_error([&] { read_dataset(empty); }, {empty + ":", "empty file"});
  const auto blank = write_file("blank.tsv", "\n\r\n\n");
  expect_error([&] { read_dataset(blank); }, {blank + ":", "empty file"});
  const auto header_only = write_file("header_only.tsv", "sentence\tlabel\n");
  expect_error([&] { read_dataset(header_only); }, {header_only + ":", "no data rows"});
  const std::string missing = (fs::path(::testing::TempDir()) / "engine_test_data" / "missing.tsv").string();
  expect_error([&] { read_dataset(missing); }, {missing + ": cannot open"});
}

TEST(DatasetTsv, LabelsOptionalOnlyWhenAllowed) {
  const auto path = write_file("test_split.tsv", "index\tsentence\n0\tgood\n1\tbad\n");
  expect_error([&] { read_dataset(path); }, {path + ":1:", "no label column", "columns: index, sentence"});
  DatasetOptions opt;
  opt.labels_optional = true;
  const LabelledDataset ds = read_dataset(path, opt);
  EXPECT_FALSE(ds.has_labels);
  ASSERT_EQ(ds.rows.size(), 2u);
  EXPECT_EQ(ds.rows[1].text_a, "bad");
  EXPECT_EQ(ds.rows[1].label, "");
}

// =============================================================================================
// CSV

TEST(DatasetCsv, QuotingEdgeCases) {
  const auto path = write_file("edge.csv",
                               "text,label\r\n"
                               "\"a, b and c\",pos\r\n"                // comma inside quotes
                               "\"she said \"\"hi\"\"\",neg\r\n"      // doubled quotes
                               "\"two\nlines\",pos\n"                 // newline inside quotes
                               "plain \"quote\" inside,neg\n"         // a bare quote mid-field is text
                               "\"\"\"\",pos\n"                       // a field that is one quote
                               "last,\"neg\"");                        // no final newline
  const LabelledDataset ds = read_dataset(path);
  ASSERT_EQ(ds.rows.size(), 6u);
  EXPECT_EQ(ds.rows[0].text_a, "a, b and c");
  EXPECT_EQ(ds.rows[1].text_a, "she said \"hi\"");
  EXPECT_EQ(ds.rows[2].text_a, "two\nlines");
  EXPECT_EQ(ds.rows[3].text_a, "plain \"quote\" inside");
  EXPECT_EQ(ds.rows[4].text_a, "\"");
  EXPECT_EQ(ds.rows[5].text_a, "last");
  EXPECT_EQ(ds.rows[5].label, "neg");
  // Line numbers count the newline inside the quoted field: rows start on lines 2, 3, 4, 6, 7, 8.
  const std::vector<int64_t> lines = {2, 3, 4, 6, 7, 8};
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(ds.rows[i].line, lines[i]) << "row " << i;
}

TEST(DatasetCsv, QuotedHeaderBlankLinesAndEmptyFields) {
  const auto path = write_file("header.csv", "\"sentence1\",\"sentence2\",\"label\"\n\nA,B,1\n\n");
  const LabelledDataset ds = read_dataset(path);
  ASSERT_EQ(ds.rows.size(), 1u);
  EXPECT_EQ(*ds.rows[0].text_b, "B");
  EXPECT_EQ(ds.rows[0].line, 3);
  const auto empty_quoted = write_file("empty_quoted.csv", "text,label\n\"\",1\n");
  expect_error([&] { read_dataset(empty_quoted); }, {empty_quoted + ":2:", "empty text"});
  const auto short_row = write_file("short.csv", "text,label\nonly text\n");
  expect_error([&] { read_dataset(short_row); }, {short_row + ":2:", "1 field, expected 2"});
}

TEST(DatasetCsv, UnterminatedQuoteNamesTheOpeningLine) {
  const auto path = write_file("open.csv", "text,label\ngood,1\n\"never closed,0\nmore,1\n");
  expect_error([&] { read_dataset(path); }, {path + ":3:", "unterminated quoted field"});
}

TEST(DatasetCsv, TextAfterClosingQuote) {
  const auto path = write_file("after.csv", "text,label\n\"quoted\"x,1\n");
  expect_error([&] { read_dataset(path); }, {path + ":2:", "after a closing quote"});
}

// =============================================================================================
// JSONL and format detection

TEST(DatasetJsonl, ObjectsNumbersAndPairs) {
  const auto path = write_file("pairs.jsonl",
                               "{\"sentence1\": \"A.\", \"sentence2\": \"B.\", \"label\": 1}\r\n"
                               "\n"
                               "{\"sentence1\": \"C \\u00e9\", \"sentence2\": \"D.\", \"label\": \"0\", \"extra\": null}\n");
  const LabelledDataset ds = read_dataset(path);
  ASSERT_EQ(ds.rows.size(), 2u);
  EXPECT_EQ(ds.rows[0].label, "1");  // a JSON number becomes its text
  EXPECT_EQ(*ds.rows[0].text_b, "B.");
  EXPECT_EQ(ds.rows[1].text_a, "C \xC3\xA9");
  EXPECT_EQ(ds.rows[1].line, 3);

  const auto scores = write_file("scores.json", "{\"text\": \"x\", \"score\": 2.5}\n");
  EXPECT_EQ(read_dataset(scores).rows[0].label, "2.5");  // .json reads as JSON Lines
}

TEST(DatasetJsonl, Errors) {
  const auto not_object = write_file("not_object.jsonl", "{\"text\": \"a\", \"label\": 1}\n[1, 2]\n");
  expect_error([&] { read_dataset(not_object); }, {not_object + ":2:", "expected a JSON object", "array"});
  const auto missing = write_file("missing.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\"}\n");
  expect_error([&] { read_dataset(missing); }, {missing + ":2:", "no field 'label'", "fields: text"});
  const auto bad_json = write_file("bad.jsonl", "{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\",\n");
  expect_error([&] { read_dataset(bad_json); }, {bad_json + ":2:", "not valid JSON"});
  const auto wrong_type = write_file("wrong_type.jsonl", "{\"text\": 5, \"label\": 1}\n");
  expect_error([&] { read_dataset(wrong_type); }, {wrong_type + ":1:", "field 'text' is a number"});
  const auto array_file = write_file("array.json", "[{\"text\": \"a\", \"label\": 1}]\n");
  expect_error([&] { read_dataset(array_file); }, {array_file + ":1:", "not JSON Lines"});
  const auto no_column = write_file("no_column.jsonl", "{\"body\": \"a\", \"label\": 1}\n");
  expect_error([&] { read_dataset(no_column); }, {no_column + ":1:", "no text column", "columns: body, label"});
}

TEST(DatasetFormat, DetectionAndOverride) {
  EXPECT_EQ(format_from_extension("a/b.TSV"), FileFormat::tsv);
  EXPECT_EQ(format_from_extension("b.csv"), FileFormat::csv);
  EXPECT_EQ(format_from_extension("b.jsonl"), FileFormat::jsonl);
  EXPECT_EQ(format_from_extension("b.json"), FileFormat::jsonl);
  expect_error([] { format_from_extension("data.parquet"); }, {"data.parquet", "cannot tell the format"});
  expect_error([] { parse_file_format("xml"); }, {"unknown data format 'xml'"});

  const auto path = write_file("comma_data.dat", "text,label\n\"a, b\",1\n");
  expect_error([&] { read_dataset(path); }, {"comma_data.dat", "cannot tell the format"});
  DatasetOptions opt;
  opt.format = parse_file_format("csv");
  EXPECT_EQ(read_dataset(path, opt).rows[0].text_a, "a, b");
}

// =============================================================================================
// Label maps

TEST(Labels, IntegerLabelsKeepTheirValue) {
  const LabelMap m = LabelMap::from_labels({"1", "0", "1", "2"});
  EXPECT_TRUE(m.numeric());
  ASSERT_EQ(m.size(), 3);
  EXPECT_EQ(m.to_id("0", "f", 1), 0);
  EXPECT_EQ(m.to_id("2", "f", 1), 2);
  EXPECT_EQ(m.to_id("02", "f", 1), 2);  // the same integer, spelled otherwise
  EXPECT_EQ(m.name(1), "1");
}

TEST(Labels, IntegersSortAsNumbersStringsAsBytes) {
  const LabelMap stars = LabelMap::from_labels({"5", "10", "1", "3"});  // numbers: 1, 3, 5, 10
  EXPECT_EQ(stars.names(), (std::vector<std::string>{"1", "3", "5", "10"}));
  EXPECT_EQ(stars.to_id("10", "f", 1), 3);
  const LabelMap news = LabelMap::from_labels({"World", "Sports", "Sci/Tech", "Business", "World"});
  EXPECT_FALSE(news.numeric());
  EXPECT_EQ(news.names(), (std::vector<std::string>{"Business", "Sci/Tech", "Sports", "World"}));
  const LabelMap mixed = LabelMap::from_labels({"1", "b", "10", "2"});  // not all integers: as strings
  EXPECT_EQ(mixed.names(), (std::vector<std::string>{"1", "10", "2", "b"}));
}

TEST(Labels, UnknownLabelNamesFileLineAndKnownLabels) {
  const LabelMap m = LabelMap::from_labels({"neg", "pos"});
  expect_error([&] { m.to_id("neutral", "dev.tsv", 7); }, {"dev.tsv:7:", "unknown label 'neutral'", "known: neg, pos"});
  EXPECT_EQ(m.find("neutral"), -1);
  expect_error([&] { m.name(2); }, {"label id 2"});
}

TEST(Labels, HfConfigRoundTrip) {
  const LabelMap m = LabelMap::from_labels({"World", "Sports", "Sci/Tech", "Business"});
  nlohmann::json config = {{"model_type", "bert"}};
  m.to_hf_config(config);
  EXPECT_EQ(config["id2label"]["0"], "Business");
  EXPECT_EQ(config["id2label"]["3"], "World");
  EXPECT_EQ(config["label2id"]["Sports"], 2);
  EXPECT_EQ(config["model_type"], "bert");
  // Through text, as it goes through config.json.
  const LabelMap back = LabelMap::from_hf_config(nlohmann::json::parse(config.dump()), "config.json");
  EXPECT_EQ(back.names(), m.names());
  // HF's default names load as they are.
  const auto hf = nlohmann::json::parse(R"({"id2label": {"1": "LABEL_1", "0": "LABEL_0"}})");
  EXPECT_EQ(LabelMap::from_hf_config(hf, "c.json").names(), (std::vector<std::string>{"LABEL_0", "LABEL_1"}));
}

TEST(Labels, HfConfigErrors) {
  expect_error([] { LabelMap::from_hf_config(nlohmann::json::object(), "m/config.json"); },
               {"m/config.json", "no id2label"});
  expect_error([] { LabelMap::from_hf_config(nlohmann::json::parse(R"({"id2label": {"0": "a", "2": "b"}})"), "c.json"); },
               {"c.json", "key '2'"});
  expect_error([] { LabelMap::from_hf_config(nlohmann::json::parse(R"({"id2label": {"0": "a", "1": "a"}})"), "c.json"); },
               {"c.json", "'a' appears twice"});
  expect_error([] { LabelMap::from_hf_config(nlohmann::json::parse(R"({"id2label": {"0": 3}})"), "c.json"); },
               {"c.json", "not a string"});
}

TEST(Labels, FromDatasetNeedsLabels) {
  LabelledDataset ds;
  ds.path = "test.tsv";
  ds.has_labels = false;
  expect_error([&] { LabelMap::from_dataset(ds); }, {"test.tsv", "no label column"});
}

TEST(Labels, RegressionLabels) {
  EXPECT_FLOAT_EQ(parse_regression_label("5.000", "f", 1), 5.0f);
  EXPECT_FLOAT_EQ(parse_regression_label(" 3.8 ", "f", 1), 3.8f);
  EXPECT_FLOAT_EQ(parse_regression_label("-1e-1", "f", 1), -0.1f);
  EXPECT_FLOAT_EQ(parse_regression_label("+2", "f", 1), 2.0f);
  expect_error([] { parse_regression_label("high", "train.tsv", 12); }, {"train.tsv:12:", "'high' is not a number"});
  expect_error([] { parse_regression_label("3.5x", "train.tsv", 4); }, {"train.tsv:4:", "not a number"});
  expect_error([] { parse_regression_label("", "train.tsv", 4); }, {"train.tsv:4:", "not a number"});
  expect_error([] { parse_regression_label("nan", "train.tsv", 5); }, {"train.tsv:5:", "not a finite number"});
}

// =============================================================================================
// CoNLL

TEST(Conll, SentencesDocstartAndTagColumn) {
  const auto path = write_file("small.conll",
                               "-DOCSTART- -X- -X- O\n"
                               "\n"
                               "EU NNP B-NP B-ORG\n"
                               "rejects VBZ B-VP O\r\n"
                               "\n"
                               "\n"
                               "Peter\tNNP\tB-NP\tB-PER\n"
                               "Blackburn NNP I-NP I-PER\n"
                               "-DOCSTART- -X- -X- O\n"
                               "Bonn NNP B-NP I-LOC");  // no blank line before the document mark, no final newline
  ConllDataset ds = read_conll(path);
  EXPECT_TRUE(ds.has_tags);
  ASSERT_EQ(ds.sentences.size(), 3u);
  EXPECT_EQ(ds.sentences[0].words, (std::vector<std::string>{"EU", "rejects"}));
  EXPECT_EQ(ds.sentences[0].tags, (std::vector<std::string>{"B-ORG", "O"}));  // no \r on the last column
  EXPECT_EQ(ds.sentences[0].lines, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(ds.sentences[1].tags, (std::vector<std::string>{"B-PER", "I-PER"}));
  EXPECT_EQ(ds.sentences[2].words, (std::vector<std::string>{"Bonn"}));
  EXPECT_EQ(ds.sentences[2].lines, (std::vector<int64_t>{10}));

  ConllOptions pos;
  pos.tag_column = 1;
  ds = read_conll(path, pos);
  EXPECT_EQ(ds.sentences[0].tags, (std::vector<std::string>{"NNP", "VBZ"}));
  pos.tag_column = -2;  // the chunk column, counted from the end
  EXPECT_EQ(read_conll(path, pos).sentences[1].tags, (std::vector<std::string>{"B-NP", "I-NP"}));

  const LabelMap tags = tag_map(read_conll(path));
  EXPECT_EQ(tags.names(), (std::vector<std::string>{"B-ORG", "B-PER", "I-LOC", "I-PER", "O"}));
}

TEST(Conll, Errors) {
  const auto ragged = write_file("ragged.conll", "EU NNP B-NP B-ORG\nrejects VBZ O\n");
  expect_error([&] { read_conll(ragged); }, {ragged + ":2:", "3 columns, expected 4", "as on line 1"});
  ConllOptions opt;
  opt.tag_column = 4;
  const auto ok = write_file("ok.conll", "EU NNP B-NP B-ORG\n");
  expect_error([&] { read_conll(ok, opt); }, {ok + ":1:", "tag column 4"});
  opt.tag_column = 0;
  expect_error([&] { read_conll(ok, opt); }, {ok + ":1:", "tag column 0", "column 0 is the word"});
  const auto empty = write_file("empty.conll", "-DOCSTART- -X- -X- O\n\n");
  expect_error([&] { read_conll(empty); }, {empty + ":", "empty file"});
  const auto bad = write_file("bad.conll", "EU NNP B-NP B-ORG\n\nBr\xFCssel NNP B-NP B-LOC\n");
  expect_error([&] { read_conll(bad); }, {bad + ":3:", "invalid UTF-8", "byte 2 of the line"});
  const auto words = write_file("words.conll", "EU\nrejects\n\nPeter\n");
  expect_error([&] { read_conll(words); }, {words + ":1:", "no tag column"});
  ConllOptions optional;
  optional.tags_optional = true;
  const ConllDataset untagged = read_conll(words, optional);
  EXPECT_FALSE(untagged.has_tags);
  ASSERT_EQ(untagged.sentences.size(), 2u);
  EXPECT_TRUE(untagged.sentences[0].tags.empty());
  expect_error([&] { tag_map(untagged); }, {words, "no tag column"});
}

// =============================================================================================
// Real data (skips when ../shared/data is absent)

TEST(RealData, Sst2) {
  REQUIRE_DATA("sst2/train.tsv");
  const LabelledDataset train = read_dataset(data_path);
  EXPECT_EQ(train.rows.size(), 67349u);
  EXPECT_EQ(train.rows[0].text_a, "hide new secretions from the parental units ");
  EXPECT_EQ(train.rows[0].line, 2);
  const LabelMap labels = LabelMap::from_dataset(train);
  EXPECT_EQ(labels.names(), (std::vector<std::string>{"0", "1"}));
  int64_t positive = 0;
  for (const auto& row : train.rows) positive += labels.to_id(row.label, train.path, row.line);
  EXPECT_EQ(positive, 37569);  // SOURCE.md: 29,780 negative, 37,569 positive
  EXPECT_EQ(read_dataset(data_dir() + "/sst2/dev.tsv").rows.size(), 872u);
}

TEST(RealData, MrpcBomAndColumns) {
  REQUIRE_DATA("mrpc/train.tsv");
  const LabelledDataset train = read_dataset(data_path);
  ASSERT_EQ(train.rows.size(), 3668u);
  EXPECT_EQ(train.rows[0].label, "1");
  EXPECT_EQ(train.rows[0].text_a.substr(0, 20), "Amrozi accused his b");
  ASSERT_TRUE(train.rows[0].text_b.has_value());
  EXPECT_EQ(train.rows[0].text_b->substr(0, 25), "Referring to him as only ");
  int64_t positive = 0;
  for (const auto& row : train.rows) positive += row.label == "1";
  EXPECT_EQ(positive, 2474);
  EXPECT_EQ(read_dataset(data_dir() + "/mrpc/dev.tsv").rows.size(), 408u);
  DatasetOptions predict;
  predict.labels_optional = true;
  const LabelledDataset test = read_dataset(data_dir() + "/mrpc/test.tsv", predict);
  EXPECT_FALSE(test.has_labels);
  EXPECT_EQ(test.rows.size(), 1725u);
  EXPECT_TRUE(test.rows[0].text_b.has_value());
}

TEST(RealData, StsbScores) {
  REQUIRE_DATA("stsb/train.tsv");
  const LabelledDataset train = read_dataset(data_path);
  ASSERT_EQ(train.rows.size(), 5749u);
  EXPECT_EQ(train.rows[0].text_a, "A plane is taking off.");
  EXPECT_EQ(*train.rows[0].text_b, "An air plane is taking off.");
  EXPECT_FLOAT_EQ(parse_regression_label(train.rows[0].label, train.path, train.rows[0].line), 5.0f);
  EXPECT_FLOAT_EQ(parse_regression_label(train.rows[1].label, train.path, train.rows[1].line), 3.8f);
  for (const auto& row : train.rows) {
    const float score = parse_regression_label(row.label, train.path, row.line);
    ASSERT_TRUE(score >= 0.0f && score <= 5.0f) << "line " << row.line;
  }
  EXPECT_EQ(read_dataset(data_dir() + "/stsb/dev.tsv").rows.size(), 1500u);
  DatasetOptions predict;
  predict.labels_optional = true;
  const LabelledDataset test = read_dataset(data_dir() + "/stsb/test.tsv", predict);
  EXPECT_FALSE(test.has_labels);
  EXPECT_EQ(test.rows.size(), 1379u);
}

TEST(RealData, AgNewsStringClasses) {
  REQUIRE_DATA("agnews/train_10k.tsv");
  DatasetOptions opt;
  opt.header = false;
  const LabelledDataset train = read_dataset(data_path, opt);
  ASSERT_EQ(train.rows.size(), 10001u);
  const LabelMap labels = LabelMap::from_dataset(train);
  EXPECT_EQ(labels.names(), (std::vector<std::string>{"Business", "Sci/Tech", "Sports", "World"}));
  std::vector<int64_t> counts(4, 0);
  for (const auto& row : train.rows) ++counts[labels.to_id(row.label, train.path, row.line)];
  EXPECT_EQ(counts, (std::vector<int64_t>{2496, 2538, 2458, 2509}));  // SOURCE.md's class counts
}

TEST(RealData, Conll2003) {
  REQUIRE_DATA("conll2003/train.txt");
  const ConllDataset train = read_conll(data_path);
  EXPECT_EQ(train.sentences.size(), 14041u);
  EXPECT_EQ(train.sentences[0].words, (std::vector<std::string>{"EU", "rejects", "German", "call", "to", "boycott",
                                                               "British", "lamb", "."}));
  EXPECT_EQ(train.sentences[0].tags[0], "B-ORG");
  EXPECT_EQ(train.sentences[0].lines[0], 3);
  const LabelMap tags = tag_map(train);
  EXPECT_EQ(tags.names(), (std::vector<std::string>{"B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG",
                                                    "I-PER", "O"}));
  EXPECT_EQ(read_conll(data_dir() + "/conll2003/valid.txt").sentences.size(), 3250u);
  EXPECT_EQ(read_conll(data_dir() + "/conll2003/test.txt").sentences.size(), 3453u);
}

// =============================================================================================
// Batcher

namespace {

// n examples with lengths drawn from [min_len, max_len]; ids encode (example, position) so a
// packed batch can be checked token by token.
std::vector<TokenizedExample> make_examples(int64_t n, int min_len, int max_len, uint64_t seed,
                                            bool token_labels = false) {
  std::mt19937_64 rng(seed);
  std::vector<TokenizedExample> v(n);
  for (int64_t i = 0; i < n; ++i) {
    const int len = min_len + int(uniform_below(rng, uint64_t(max_len - min_len + 1)));
    for (int t = 0; t < len; ++t) {
      v[i].ids.push_back(int32_t(i * 1000 + t));
      v[i].type_ids.push_back(t >= len / 2 ? 1 : 0);
      if (token_labels) v[i].token_labels.push_back(t == 0 ? -100 : int32_t(t % 3));
    }
    v[i].label = int32_t(i % 3);
    v[i].target = 0.5f * float(i);
    v[i].index = 100 + i;  // differs from the position, so the two cannot be confused
  }
  return v;
}

std::vector<std::vector<int64_t>> all_plans(const Batcher& b, int64_t epochs) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t e = 0; e < epochs; ++e)
    for (auto& batch : b.epoch_plan(e)) out.push_back(batch);
  return out;
}

// The padded tokens a framework that pads each batch to its longest sequence would compute.
double padding_ratio(const Batcher& b, int64_t epoch) {
  int64_t real = 0, padded = 0;
  for (int64_t i = 0; i < b.num_batches(epoch); ++i) {
    const PackedBatch pb = b.batch(epoch, i);
    real += pb.tokens;
    padded += pb.sequences * pb.max_seqlen;
  }
  return 1.0 - double(real) / double(padded);
}

}  // namespace

TEST(Batcher, PackedLayout) {
  const auto ex = make_examples(5, 1, 9, 3, /*token_labels=*/true);
  const PackedBatch b = pack_batch(ex, {3, 0, 4});
  const int32_t l3 = int32_t(ex[3].ids.size()), l0 = int32_t(ex[0].ids.size()), l4 = int32_t(ex[4].ids.size());
  EXPECT_EQ(b.sequences, 3);
  EXPECT_EQ(b.tokens, l3 + l0 + l4);
  EXPECT_EQ(b.max_seqlen, std::max({l3, l0, l4}));
  EXPECT_EQ(b.cu_seqlens, (std::vector<int32_t>{0, l3, l3 + l0, l3 + l0 + l4}));
  EXPECT_EQ(b.cls_rows, (std::vector<int32_t>{0, l3, l3 + l0}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{0, 0, 1}));      // i % 3 for i = 3, 0, 4
  EXPECT_EQ(b.targets, (std::vector<float>{1.5f, 0.0f, 2.0f}));  // 0.5 i
  EXPECT_EQ(b.example_index, (std::vector<int64_t>{103, 100, 104}));
  ASSERT_EQ(b.ids.size(), size_t(b.tokens));
  ASSERT_EQ(b.pos_ids.size(), size_t(b.tokens));
  ASSERT_EQ(b.token_labels.size(), size_t(b.tokens));
  const std::vector<int64_t> order = {3, 0, 4};
  for (int s = 0; s < 3; ++s) {
    const TokenizedExample& e = ex[order[s]];
    for (int32_t t = 0; t < int32_t(e.ids.size()); ++t) {
      const int32_t row = b.cu_seqlens[s] + t;
      EXPECT_EQ(b.pos_ids[row], t) << "positions restart at 0 in every sequence";
      EXPECT_EQ(b.ids[row], e.ids[t]);
      EXPECT_EQ(b.type_ids[row], e.type_ids[t]);
      EXPECT_EQ(b.token_labels[row], e.token_labels[t]);
    }
  }
  EXPECT_TRUE(pack_batch(make_examples(2, 3, 3, 1), {0, 1}).token_labels.empty());
}

TEST(Batcher, EveryExampleOncePerEpochWithinLimits) {
  struct Case {
    int64_t batch_size, max_tokens;
    bool group;
  };
  const auto ex = make_examples(1003, 2, 120, 7);
  for (const Case c : {Case{32, 0, false}, Case{32, 1024, false}, Case{16, 700, true}, Case{7, 0, true},
                       Case{1, 0, false}, Case{2000, 0, false}, Case{1000, 130, false}}) {
    BatcherOptions opt;
    opt.batch_size = c.batch_size;
    opt.max_tokens = c.max_tokens;
    opt.group_by_length = c.group;
    opt.seed = 11;
    const Batcher b(ex, opt);
    for (int64_t e = 0; e < 3; ++e) {
      std::vector<int> seen(ex.size(), 0);
      const auto plan = b.epoch_plan(e);
      EXPECT_EQ(int64_t(plan.size()), b.num_batches(e));
      for (size_t i = 0; i < plan.size(); ++i) {
        const PackedBatch pb = b.batch(e, int64_t(i));
        ASSERT_GE(pb.sequences, 1);
        ASSERT_LE(pb.sequences, c.batch_size);
        if (c.max_tokens) {
          ASSERT_LE(pb.tokens, c.max_tokens);
        }
        for (int64_t p : plan[i]) ++seen[p];
      }
      for (size_t i = 0; i < seen.size(); ++i) ASSERT_EQ(seen[i], 1) << "example " << i << " in epoch " << e;
    }
    if (c.max_tokens == 0) {
      EXPECT_EQ(b.num_batches(0), (1003 + c.batch_size - 1) / c.batch_size);
    }
  }
}

TEST(Batcher, DeterministicPerSeedAndDifferentPerEpoch) {
  const auto ex = make_examples(300, 2, 60, 5);
  BatcherOptions opt;
  opt.batch_size = 8;
  opt.seed = 1234;
  const Batcher a(ex, opt), b(ex, opt);
  EXPECT_EQ(all_plans(a, 3), all_plans(b, 3));
  EXPECT_NE(a.epoch_plan(0), a.epoch_plan(1));
  opt.seed = 1235;
  const Batcher c(ex, opt);
  EXPECT_NE(a.epoch_plan(0), c.epoch_plan(0));
  // seed + epoch: epoch 1 of seed 1234 is epoch 0 of seed 1235 (documented, and what makes a plan
  // a pure function of the pair).
  EXPECT_EQ(a.epoch_plan(1), c.epoch_plan(0));
}

TEST(Batcher, ShufflePinnedAcrossPlatforms) {
  // std::mt19937_64's output is fixed by the C++ standard, and the shuffle uses nothing else, so
  // this permutation is the same on every compiler and library. tools/reference_shuffle.py (its own
  // MT19937-64 in Python) gives the same numbers; a change here means resumed runs see other batches.
  std::mt19937_64 standard;  // default seed 5489: the standard fixes its 10000th output
  for (int i = 0; i < 9999; ++i) standard();
  EXPECT_EQ(standard(), 9981545732273789042ull);

  std::mt19937_64 rng(42);
  std::vector<int64_t> v(10);
  for (int64_t i = 0; i < 10; ++i) v[i] = i;
  shuffle_positions(v, rng);
  EXPECT_EQ(v, (std::vector<int64_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6}));
}

TEST(Batcher, UniformBelowIsUniform) {
  std::mt19937_64 rng(9);
  std::vector<int64_t> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[uniform_below(rng, 6)];
  for (int64_t c : counts) EXPECT_NEAR(double(c), 10000.0, 500.0);  // ~5 standard deviations
  for (uint64_t n : {uint64_t(1), uint64_t(3), (uint64_t(1) << 63) + 1, ~uint64_t(0)})
    for (int i = 0; i < 100; ++i) ASSERT_LT(uniform_below(rng, n), n);
}

TEST(Batcher, EvaluationKeepsInputOrder) {
  const auto ex = make_examples(25, 1, 30, 2);
  BatcherOptions opt;
  opt.batch_size = 4;
  opt.max_tokens = 50;
  opt.shuffle = false;
  opt.group_by_length = true;  // ignored without shuffling
  const Batcher b(ex, opt);
  std::vector<int64_t> order;
  for (int64_t e : {0, 1})
    for (const auto& batch : b.epoch_plan(e))
      if (e == 0) order.insert(order.end(), batch.begin(), batch.end());
  std::vector<int64_t> expected(25);
  for (int64_t i = 0; i < 25; ++i) expected[i] = i;
  EXPECT_EQ(order, expected);
  EXPECT_EQ(b.epoch_plan(0), b.epoch_plan(1));
}

TEST(Batcher, ResumeMidEpochGivesTheSameRemainingBatches) {
  const auto ex = make_examples(97, 2, 40, 8);
  BatcherOptions opt;
  opt.batch_size = 8;
  opt.max_tokens = 150;  // batch counts differ per epoch: the cursor must cope
  opt.group_by_length = true;
  opt.seed = 77;
  Batcher original(ex, opt);
  const int64_t total = original.num_batches(0) + original.num_batches(1) + original.num_batches(2);
  for (int64_t stop : {int64_t(0), int64_t(5), original.num_batches(0) - 1, original.num_batches(0) + 3}) {
    Batcher run(ex, opt);
    for (int64_t i = 0; i < stop; ++i) run.next();
    const BatcherState saved = run.state();
    std::vector<PackedBatch> expected;
    for (int64_t i = stop; i < total; ++i) expected.push_back(run.next());

    Batcher resumed(ex, opt);  // a new process: nothing but the saved state
    resumed.restore(saved);
    for (size_t i = 0; i < expected.size(); ++i) {
      const PackedBatch got = resumed.next();
      ASSERT_EQ(got.ids, expected[i].ids) << "stop " << stop << ", batch " << i;
      ASSERT_EQ(got.cu_seqlens, expected[i].cu_seqlens);
      ASSERT_EQ(got.example_index, expected[i].example_index);
    }
  }
  // The cursor moves to the next epoch after the last batch.
  Batcher run(ex, opt);
  for (int64_t i = 0; i < run.num_batches(0); ++i) run.next();
  EXPECT_EQ(run.state().epoch, 1);
  EXPECT_EQ(run.state().batch, 0);
}

TEST(Batcher, RestoreRefusesAnotherRun) {
  const auto ex = make_examples(20, 2, 10, 1);
  BatcherOptions opt;
  opt.batch_size = 4;
  opt.seed = 5;
  Batcher b(ex, opt);
  BatcherState s = b.state();
  s.seed = 6;
  expect_error([&] { b.restore(s); }, {"seed 6", "seed 5"});
  s = b.state();
  s.examples = 21;
  expect_error([&] { b.restore(s); }, {"21 examples", "same data"});
  s = b.state();
  s.batch = 5;  // 20 examples / 4 = batches 0..4
  expect_error([&] { b.restore(s); }, {"batch 5", "past the end"});
}

TEST(Batcher, LengthGroupingReducesPadding) {
  const auto ex = make_examples(4000, 5, 128, 21);
  BatcherOptions opt;
  opt.batch_size = 32;
  opt.seed = 3;
  const double plain = padding_ratio(Batcher(ex, opt), 0);
  opt.group_by_length = true;
  const Batcher grouped(ex, opt);
  const double with_groups = padding_ratio(grouped, 0);
  // Uniform lengths 5..128 in batches of 32: the longest is near 128 and the mean near 66, so about
  // half the padded tokens are padding; sorted mega-batches of 1600 leave only a few percent.
  EXPECT_GT(plain, 0.4);
  EXPECT_LT(with_groups, 0.1);
  // The batches of a mega-batch are shuffled: the first batches are not sorted longest first.
  std::vector<int64_t> longest;
  for (int64_t i = 0; i < 10; ++i) longest.push_back(grouped.batch(0, i).max_seqlen);
  EXPECT_FALSE(std::is_sorted(longest.rbegin(), longest.rend()));
}

TEST(Batcher, Errors) {
  BatcherOptions opt;
  opt.max_tokens = 10;
  expect_error([&] { Batcher(make_examples(3, 11, 11, 1), opt); }, {"example 100", "11 tokens", "max_tokens 10"});
  expect_error([&] { Batcher({}, BatcherOptions{}); }, {"no examples"});
  auto ex = make_examples(3, 4, 4, 1);
  ex[1].type_ids.pop_back();
  expect_error([&] { Batcher(ex, BatcherOptions{}); }, {"example 101", "4 ids but 3 type ids"});
  ex = make_examples(3, 4, 4, 1, true);
  ex[2].token_labels.clear();
  expect_error([&] { Batcher(ex, BatcherOptions{}); }, {"example 102", "no token labels"});
  ex = make_examples(3, 4, 4, 1);
  ex[0].ids.clear();
  ex[0].type_ids.clear();
  expect_error([&] { Batcher(ex, BatcherOptions{}); }, {"example 100", "no tokens"});
  opt.max_tokens = 0;
  opt.batch_size = 0;
  expect_error([&] { Batcher(make_examples(3, 4, 4, 1), opt); }, {"batch size"});
  const Batcher ok(make_examples(3, 4, 4, 1), BatcherOptions{});
  expect_error([&] { ok.batch(0, 1); }, {"batch 1 of epoch 0"});
}
