// SQuAD exact match and F1 (see squad_metrics.h).
#include "engine/train/squad_metrics.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "engine/data/squad.h"
#include "tokenizer/utf8.h"

namespace engine {

namespace {

std::vector<uint32_t> decode(const std::string& s) {
  std::vector<uint32_t> out;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    uint32_t cp;
    p += tokenizer::decode_utf8(p, end, &cp);
    out.push_back(cp);
  }
  return out;
}

bool is_ascii_punctuation(uint32_t cp) { return cp < 128 && std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", int(cp)) && cp != 0; }

// Python re's \w for str patterns: alphanumeric (letters L*, numbers N*) or underscore.
bool is_word_char(uint32_t cp) {
  if (cp == '_') return true;
  switch (utf8proc_category(utf8proc_int32_t(cp))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

// Replaces every whole word a / an / the by a space (re.sub(r"\b(a|an|the)\b", " ", text)).
std::vector<uint32_t> remove_articles(const std::vector<uint32_t>& t) {
  std::vector<uint32_t> out;
  size_t i = 0;
  auto matches = [&](size_t at, const char* word) {
    const size_t n = std::strlen(word);
    if (at + n > t.size()) return false;
    for (size_t k = 0; k < n; ++k)
      if (t[at + k] != uint32_t(word[k])) return false;
    return at + n == t.size() || !is_word_char(t[at + n]);
  };
  while (i < t.size()) {
    const bool boundary = i == 0 || !is_word_char(t[i - 1]);
    size_t matched = 0;
    if (boundary) {
      // The regex tries "a" before "an": "an" only matches where "a" is not a whole word.
      for (const char* w : {"a", "an", "the"})
        if (matches(i, w)) {
          matched = std::strlen(w);
          break;
        }
    }
    if (matched) {
      out.push_back(' ');
      i += matched;
    } else {
      out.push_back(t[i++]);
    }
  }
  return out;
}

std::vector<std::string> normalized_tokens(const std::string& s) {
  std::vector<uint32_t> t;
  for (uint32_t cp : decode(s)) {
    const uint32_t lower = uint32_t(utf8proc_tolower(utf8proc_int32_t(cp)));
    if (!is_ascii_punctuation(lower)) t.push_back(lower);
  }
  t = remove_articles(t);
  std::vector<std::string> tokens;
  std::string cur;
  for (uint32_t cp : t) {
    if (is_python_space(cp)) {
      if (!cur.empty()) tokens.push_back(std::move(cur));
      cur.clear();
    } else {
      tokenizer::append_utf8(cur, cp);
    }
  }
  if (!cur.empty()) tokens.push_back(std::move(cur));
  return tokens;
}

std::string join(const std::vector<std::string>& tokens) {
  std::string s;
  for (size_t i = 0; i < tokens.size(); ++i) s += (i ? " " : "") + tokens[i];
  return s;
}

int common_tokens(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::unordered_map<std::string, int> count;
  for (const std::string& t : a) ++count[t];
  int same = 0;
  for (const std::string& t : b) {
    auto it = count.find(t);
    if (it != count.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  return same;
}

double f1_of(const std::vector<std::string>& gold, const std::vector<std::string>& pred, bool v2) {
  if (v2 && (gold.empty() || pred.empty())) return gold == pred ? 1.0 : 0.0;
  const int same = common_tokens(gold, pred);
  if (same == 0) return 0.0;
  const double precision = double(same) / double(pred.size()), recall = double(same) / double(gold.size());
  return 2 * precision * recall / (precision + recall);
}

struct Scores {
  std::map<std::string, double> exact, f1;
};

Scores raw_scores(const std::vector<SquadGold>& gold, const std::map<std::string, std::string>& preds, bool v2) {
  Scores s;
  for (const SquadGold& g : gold) {
    auto p = preds.find(g.id);
    if (p == preds.end()) continue;  // the official scripts skip (and report) missing predictions
    std::vector<std::string> answers;
    for (const std::string& a : g.answers)
      if (!v2 || !normalize_answer(a).empty()) answers.push_back(a);
    if (v2 && answers.empty()) answers.push_back("");
    const std::vector<std::string> pred = normalized_tokens(p->second);
    double exact = 0, f1 = 0;
    for (const std::string& a : answers) {
      const std::vector<std::string> gt = normalized_tokens(a);
      exact = std::max(exact, join(gt) == join(pred) ? 1.0 : 0.0);
      f1 = std::max(f1, f1_of(gt, pred, v2));
    }
    s.exact[g.id] = exact;
    s.f1[g.id] = f1;
  }
  return s;
}

double mean_percent(const std::map<std::string, double>& scores, const std::vector<std::string>& ids) {
  double sum = 0;
  for (const std::string& id : ids) sum += scores.at(id);
  return ids.empty() ? 0.0 : 100.0 * sum / double(ids.size());
}

// evaluate-v2.0.py's find_best_thresh: walk the questions by increasing no-answer probability,
// predicting an answer for those up to the threshold and none after.
// Questions with equal probabilities keep the file's order, as Python's sorted() over null_odds.json
// (written in file order) does: the running best depends on it.
std::pair<double, double> best_threshold(const std::vector<SquadGold>& gold,
                                         const std::map<std::string, std::string>& preds,
                                         const std::map<std::string, double>& scores,
                                         const std::map<std::string, double>& na_probs,
                                         const std::map<std::string, bool>& has_answer) {
  double cur = 0;
  for (const auto& [id, has] : has_answer) cur += has ? 0 : 1;
  double best = cur, best_thresh = 0;
  std::vector<std::pair<std::string, double>> order;
  for (const SquadGold& g : gold) {
    auto p = na_probs.find(g.id);
    if (p != na_probs.end()) order.emplace_back(g.id, p->second);
  }
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  for (const auto& [id, prob] : order) {
    if (!scores.count(id)) continue;
    double diff = has_answer.at(id) ? scores.at(id) : (preds.at(id).empty() ? 0 : -1);
    cur += diff;
    if (cur > best) {
      best = cur;
      best_thresh = prob;
    }
  }
  return {100.0 * best / double(scores.size()), best_thresh};
}

}  // namespace

std::string normalize_answer(const std::string& s) { return join(normalized_tokens(s)); }

std::map<std::string, double> squad_v1_metrics(const std::vector<SquadGold>& gold,
                                               const std::map<std::string, std::string>& predictions) {
  const Scores s = raw_scores(gold, predictions, false);
  // evaluate-v1.1.py divides by every question of the file, predicted or not.
  double exact = 0, f1 = 0;
  for (const auto& [id, v] : s.exact) exact += v;
  for (const auto& [id, v] : s.f1) f1 += v;
  const double total = double(gold.size());
  return {{"exact_match", total ? 100.0 * exact / total : 0.0}, {"f1", total ? 100.0 * f1 / total : 0.0}};
}

std::map<std::string, double> squad_v2_metrics(const std::vector<SquadGold>& gold,
                                               const std::map<std::string, std::string>& predictions,
                                               const std::map<std::string, double>& na_probs, double na_prob_thresh) {
  const Scores raw = raw_scores(gold, predictions, true);
  std::map<std::string, bool> has_answer;
  std::vector<std::string> all, has_ans, no_ans;
  for (const SquadGold& g : gold) {
    has_answer[g.id] = !g.answers.empty();
    if (!raw.exact.count(g.id)) continue;
    all.push_back(g.id);
    (g.answers.empty() ? no_ans : has_ans).push_back(g.id);
  }
  // apply_no_ans_threshold: above the threshold, the question counts as predicted unanswerable.
  Scores thresh = raw;
  for (const std::string& id : all) {
    auto p = na_probs.find(id);
    const double prob = p == na_probs.end() ? 0.0 : p->second;
    if (prob > na_prob_thresh) thresh.exact[id] = thresh.f1[id] = has_answer[id] ? 0.0 : 1.0;
  }
  std::map<std::string, double> m = {{"exact", mean_percent(thresh.exact, all)},
                                     {"f1", mean_percent(thresh.f1, all)},
                                     {"total", double(all.size())}};
  if (!has_ans.empty()) {
    m["HasAns_exact"] = mean_percent(thresh.exact, has_ans);
    m["HasAns_f1"] = mean_percent(thresh.f1, has_ans);
    m["HasAns_total"] = double(has_ans.size());
  }
  if (!no_ans.empty()) {
    m["NoAns_exact"] = mean_percent(thresh.exact, no_ans);
    m["NoAns_f1"] = mean_percent(thresh.f1, no_ans);
    m["NoAns_total"] = double(no_ans.size());
  }
  if (!na_probs.empty() && !all.empty()) {
    std::tie(m["best_exact"], m["best_exact_thresh"]) = best_threshold(gold, predictions, raw.exact, na_probs, has_answer);
    std::tie(m["best_f1"], m["best_f1_thresh"]) = best_threshold(gold, predictions, raw.f1, na_probs, has_answer);
  }
  return m;
}

}  // namespace engine
