// Evaluation metrics (see metrics.h for the definitions each one follows). Counts are integers and
// sums are in double, so results match the Python references to the last few bits.
#include "engine/train/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <set>

#include "engine/error.h"

namespace engine {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

template <typename A, typename B>
void check_pair(const char* metric, const A& gold, const B& pred) {
  ENGINE_CHECK(gold.size() == pred.size(), metric, ": ", gold.size(), " gold values but ", pred.size(),
               " predictions");
  ENGINE_CHECK(!gold.empty(), metric, ": no values");
}

// Zero when the denominator is zero: the zero_division=0 convention of sklearn and seqeval.
double ratio(double num, double den) { return den == 0 ? 0.0 : num / den; }

}  // namespace

double accuracy(const std::vector<int32_t>& gold, const std::vector<int32_t>& pred) {
  check_pair("accuracy", gold, pred);
  int64_t equal = 0;
  for (size_t i = 0; i < gold.size(); ++i) equal += gold[i] == pred[i];
  return double(equal) / double(gold.size());
}

double macro_f1(const std::vector<int32_t>& gold, const std::vector<int32_t>& pred) {
  check_pair("macro_f1", gold, pred);
  // Per class: TP, and how often it is gold and predicted; F1 = 2TP / (gold + predicted).
  std::map<int32_t, int64_t> tp, in_gold, in_pred;
  for (size_t i = 0; i < gold.size(); ++i) {
    ++in_gold[gold[i]];
    ++in_pred[pred[i]];
    if (gold[i] == pred[i]) ++tp[gold[i]];
  }
  std::set<int32_t> classes;
  for (const auto& [c, n] : in_gold) classes.insert(c);
  for (const auto& [c, n] : in_pred) classes.insert(c);
  double sum = 0;
  for (int32_t c : classes) sum += ratio(2.0 * double(tp[c]), double(in_gold[c] + in_pred[c]));
  return sum / double(classes.size());
}

double matthews_corrcoef(const std::vector<int32_t>& gold, const std::vector<int32_t>& pred) {
  check_pair("matthews_corrcoef", gold, pred);
  // sklearn: with t_k / p_k the times class k is gold / predicted, c the correct count and s the
  // sample count, MCC = (c s - sum t_k p_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)).
  std::map<int32_t, double> t, p;
  double correct = 0;
  for (size_t i = 0; i < gold.size(); ++i) {
    t[gold[i]] += 1;
    p[pred[i]] += 1;
    correct += gold[i] == pred[i];
  }
  const double s = double(gold.size());
  double tp_dot = 0, pp = 0, tt = 0;
  for (const auto& [k, n] : t) {
    tt += n * n;
    const auto it = p.find(k);
    if (it != p.end()) tp_dot += n * it->second;
  }
  for (const auto& [k, n] : p) pp += n * n;
  const double cov_tp = correct * s - tp_dot;
  const double cov_pp = s * s - pp;
  const double cov_tt = s * s - tt;
  if (cov_pp * cov_tt == 0) return 0.0;
  return cov_tp / std::sqrt(cov_tt * cov_pp);
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  check_pair("pearson", x, y);
  if (x.size() < 2) return kNaN;
  const double n = double(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  if (sxx == 0 || syy == 0) return kNaN;  // a constant vector has no correlation
  // Clip: rounding can put |r| a hair past 1 for perfectly correlated data.
  return std::clamp(sxy / (std::sqrt(sxx) * std::sqrt(syy)), -1.0, 1.0);
}

std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    // Positions i..j (0-based) share the ranks i+1..j+1: their average.
    const double rank = 0.5 * double(i + 1 + j + 1);
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  check_pair("spearman", x, y);
  return pearson(average_ranks(x), average_ranks(y));
}

// ----------------------------------------------------------------------------------------------
// Entities, as seqeval's get_entities (non-suffix mode)

