// The embedded default task: a tiny made-up "sentiment" language where a sentence is positive when
// it holds more positive words than negative ones, among neutral filler, in any order. A model can
// only solve it by letting [CLS] gather evidence from every position (attention): no single token
// or position decides the label. Used by `engine finetune` with no arguments and by tests.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace engine {

struct SyntheticExample {
  std::vector<int32_t> ids;  // [CLS] words... [SEP]
  int32_t label = 0;         // 1: more positive than negative words
};

struct SyntheticTask {
  std::vector<std::string> vocab;  // id -> word; [PAD] [UNK] [CLS] [SEP] [MASK] first, as in BERT
  std::vector<SyntheticExample> train, dev;

  // n_train and n_dev examples of 4..max_words words, deterministic in seed.
  static SyntheticTask make(uint64_t seed, int n_train, int n_dev, int max_words = 24);
  std::string text(const SyntheticExample& e) const;  // the words, for showing an example
};

}  // namespace engine
