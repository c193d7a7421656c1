// Answers from span logits (see qa_postprocess.h).
#include "engine/train/qa_postprocess.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "engine/error.h"

namespace engine {

namespace {

// A candidate span of one window, in context bytes.
struct Candidate {
  int64_t begin = 0, end = 0;  // bytes into the context; 0, 0: the null answer
  float score = 0, start_logit = 0, end_logit = 0;
  bool null = false;
};

// The indices of the k largest values, largest first. Ties go to the larger index, as
// np.argsort(x)[-1:-k-1:-1] gives them with a stable sort.
std::vector<int64_t> top_indices(const std::vector<float>& logits, int64_t column, int64_t rows, int k) {
  std::vector<int64_t> idx(static_cast<size_t>(rows));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return logits[size_t(a * 2 + column)] < logits[size_t(b * 2 + column)]; });
  std::reverse(idx.begin(), idx.end());
  if (int64_t(idx.size()) > k) idx.resize(size_t(k));
  return idx;
}

// The candidates of one window (run_qa.py's inner double loop).
void window_candidates(const QaFeature& f, const std::vector<float>& logits, const QaOptions& o,
                       std::vector<Candidate>& out) {
  const int64_t rows = int64_t(f.offsets.size());
  const std::vector<int64_t> starts = top_indices(logits, 0, rows, o.n_best_size);
  const std::vector<int64_t> ends = top_indices(logits, 1, rows, o.n_best_size);
  for (int64_t s : starts)
    for (int64_t e : ends) {
      if (!f.is_context[size_t(s)] || !f.is_context[size_t(e)]) continue;
      if (e < s || e - s + 1 > o.max_answer_length) continue;
      Candidate c;
      c.begin = f.offsets[size_t(s)].begin;
      c.end = f.offsets[size_t(e)].end;
      c.start_logit = logits[size_t(s * 2)];
      c.end_logit = logits[size_t(e * 2 + 1)];
      c.score = c.start_logit + c.end_logit;
      out.push_back(c);
    }
}

// Character offsets of a byte range of the context.
std::pair<int64_t, int64_t> chars_of(const std::vector<int64_t>& byte_at, int64_t begin, int64_t end) {
  auto char_index = [&](int64_t byte) {
    return int64_t(std::lower_bound(byte_at.begin(), byte_at.end(), byte) - byte_at.begin());
  };
  return {char_index(begin), char_index(end)};
}

}  // namespace

std::vector<QaAnswer> postprocess_qa(const SquadFile& file, const std::vector<QaFeature>& features,
                                     const std::vector<std::vector<float>>& logits, const QaOptions& o,
                                     bool version_2) {
  ENGINE_CHECK(features.size() == logits.size(), "postprocess_qa: ", features.size(), " windows but ", logits.size(),
               " logit rows");
  ENGINE_CHECK(o.n_best_size > 0 && o.max_answer_length > 0, "--n-best-size and --max-answer-length must be positive");
  std::vector<std::vector<size_t>> windows_of(file.examples.size());
  for (size_t f = 0; f < features.size(); ++f) {
    ENGINE_CHECK(logits[f].size() == features[f].offsets.size() * 2, "postprocess_qa: window ", f, " has ",
                 features[f].offsets.size(), " tokens but ", logits[f].size(), " logits");
    windows_of[size_t(features[f].example)].push_back(f);
  }
  std::vector<QaAnswer> answers;
  for (size_t i = 0; i < file.examples.size(); ++i) {
    const SquadExample& ex = file.examples[i];
    std::vector<Candidate> cands;
    Candidate null;
    bool have_null = false;
    for (size_t f : windows_of[i]) {
      const std::vector<float>& z = logits[f];
      const float null_score = z[0] + z[1];
      if (!have_null || null.score > null_score) {
        null = Candidate{0, 0, null_score, z[0], z[1], true};
        have_null = true;
      }
      window_candidates(features[f], z, o, cands);
    }
    if (version_2 && have_null) cands.push_back(null);
    std::stable_sort(cands.begin(), cands.end(), [](const Candidate& a, const Candidate& b) { return a.score > b.score; });
    if (int64_t(cands.size()) > o.n_best_size) cands.resize(size_t(o.n_best_size));
    if (version_2 && have_null && std::none_of(cands.begin(), cands.end(), [](const Candidate& c) { return c.null; }))
      cands.push_back(null);
    // run_qa.py compares offsets (0, 0), so a span at (0, 0) counts as the null answer too; only
    // the null candidate has them (a real span has end > begin).
    auto text_of = [&](const Candidate& c) { return ex.context.substr(size_t(c.begin), size_t(c.end - c.begin)); };
    // Nothing found (or only the empty answer): run_qa.py puts "empty" with score 0 first.
    const bool nothing = cands.empty() || (cands.size() == 1 && text_of(cands[0]).empty());
    std::vector<double> scores;
    if (nothing) scores.push_back(0.0);
    for (const Candidate& c : cands) scores.push_back(double(c.score));
    const double top = *std::max_element(scores.begin(), scores.end());
    double sum = 0;
    for (double s : scores) sum += std::exp(s - top);
    auto probability = [&](size_t k) { return std::exp(scores[k] - top) / sum; };

    QaAnswer a;
    const std::vector<int64_t> byte_at = char_to_byte(ex.context);
    if (nothing && !version_2) {
      a.text = "empty";
      a.probability = probability(0);
    } else if (!version_2) {
      const Candidate& c = cands[0];
      a.text = text_of(c);
      std::tie(a.start, a.end) = chars_of(byte_at, c.begin, c.end);
      a.probability = probability(0);
    } else {
      // The best candidate with a non-empty text ("empty" when there is none).
      size_t k = 0;
      while (k < cands.size() && text_of(cands[k]).empty()) ++k;
      const bool found = k < cands.size();
      const float best_start = found ? cands[k].start_logit : 0.f, best_end = found ? cands[k].end_logit : 0.f;
      a.null_odds = null.score - best_start - best_end;
      if (a.null_odds > o.null_score_diff_threshold) {
        // The null answer's probability (it is among the kept candidates or appended after them).
        size_t n = 0;
        while (!cands[n].null) ++n;
        a.probability = probability(n + (nothing ? 1 : 0));
      } else if (found) {
        a.text = text_of(cands[k]);
        std::tie(a.start, a.end) = chars_of(byte_at, cands[k].begin, cands[k].end);
        a.probability = probability(k + (nothing ? 1 : 0));
      } else {
        a.text = "empty";
        a.probability = probability(0);
      }
    }
    answers.push_back(std::move(a));
  }
  return answers;
}

}  // namespace engine