namespace {

// A tag's prefix letter and type: "B-PER" -> ('B', "PER"), "O" -> ('O', "_"). seqeval takes the
// first character as the prefix and the text after the first '-' of the rest as the type, "_" when
// that is empty.
void split_tag(const std::string& tag, char* prefix, std::string* type) {
  *prefix = tag.empty() ? 'O' : tag[0];
  const std::string rest = tag.empty() ? "" : tag.substr(1);
  const size_t dash = rest.find('-');
  *type = dash == std::string::npos ? rest : rest.substr(dash + 1);
  if (type->empty()) *type = "_";
}

bool chunk_ends(char prev, char tag, const std::string& prev_type, const std::string& type) {
  if (prev == 'E' || prev == 'S') return true;
  if ((prev == 'B' || prev == 'I') && (tag == 'B' || tag == 'S' || tag == 'O')) return true;
  return prev != 'O' && prev != '.' && prev_type != type;
}

bool chunk_starts(char prev, char tag, const std::string& prev_type, const std::string& type) {
  if (tag == 'B' || tag == 'S') return true;
  if ((prev == 'E' || prev == 'S' || prev == 'O') && (tag == 'E' || tag == 'I')) return true;
  return tag != 'O' && tag != '.' && prev_type != type;
}

}  // namespace

std::vector<Entity> extract_entities(const std::vector<std::vector<std::string>>& sentences) {
  // Sentences end to end with an "O" after each one, plus a final "O" that closes the last chunk.
  std::vector<const std::string*> seq;
  static const std::string kOutside = "O";
  for (const auto& s : sentences) {
    for (const auto& tag : s) seq.push_back(&tag);
    seq.push_back(&kOutside);
  }
  seq.push_back(&kOutside);

  std::vector<Entity> entities;
  char prev = 'O';
  std::string prev_type;  // "" before the first tag, as seqeval starts
  int64_t begin = 0;
  for (size_t i = 0; i < seq.size(); ++i) {
    char tag;
    std::string type;
    split_tag(*seq[i], &tag, &type);
    if (chunk_ends(prev, tag, prev_type, type)) entities.push_back({prev_type, begin, int64_t(i) - 1});
    if (chunk_starts(prev, tag, prev_type, type)) begin = int64_t(i);
    prev = tag;
    prev_type = std::move(type);
  }
  return entities;
}

EntityScores entity_scores(const std::vector<std::vector<std::string>>& gold,
                           const std::vector<std::vector<std::string>>& pred) {
  check_pair("entity_scores", gold, pred);
  for (size_t i = 0; i < gold.size(); ++i)
    ENGINE_CHECK(gold[i].size() == pred[i].size(), "entity_scores: sentence ", i, " has ", gold[i].size(),
                 " gold tags but ", pred[i].size(), " predicted tags");
  const std::vector<Entity> g = extract_entities(gold);
  const std::vector<Entity> p = extract_entities(pred);
  const std::set<Entity> gold_set(g.begin(), g.end());

  EntityScores scores;
  for (const Entity& e : gold_set) ++scores.by_type[e.type].gold;
  for (const Entity& e : std::set<Entity>(p.begin(), p.end())) {
    EntityCounts& c = scores.by_type[e.type];
    ++c.predicted;
    c.correct += gold_set.count(e) ? 1 : 0;
  }
  // seqeval: precision and recall with 0 for 0/0, then F1 = 2PR / (P + R), 0 when P + R = 0.
  const auto finish = [](EntityCounts& c) {
    c.precision = ratio(double(c.correct), double(c.predicted));
    c.recall = ratio(double(c.correct), double(c.gold));
    c.f1 = ratio(2.0 * c.precision * c.recall, c.precision + c.recall);
  };
  for (auto& [type, c] : scores.by_type) {
    finish(c);
    scores.overall.gold += c.gold;
    scores.overall.predicted += c.predicted;
    scores.overall.correct += c.correct;
  }
  finish(scores.overall);
  return scores;
}

std::string format_metric(double value, int digits) {
  if (std::isnan(value)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, value);
  return buf;
}

}  // namespace engine
