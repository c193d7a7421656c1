// Tests of the evaluation metrics: small cases worked out by hand (the arithmetic is in the
// comments), degenerate inputs, and random cases scored by scikit-learn, SciPy and seqeval
// (tests/fixtures/metrics_reference.json, written by tools/reference_metrics.py).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/train/metrics.h"

using namespace engine;

namespace {

using Tags = std::vector<std::vector<std::string>>;

template <typename F>
void expect_error(F f, const std::string& piece) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(piece), std::string::npos) << e.what();
    return;
  }
  ADD_FAILURE() << "no engine::Error (expected one mentioning '" << piece << "')";
}

std::vector<std::tuple<std::string, int64_t, int64_t>> spans(const Tags& sentences) {
  std::vector<std::tuple<std::string, int64_t, int64_t>> out;
  for (const Entity& e : extract_entities(sentences)) out.emplace_back(e.type, e.begin, e.end);
  return out;
}

}  // namespace

// =============================================================================================
// Classification

TEST(Metrics, AccuracyByHand) {
  // gold 0 1 1 0 2 / pred 0 1 0 0 1: positions 0, 1, 3 agree -> 3/5.
  EXPECT_DOUBLE_EQ(accuracy({0, 1, 1, 0, 2}, {0, 1, 0, 0, 1}), 0.6);
  EXPECT_DOUBLE_EQ(accuracy({4}, {4}), 1.0);
}

TEST(Metrics, MacroF1ByHand) {
  // gold 0 1 1 0 2 / pred 0 1 0 0 1, F1_k = 2 TP / (gold_k + pred_k):
  //   class 0: TP 2, gold 2, pred 3 -> 4/5;  class 1: TP 1, gold 2, pred 2 -> 2/4;
  //   class 2: TP 0, gold 1, pred 0 -> 0.    Mean (0.8 + 0.5 + 0) / 3 = 0.4333...
  EXPECT_NEAR(macro_f1({0, 1, 1, 0, 2}, {0, 1, 0, 0, 1}), 1.3 / 3.0, 1e-15);
  // A class only predicted still counts (sklearn: labels = union of gold and predictions):
  // gold 0 0 1 1 / pred 0 2 1 1: class 0: 2*1/(2+1) = 2/3; class 1: 2*2/(2+2) = 1; class 2: 0/(0+1) = 0.
  EXPECT_NEAR(macro_f1({0, 0, 1, 1}, {0, 2, 1, 1}), (2.0 / 3.0 + 1.0) / 3.0, 1e-15);
  EXPECT_DOUBLE_EQ(macro_f1({1, 1}, {1, 1}), 1.0);
}

TEST(Metrics, MatthewsByHand) {
  // Binary, gold 1 1 1 0 0 0 / pred 1 1 0 0 0 1: TP 2, FN 1, TN 2, FP 1.
  // (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (4 - 1) / sqrt(3*3*3*3) = 1/3.
  EXPECT_NEAR(matthews_corrcoef({1, 1, 1, 0, 0, 0}, {1, 1, 0, 0, 0, 1}), 1.0 / 3.0, 1e-15);
  // Multiclass, gold 0 1 2 0 1 2 / pred 0 2 1 0 0 2: s = 6, correct c = 3 (positions 0, 3, 5),
  // gold counts t = (2, 2, 2), predicted counts p = (3, 1, 2), sum t.p = 6 + 2 + 4 = 12.
  // (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (18 - 12) / sqrt((36 - 14)(36 - 12)) = 6 / sqrt(528).
  EXPECT_NEAR(matthews_corrcoef({0, 1, 2, 0, 1, 2}, {0, 2, 1, 0, 0, 2}), 6.0 / std::sqrt(528.0), 1e-15);
  EXPECT_DOUBLE_EQ(matthews_corrcoef({0, 1, 0, 1}, {1, 0, 1, 0}), -1.0);
  // Undefined (a constant prediction): sklearn returns 0.
  EXPECT_EQ(matthews_corrcoef({0, 1, 0, 1}, {1, 1, 1, 1}), 0.0);
}

TEST(Metrics, ClassificationErrors) {
  expect_error([] { accuracy({0, 1}, {0}); }, "2 gold values but 1 predictions");
  expect_error([] { macro_f1({}, {}); }, "no values");
  expect_error([] { matthews_corrcoef({1}, {1, 1}); }, "matthews_corrcoef");
}

// =============================================================================================
// Correlations

TEST(Metrics, PearsonByHand) {
  // x 1 2 3 4 (mean 2.5), y 2 4 5 9 (mean 5): deviations (-1.5 -0.5 0.5 1.5) and (-3 -1 0 4).
  // sxy = 4.5 + 0.5 + 0 + 6 = 11, sxx = 5, syy = 26 -> r = 11 / sqrt(130).
  EXPECT_NEAR(pearson({1, 2, 3, 4}, {2, 4, 5, 9}), 11.0 / std::sqrt(130.0), 1e-15);
  EXPECT_DOUBLE_EQ(pearson({1, 2, 3}, {6, 4, 2}), -1.0);
}

