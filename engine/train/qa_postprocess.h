// From start/end logits of every window to one answer per question, as Hugging Face's run_qa.py
// (utils_qa.postprocess_qa_predictions) computes it:
//   - in each window, the n_best_size highest start logits and the n_best_size highest end logits;
//     every pair of a start and an end that are both context tokens, end >= start, at most
//     max_answer_length tokens long, is a candidate scored start_logit + end_logit (f32 sums, as
//     numpy adds float32 logits);
//   - the candidates of all windows of a question are sorted by score (a stable sort: equal scores
//     keep window order) and the best n_best_size kept; the answer text is the context between the
//     start token's first and the end token's last character;
//   - version 2: the null answer is the lowest start[CLS] + end[CLS] over the windows; null_odds =
//     null score - (start + end logit of the best non-empty candidate); the answer is empty when
//     null_odds > null_score_diff_threshold.
// probability: the softmax of the kept candidates' scores (with "empty" scored 0 when nothing was
// found, as run_qa.py does).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/data/squad.h"

namespace engine {

struct QaAnswer {
  std::string text;           // "" for no answer (version 2)
  int64_t start = 0, end = 0;  // characters into the context, [start, end); 0, 0 for no answer
  double probability = 0;     // of this answer among the kept candidates
  float null_odds = 0;        // version 2: null score minus the best non-empty candidate's score
};

// logits[f]: the window's logits as the model writes them, [tokens, 2] row-major (start, end).
// Returns one answer per example of `file`, in its order.
std::vector<QaAnswer> postprocess_qa(const SquadFile& file, const std::vector<QaFeature>& features,
                                     const std::vector<std::vector<float>>& logits, const QaOptions& options,
                                     bool version_2);

}  // namespace engine
