// Evaluation metrics, defined exactly as the Python libraries Hugging Face's example scripts use,
// so numbers printed by the engine compare one to one with theirs:
//   accuracy             fraction of equal ids
//   macro_f1             sklearn f1_score(average="macro"): per-class F1 = 2TP / (2TP + FP + FN)
//                        averaged over the classes present in gold OR predictions (their union)
//   matthews_corrcoef    sklearn's multiclass MCC from the confusion matrix; 0 when undefined
//                        (a constant gold or prediction vector), as sklearn returns 0.0
//   pearson / spearman   scipy pearsonr / spearmanr (spearman: Pearson of ranks, ties get the
//                        average rank); NaN when undefined (a constant vector, or fewer than 2
//                        points): scipy returns nan too, and a NaN prints as "nan", never as a
//                        believable 0
//   entity_scores        seqeval's default mode (conlleval-compatible): entities are found with
//                        conlleval's chunk start / end rules, so IOB1 and IOB2 both work and an
//                        I- tag after O or after another type starts a new entity; micro-averaged
//                        precision / recall / F1 over exact (type, begin, end) matches, 0 when a
//                        denominator is 0 (seqeval's zero_division default)
// Inputs of different lengths, or empty inputs, throw engine::Error.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace engine {

double accuracy(const std::vector<int32_t>& gold, const std::vector<int32_t>& pred);
double macro_f1(const std::vector<int32_t>& gold, const std::vector<int32_t>& pred);
double matthews_corrcoef(const std::vector<int32_t>& gold, const std::vector<int32_t>& pred);

double pearson(const std::vector<double>& x, const std::vector<double>& y);
double spearman(const std::vector<double>& x, const std::vector<double>& y);
// Ranks 1..n, ties given the average of the ranks they span (scipy rankdata "average").
std::vector<double> average_ranks(const std::vector<double>& v);

// One entity: a type and an inclusive token span, positions counted over the sentences laid end to
// end (as seqeval does for a list of sentences).
struct Entity {
  std::string type;
  int64_t begin = 0, end = 0;
  bool operator<(const Entity& o) const {
    return begin != o.begin ? begin < o.begin : end != o.end ? end < o.end : type < o.type;
  }
  bool operator==(const Entity& o) const { return begin == o.begin && end == o.end && type == o.type; }
};
// seqeval.metrics.sequence_labeling.get_entities for a list of sentences (an O between sentences,
// so no entity crosses from one into the next). Tags are "B-X", "I-X", "E-X", "S-X", "O".
std::vector<Entity> extract_entities(const std::vector<std::vector<std::string>>& sentences);

struct EntityCounts {
  int64_t gold = 0, predicted = 0, correct = 0;
  double precision = 0, recall = 0, f1 = 0;
};
struct EntityScores {
  EntityCounts overall;                        // micro average over all types
  std::map<std::string, EntityCounts> by_type; // every type in gold or predictions
};
// Sentences must pair up with equal lengths.
EntityScores entity_scores(const std::vector<std::vector<std::string>>& gold,
                           const std::vector<std::vector<std::string>>& pred);

// A metric for printing: fixed `digits` decimals, "nan" for NaN (whatever its sign bit says).
std::string format_metric(double value, int digits = 4);

}  // namespace engine
