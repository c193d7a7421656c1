// Batch: one packed (unpadded) batch on the host, as the batcher makes it and the model uploads it.
// T = sum of sequence lengths token rows; cu_seqlens[B+1] are the prefix sums; position ids restart
// at 0 for each sequence; the [CLS] row of sequence b is cu_seqlens[b].
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

namespace engine {

struct Batch {
  std::vector<int32_t> ids, type_ids, pos_ids;  // [T]
  std::vector<int32_t> cu_seqlens;              // [B + 1]
  // Sequence classification: one label per sequence [B]; token classification: one per token [T]
  // with -100 (any negative) where no loss is taken. Empty when the batch has no labels.
  std::vector<int32_t> labels;
  std::vector<float> targets;  // regression: one value per sequence [B]

  int64_t tokens() const { return int64_t(ids.size()); }
  int64_t sequences() const { return cu_seqlens.empty() ? 0 : int64_t(cu_seqlens.size()) - 1; }
  int64_t max_seqlen() const {
    int64_t m = 0;
    for (size_t b = 0; b + 1 < cu_seqlens.size(); ++b) m = std::max<int64_t>(m, cu_seqlens[b + 1] - cu_seqlens[b]);
    return m;
  }
  // Appends one sequence; positions restart at 0.
  void add_sequence(const std::vector<int32_t>& seq_ids, const std::vector<int32_t>& seq_types) {
    if (cu_seqlens.empty()) cu_seqlens.push_back(0);
    for (size_t i = 0; i < seq_ids.size(); ++i) {
      ids.push_back(seq_ids[i]);
      type_ids.push_back(seq_types.empty() ? 0 : seq_types[i]);
      pos_ids.push_back(int32_t(i));
    }
    cu_seqlens.push_back(int32_t(ids.size()));
  }
};

}  // namespace engine
