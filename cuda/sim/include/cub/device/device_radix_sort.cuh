// cub::DeviceRadixSort::SortPairs as the sim provides it: the pointer (not DoubleBuffer) overload
// cuda/embeddings.cu calls, with CUB's documented semantics and calling convention:
//   - d_temp_storage == nullptr: only writes the temporary storage it needs to temp_storage_bytes;
//   - otherwise, in stream order (cudasim::enqueue): a stable sort of the (key, value) pairs by the
//     key bits [begin_bit, end_bit), keys and values written to the output ranges (whole keys, as
//     CUB writes them).
// Rejected: a temp_storage_bytes smaller than the query gives (cudaErrorInvalidValue, as CUB's
// AliasTemporaries returns), a negative count, a bit range outside the key. Faults (thrown as
// cudasim::DeviceFault when the work runs, as a GPU would fault): a range outside any cudaMalloc
// block, and input and output ranges that overlap (CUB's documented precondition).
// Keys: unsigned integers only (the sim does not do CUB's signed / float bit twiddling).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace cub {

namespace sim_detail {

inline size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// What CUB's two-buffer radix sort needs: alternate key and value buffers plus a histogram of 256
// counters per 8-bit pass. More bits never need less, so a query over all the bits covers a sort
// over fewer (cuda/embeddings.cu queries with 0..32 and sorts with fewer).
template <typename KeyT, typename ValueT>
size_t temp_bytes(int64_t num_items, int begin_bit, int end_bit) {
  const size_t n = size_t(num_items);
  const size_t passes = size_t((end_bit - begin_bit + 7) / 8);
  return align256(n * sizeof(KeyT)) + align256(n * sizeof(ValueT)) + align256(passes * 256 * sizeof(int64_t)) + 256;
}

[[noreturn]] inline void fault(const std::string& what) {
  throw ::cudasim::DeviceFault("cub::DeviceRadixSort::SortPairs: " + what);
}

inline void check_range(const char* name, const void* p, size_t bytes) {
  if (bytes && !::cudasim::is_device_range(p, bytes))
    fault(std::string(name) + " (" + std::to_string(bytes) + " bytes) is not inside one cudaMalloc block");
}

inline bool overlap(const void* a, const void* b, size_t bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return bytes && x < y + bytes && y < x + bytes;
}

template <typename KeyT, typename ValueT>
void sort_pairs(void* temp, size_t temp_needed, const KeyT* keys_in, KeyT* keys_out, const ValueT* values_in,
                ValueT* values_out, int64_t n, int begin_bit, int end_bit) {
  const size_t kb = size_t(n) * sizeof(KeyT), vb = size_t(n) * sizeof(ValueT);
  check_range("d_temp_storage", temp, temp_needed);
  check_range("d_keys_in", keys_in, kb);
  check_range("d_keys_out", keys_out, kb);
  check_range("d_values_in", values_in, vb);
  check_range("d_values_out", values_out, vb);
  if (overlap(keys_in, keys_out, kb) || overlap(values_in, values_out, vb))
    fault("input and output ranges overlap (CUB requires them apart)");
  const int bits = end_bit - begin_bit;
  const KeyT mask = bits >= int(sizeof(KeyT) * 8) ? KeyT(~KeyT(0)) : KeyT((KeyT(1) << bits) - 1);
  auto digit = [&](KeyT k) { return KeyT(bits == 0 ? 0 : (k >> begin_bit) & mask); };
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
  // Stable: equal digits keep their input order, as an LSD radix sort does.
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return digit(keys_in[x]) < digit(keys_in[y]); });
  for (int64_t i = 0; i < n; ++i) {
    keys_out[i] = keys_in[order[size_t(i)]];
    values_out[i] = values_in[order[size_t(i)]];
  }
}

}  // namespace sim_detail

struct DeviceRadixSort {
  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const KeyT* d_keys_in,
                               KeyT* d_keys_out, const ValueT* d_values_in, ValueT* d_values_out, NumItemsT num_items,
                               int begin_bit = 0, int end_bit = sizeof(KeyT) * 8, cudaStream_t stream = 0) {
    static_assert(std::is_integral<KeyT>::value && std::is_unsigned<KeyT>::value,
                  "the sim's SortPairs sorts unsigned integer keys only");
    const int64_t n = int64_t(num_items);
    if (n < 0 || begin_bit < 0 || end_bit > int(sizeof(KeyT) * 8) || begin_bit > end_bit) return cudaErrorInvalidValue;
    const size_t needed = sim_detail::temp_bytes<KeyT, ValueT>(n, begin_bit, end_bit);
    if (!d_temp_storage) {
      temp_storage_bytes = needed;
      return cudaSuccess;
    }
    if (temp_storage_bytes < needed) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    ::cudasim::enqueue(stream, [=] {
      sim_detail::sort_pairs(d_temp_storage, needed, d_keys_in, d_keys_out, d_values_in, d_values_out, n, begin_bit,
                             end_bit);
    });
    return cudaSuccess;
  }
};

}  // namespace cub
