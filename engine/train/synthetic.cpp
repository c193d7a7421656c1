#include "engine/train/synthetic.h"

#include <random>

namespace engine {

namespace {

const char* kPositive[] = {"good", "great", "fine", "nice", "happy", "bright", "warm", "superb"};
const char* kNegative[] = {"bad", "awful", "sad", "poor", "dull", "grim", "cold", "weak"};
const char* kNeutral[] = {"the", "a", "movie", "plot", "was", "it", "and", "actor", "scene", "film",
                          "of", "story", "quite", "very", "this", "that"};

// Uniform integer in [0, n) from raw 64-bit draws (std distributions differ between libraries).
int32_t draw(std::mt19937_64& rng, int32_t n) { return int32_t(rng() % uint64_t(n)); }

SyntheticExample make_example(std::mt19937_64& rng, int max_words, int32_t pos_base, int32_t neg_base,
                              int32_t neutral_base) {
  const int32_t kCls = 2, kSep = 3;
  int words = 4 + draw(rng, max_words - 3);
  // Sentiment words: between 1 and 5, never a tie, so every example has a label.
  int sentiment = 1 + draw(rng, std::min(5, words));
  int positive = draw(rng, sentiment + 1);
  if (2 * positive == sentiment) positive += (draw(rng, 2) ? 1 : -1);
  int negative = sentiment - positive;
  std::vector<int32_t> body;
  for (int i = 0; i < positive; ++i) body.push_back(pos_base + draw(rng, 8));
  for (int i = 0; i < negative; ++i) body.push_back(neg_base + draw(rng, 8));
  while (int(body.size()) < words) body.push_back(neutral_base + draw(rng, 16));
  for (int i = int(body.size()) - 1; i > 0; --i) std::swap(body[i], body[draw(rng, i + 1)]);
  SyntheticExample e;
  e.ids.push_back(kCls);
  e.ids.insert(e.ids.end(), body.begin(), body.end());
  e.ids.push_back(kSep);
  e.label = positive > negative ? 1 : 0;
  return e;
}

}  // namespace

SyntheticTask SyntheticTask::make(uint64_t seed, int n_train, int n_dev, int max_words) {
  SyntheticTask task;
  task.vocab = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  const int32_t pos_base = int32_t(task.vocab.size());
  for (const char* w : kPositive) task.vocab.push_back(w);
  const int32_t neg_base = int32_t(task.vocab.size());
  for (const char* w : kNegative) task.vocab.push_back(w);
  const int32_t neutral_base = int32_t(task.vocab.size());
  for (const char* w : kNeutral) task.vocab.push_back(w);
  std::mt19937_64 rng(seed);
  for (int i = 0; i < n_train; ++i) task.train.push_back(make_example(rng, max_words, pos_base, neg_base, neutral_base));
  for (int i = 0; i < n_dev; ++i) task.dev.push_back(make_example(rng, max_words, pos_base, neg_base, neutral_base));
  return task;
}

std::string SyntheticTask::text(const SyntheticExample& e) const {
  std::string s;
  for (size_t i = 1; i + 1 < e.ids.size(); ++i) s += (i > 1 ? " " : "") + vocab[size_t(e.ids[i])];
  return s;
}

}  // namespace engine
