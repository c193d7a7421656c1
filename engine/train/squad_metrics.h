// SQuAD metrics as the official evaluation scripts compute them.
//
// Normalisation (both versions): lowercase, drop ASCII punctuation (Python's string.punctuation),
// drop the words a / an / the (regex \b(a|an|the)\b on Unicode word boundaries), collapse
// whitespace (Python's str.split()). Lowercasing is Unicode simple case mapping (utf8proc), which
// equals Python's str.lower() but for the few characters whose lowercase is two characters (U+0130).
//
// v1.1 (evaluate-v1.1.py): exact_match and f1, each the best over the gold answers of a question,
// averaged over all questions, in percent. F1 of token bags; no common token gives 0.
// v2.0 (evaluate-v2.0.py): gold answers whose normalisation is empty are dropped and a question
// without any counts '' as its answer; F1 between two empty token lists is 1. With no-answer
// probabilities (null_odds.json), a question whose probability exceeds na_prob_thresh (1.0) counts
// as predicted unanswerable. Reported: exact, f1, total, HasAns_* and NoAns_* over the answerable
// and unanswerable questions, and with the probabilities best_exact / best_f1 and their thresholds
// (the threshold on null_odds that would have scored best). v2 leaves questions without a prediction
// out of every count (evaluate-v2.0.py leaves them out of exact, f1 and total, and fails on them in
// HasAns/NoAns); v1.1 counts them as 0, as evaluate-v1.1.py does. The engine always predicts every
// question.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace engine {

std::string normalize_answer(const std::string& s);

struct SquadGold {
  std::string id;
  std::vector<std::string> answers;  // empty: unanswerable
};

// v1.1: {"exact_match", "f1"}.
std::map<std::string, double> squad_v1_metrics(const std::vector<SquadGold>& gold,
                                               const std::map<std::string, std::string>& predictions);
// v2.0. na_probs may be empty (no probabilities: all 0, no best thresholds).
std::map<std::string, double> squad_v2_metrics(const std::vector<SquadGold>& gold,
                                               const std::map<std::string, std::string>& predictions,
                                               const std::map<std::string, double>& na_probs,
                                               double na_prob_thresh = 1.0);

}  // namespace engine