TEST(Metrics, SpearmanAverageRanksByHand) {
  // [10 20 10 30 20 20]: the 10s share ranks 1, 2 -> 1.5; the 20s share 3, 4, 5 -> 4; 30 -> 6.
  EXPECT_EQ(average_ranks({10, 20, 10, 30, 20, 20}), (std::vector<double>{1.5, 4, 1.5, 6, 4, 4}));
  // x 1 2 2 3 -> ranks 1 2.5 2.5 4; y 1 3 2 4 -> ranks 1 3 2 4. Pearson of ranks (both mean 2.5):
  // deviations (-1.5 0 0 1.5) and (-1.5 0.5 -0.5 1.5): sxy = 4.5, sxx = 4.5, syy = 5 -> 4.5 / sqrt(22.5).
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 4.5 / std::sqrt(22.5), 1e-15);
  // Monotone but not linear: Spearman 1, Pearson below 1.
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3, 4}, {1, 8, 27, 64}), 1.0);
  EXPECT_LT(pearson({1, 2, 3, 4}, {1, 8, 27, 64}), 0.99);
}

TEST(Metrics, DegenerateCorrelationsAreNan) {
  // scipy returns nan for a constant input; so do we, and it prints as "nan".
  EXPECT_TRUE(std::isnan(pearson({1, 2, 3}, {2, 2, 2})));
  EXPECT_TRUE(std::isnan(spearman({5, 5, 5}, {1, 2, 3})));
  EXPECT_TRUE(std::isnan(pearson({1}, {2})));  // one point: no correlation either
  EXPECT_EQ(format_metric(pearson({1, 2, 3}, {2, 2, 2})), "nan");
  EXPECT_EQ(format_metric(-std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(format_metric(0.5), "0.5000");
  EXPECT_EQ(format_metric(0.123456, 2), "0.12");
  expect_error([] { pearson({1, 2}, {1, 2, 3}); }, "2 gold values but 3 predictions");
}

// =============================================================================================
// Entities

TEST(Metrics, EntitiesIob2) {
  // B-PER I-PER O B-LOC: PER over 0..1, LOC at 3.
  EXPECT_EQ(spans({{"B-PER", "I-PER", "O", "B-LOC"}}),
            (std::vector<std::tuple<std::string, int64_t, int64_t>>{{"PER", 0, 1}, {"LOC", 3, 3}}));
  // B-LOC B-LOC: two entities, B always starts one.
  EXPECT_EQ(spans({{"B-LOC", "B-LOC"}}),
            (std::vector<std::tuple<std::string, int64_t, int64_t>>{{"LOC", 0, 0}, {"LOC", 1, 1}}));
}

TEST(Metrics, EntitiesIob1AndStrayInside) {
  // CoNLL-2003's IOB1: I- starts an entity after O; B- only separates two adjacent same-type ones.
  // I-PER I-PER O I-LOC I-LOC B-LOC -> PER 0..1, LOC 3..4, LOC 5.
  EXPECT_EQ(spans({{"I-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC"}}),
            (std::vector<std::tuple<std::string, int64_t, int64_t>>{{"PER", 0, 1}, {"LOC", 3, 4}, {"LOC", 5, 5}}));
  // An I- of another type ends the entity and starts a new one: B-PER I-LOC -> PER 0, LOC 1.
  EXPECT_EQ(spans({{"B-PER", "I-LOC"}}),
            (std::vector<std::tuple<std::string, int64_t, int64_t>>{{"PER", 0, 0}, {"LOC", 1, 1}}));
  // IOBES: S- is one token, E- ends: S-PER B-ORG E-ORG -> PER 0, ORG 1..2.
  EXPECT_EQ(spans({{"S-PER", "B-ORG", "E-ORG"}}),
            (std::vector<std::tuple<std::string, int64_t, int64_t>>{{"PER", 0, 0}, {"ORG", 1, 2}}));
}

TEST(Metrics, EntitiesDoNotCrossSentences) {
  // [B-PER] [I-PER]: an O goes between sentences (positions 0 | 1 = O | 2), so two entities.
  EXPECT_EQ(spans({{"B-PER"}, {"I-PER"}}),
            (std::vector<std::tuple<std::string, int64_t, int64_t>>{{"PER", 0, 0}, {"PER", 2, 2}}));
}

TEST(Metrics, EntityScoresByHand) {
  // Gold: PER 0..1, LOC 3, ORG 5 (the O after sentence 1 sits at 4).
  // Pred: PER 0..1, ORG 3, ORG 5..6. Only PER matches exactly: P = 1/3, R = 1/3, F1 = 1/3.
  const Tags gold = {{"B-PER", "I-PER", "O", "B-LOC"}, {"B-ORG", "O"}};
  const Tags pred = {{"B-PER", "I-PER", "O", "B-ORG"}, {"B-ORG", "I-ORG"}};
  const EntityScores s = entity_scores(gold, pred);
  EXPECT_EQ(s.overall.gold, 3);
  EXPECT_EQ(s.overall.predicted, 3);
  EXPECT_EQ(s.overall.correct, 1);
  EXPECT_DOUBLE_EQ(s.overall.precision, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(s.overall.recall, 1.0 / 3.0);
  EXPECT_NEAR(s.overall.f1, 1.0 / 3.0, 1e-15);
  ASSERT_EQ(s.by_type.size(), 3u);
  EXPECT_DOUBLE_EQ(s.by_type.at("PER").f1, 1.0);
  // LOC: gold 1, predicted 0 -> precision 0/0 = 0 (zero_division), recall 0, F1 0.
  EXPECT_EQ(s.by_type.at("LOC").predicted, 0);
  EXPECT_EQ(s.by_type.at("LOC").f1, 0.0);
  // ORG: gold 1, predicted 2, correct 0.
  EXPECT_EQ(s.by_type.at("ORG").predicted, 2);
  EXPECT_EQ(s.by_type.at("ORG").correct, 0);
  // No predicted entities at all: precision 0, not NaN.
  const EntityScores none = entity_scores(gold, {{"O", "O", "O", "O"}, {"O", "O"}});
  EXPECT_EQ(none.overall.precision, 0.0);
  EXPECT_EQ(none.overall.f1, 0.0);
}

TEST(Metrics, EntityScoreErrors) {
  expect_error([] { entity_scores({{"O"}}, {{"O", "O"}}); }, "sentence 0 has 1 gold tags but 2 predicted tags");
  expect_error([] { entity_scores({{"O"}}, {}); }, "1 gold values but 0 predictions");
}

// =============================================================================================
// Against scikit-learn, SciPy and seqeval

namespace {

nlohmann::json load_reference() {
  const std::string path = std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/metrics_reference.json";
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing fixture " << path;
  return nlohmann::json::parse(in);
}

// A reference value that may be null (NaN in Python).
void expect_matches(double got, const nlohmann::json& want, const std::string& what) {
  if (want.is_null()) {
    EXPECT_TRUE(std::isnan(got)) << what << ": expected nan, got " << got;
  } else {
    EXPECT_NEAR(got, want.get<double>(), 1e-12) << what;
  }
}

}  // namespace

TEST(MetricsReference, ClassificationMatchesSklearn) {
  const nlohmann::json ref = load_reference();
  ASSERT_FALSE(ref["classification"].empty());
  for (const auto& c : ref["classification"]) {
    const auto gold = c["gold"].get<std::vector<int32_t>>();
    const auto pred = c["pred"].get<std::vector<int32_t>>();
    const std::string what = "case of " + std::to_string(gold.size());
    expect_matches(accuracy(gold, pred), c["accuracy"], "accuracy, " + what);
    expect_matches(macro_f1(gold, pred), c["macro_f1"], "macro F1, " + what);
    expect_matches(matthews_corrcoef(gold, pred), c["mcc"], "MCC, " + what);
  }
}

TEST(MetricsReference, CorrelationsMatchScipy) {
  const nlohmann::json ref = load_reference();
  ASSERT_FALSE(ref["regression"].empty());
  for (const auto& c : ref["regression"]) {
    const auto x = c["x"].get<std::vector<double>>();
    const auto y = c["y"].get<std::vector<double>>();
    const std::string what = "case of " + std::to_string(x.size());
    expect_matches(pearson(x, y), c["pearson"], "pearson, " + what);
    expect_matches(spearman(x, y), c["spearman"], "spearman, " + what);
  }
}

TEST(MetricsReference, EntitiesMatchSeqeval) {
  const nlohmann::json ref = load_reference();
  ASSERT_FALSE(ref["ner"].empty());
  for (const auto& c : ref["ner"]) {
    const auto gold = c["gold"].get<Tags>();
    const auto pred = c["pred"].get<Tags>();
    const EntityScores s = entity_scores(gold, pred);
    const std::string what = std::to_string(gold.size()) + " sentences";
    expect_matches(s.overall.precision, c["precision"], "precision, " + what);
    expect_matches(s.overall.recall, c["recall"], "recall, " + what);
    expect_matches(s.overall.f1, c["f1"], "f1, " + what);
    ASSERT_EQ(s.by_type.size(), c["by_type"].size()) << what;
    for (const auto& [type, want] : c["by_type"].items()) {
      ASSERT_TRUE(s.by_type.count(type)) << "type " << type;
      const EntityCounts& got = s.by_type.at(type);
      EXPECT_EQ(got.gold, want["support"].get<int64_t>()) << type;
      expect_matches(got.precision, want["precision"], type + " precision, " + what);
      expect_matches(got.recall, want["recall"], type + " recall, " + what);
      expect_matches(got.f1, want["f1"], type + " f1, " + what);
    }
  }
}
