// Embeddings + layernorm, forward and backward.
//   forward   s[t] = word[ids[t]] + pos[pos_ids[t]] + type[type_ids[t]]   (rounded to act, saved)
//             y[t] = layernorm(s[t]) with gamma, beta; mean, rstd f32 [T]
//   backward  ds = layernorm backward of dy (f32 scratch [T, H]); dgamma, dbeta +=;
//             dword[id] += sum of ds over the tokens with that id (same for dpos, dtype)
// Layout: ids, pos_ids, type_ids i32 [T] on the device; tables act [rows, H]; table gradients f32.
// Precision: f32 sums, statistics as in layernorm_row.cuh.
// Determinism of the table gradients (no float atomics): the (id, token) pairs are sorted by id
// with CUB's stable radix sort, so each id's tokens come out in token order; one block per run of
// equal ids then adds that run's ds rows in that order. Tiny tables (token types: 2 rows) would
// make one very long run, so they take a dense path instead: fixed token chunks write per-row
// partial sums, and column_sum_f32 adds the chunks in order.
// An id outside its table gives a NaN row in forward (visible, never an out-of-bounds read) and
// is skipped in backward.
#include <algorithm>
#include <initializer_list>
#include <cub/device/device_radix_sort.cuh>

#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/layernorm_row.cuh"

namespace engine::cuda {

namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = kWarpsPerBlock * kWarp;
constexpr int64_t kDenseTableRows = 8;     // tables this small take the dense path
constexpr int64_t kDenseChunkTokens = 64;  // tokens per partial on the dense path (fixed)

template <typename T, typename Shape>
__global__ void __launch_bounds__(kThreads) embeddings_forward_kernel(
    T* y, T* s, float* mean, float* rstd, const int32_t* ids, const int32_t* pos_ids, const int32_t* type_ids,
    const T* word, int word_rows, const T* pos, int pos_rows, const T* type, int type_rows, const T* gamma,
    const T* beta, int64_t rows, int H, float eps) {
  constexpr int VEC = Shape::vec, ITEMS = Shape::items;
  const int lane = threadIdx.x % kWarp;
  const int64_t row = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;
  const int id = ids[row], p = pos_ids[row], ty = type_ids[row];
  const bool valid = id >= 0 && id < word_rows && p >= 0 && p < pos_rows && ty >= 0 && ty < type_rows;
  const T* w_row = word + int64_t(valid ? id : 0) * H;
  const T* p_row = pos + int64_t(valid ? p : 0) * H;
  const T* t_row = type + int64_t(valid ? ty : 0) * H;
  const int64_t base = row * H;
  float v[ITEMS][VEC];
#pragma unroll
  for (int it = 0; it < ITEMS; ++it) {
    const int c = Shape::col(it, lane);
    if (c >= H) continue;
    float a[VEC], b[VEC], d[VEC];
    load_vec<VEC>(a, w_row + c);
    load_vec<VEC>(b, p_row + c);
    load_vec<VEC>(d, t_row + c);
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[it][k] = valid ? round_to<T>(a[k] + b[k] + d[k]) : __int_as_float(0x7fffffff);
    store_vec<VEC>(s + base + c, v[it]);
  }
  layernorm_row_forward<T, Shape>(v, y + base, mean + row, rstd + row, gamma, beta, H, eps, lane);
}

__global__ void iota_kernel(int32_t* v, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) v[i] = int32_t(i);
}

// One block per sorted position i; only run starts (first of a run of equal ids) work. The block
// adds ds rows of the run's tokens, in token order, into table[id]. Threads cover the columns
// with VEC-wide f32 vectors.
template <int VEC>
__global__ void run_sum_kernel(float* table, int64_t table_rows, const float* ds, const uint32_t* sorted_ids,
                               const int32_t* sorted_tokens, int64_t T, int H) {
  const int64_t i = blockIdx.x;
  const uint32_t id = sorted_ids[i];
  if (i > 0 && sorted_ids[i - 1] == id) return;
  if (id >= uint64_t(table_rows)) return;  // invalid id (forward made it NaN)
  int64_t end = i + 1;
  while (end < T && sorted_ids[end] == id) ++end;
  float* out = table + int64_t(id) * H;
  for (int c = threadIdx.x * VEC; c < H; c += blockDim.x * VEC) {
    float acc[VEC] = {};
    int64_t j = i;
    // Two rows in flight; the additions stay in token order.
    for (; j + 1 < end; j += 2) {
      float a[VEC], b[VEC];
      load_vec<VEC>(a, ds + int64_t(sorted_tokens[j]) * H + c);
      load_vec<VEC>(b, ds + int64_t(sorted_tokens[j + 1]) * H + c);
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] = (acc[k] + a[k]) + b[k];
    }
    if (j < end) {
      float a[VEC];
      load_vec<VEC>(a, ds + int64_t(sorted_tokens[j]) * H + c);
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] += a[k];
    }
    float cur[VEC];
    load_vec<VEC>(cur, out + c);
#pragma unroll
    for (int k = 0; k < VEC; ++k) cur[k] += acc[k];
    store_vec<VEC>(out + c, cur);
  }
}

// Dense path for tiny tables: block b sums tokens [b * kDenseChunkTokens, ...) per table row,
// writing partials[b, r, c] (zero for rows with no token in the chunk).
__global__ void dense_partials_kernel(float* partials, const float* ds, const int32_t* ids, int table_rows,
                                      int64_t T, int H) {
  const int64_t begin = int64_t(blockIdx.x) * kDenseChunkTokens;
  const int64_t end = begin + kDenseChunkTokens < T ? begin + kDenseChunkTokens : T;
  float* out = partials + int64_t(blockIdx.x) * table_rows * H;
  for (int r = 0; r < table_rows; ++r)
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
      float acc = 0.f;
      for (int64_t t = begin; t < end; ++t)
        if (ids[t] == r) acc += ds[t * H + c];
      out[int64_t(r) * H + c] = acc;
    }
}

int sort_bits(int64_t rows) {
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) < rows) ++bits;
  return bits;
}

size_t sort_temp_bytes(int64_t T) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                             static_cast<uint32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), int(T), 0, 32));
  return bytes;
}

// Carves the backward's scratch: ds | partials | sorted ids | token iota | sorted tokens | CUB temp.
struct BackwardScratch {
  float* ds;
  float* partials;
  uint32_t* sorted_ids;
  int32_t* tokens;
  int32_t* sorted_tokens;
  void* sort_temp;
  size_t sort_temp_bytes;
  size_t total;
};

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// Rows of the largest table that takes the dense path (0 if none does): any of the three may.
int64_t dense_rows(int64_t word_rows, int64_t pos_rows, int64_t type_rows) {
  int64_t rows = 0;
  for (int64_t r : {word_rows, pos_rows, type_rows})
    if (r <= kDenseTableRows && r > rows) rows = r;
  return rows;
}

BackwardScratch carve(void* base, int64_t T, int64_t H, int64_t dense_table_rows) {
  BackwardScratch s{};
  char* p = static_cast<char*>(base);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* q = p ? p + off : nullptr;
    off += align256(bytes);
    return q;
  };
  s.ds = reinterpret_cast<float*>(take(size_t(T * H) * sizeof(float)));
  const size_t ln_partials = layernorm_backward_scratch_bytes(T, H);
  const size_t dense_partials =
      size_t(ceil_div(T, kDenseChunkTokens)) * size_t(dense_table_rows) * size_t(H) * sizeof(float);
  s.partials = reinterpret_cast<float*>(take(ln_partials > dense_partials ? ln_partials : dense_partials));
  s.sorted_ids = reinterpret_cast<uint32_t*>(take(size_t(T) * 4));
  s.tokens = reinterpret_cast<int32_t*>(take(size_t(T) * 4));
  s.sorted_tokens = reinterpret_cast<int32_t*>(take(size_t(T) * 4));
  s.sort_temp_bytes = sort_temp_bytes(T);
  s.sort_temp = take(s.sort_temp_bytes);
  s.total = off;
  return s;
}

void table_backward(float* table, int64_t rows, const int32_t* ids, const BackwardScratch& s, int64_t T, int64_t H,
                    cudaStream_t stream) {
  if (rows <= kDenseTableRows) {
    const int64_t chunks = ceil_div(T, kDenseChunkTokens);
    launch<dense_partials_kernel>(unsigned(chunks), 256, 0, stream, s.partials, s.ds, ids, int(rows), T, int(H));
    CUDA_CHECK_LAUNCH();
    column_sum_f32(table, s.partials, chunks, rows * H, rows * H, true, stream);
    return;
  }
  size_t temp_bytes = s.sort_temp_bytes;
  // The ids are non-negative, so sorting them as unsigned on their low bits keeps their order;
  // an invalid (negative) id sorts last as a huge unsigned value and is skipped.
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s.sort_temp, temp_bytes, reinterpret_cast<const uint32_t*>(ids),
                                             s.sorted_ids, s.tokens, s.sorted_tokens, int(T), 0,
                                             sort_bits(rows), stream));
  const bool vec = H % 4 == 0 && aligned_to(table, 16);  // ds rows are (scratch is 256-aligned)
  const int threads = int(std::min<int64_t>(256, ceil_div(ceil_div(H, vec ? 4 : 1), kWarp) * kWarp));
  if (vec)
    launch<run_sum_kernel<4>>(unsigned(T), threads, 0, stream, table, rows, s.ds, s.sorted_ids, s.sorted_tokens, T, int(H));
  else
    launch<run_sum_kernel<1>>(unsigned(T), threads, 0, stream, table, rows, s.ds, s.sorted_ids, s.sorted_tokens, T, int(H));
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void forward(T* y, T* s, float* mean, float* rstd, const int32_t* ids, const int32_t* pos_ids,
             const int32_t* type_ids, const T* word, int64_t word_rows, const T* pos, int64_t pos_rows, const T* type,
             int64_t type_rows, const T* gamma, const T* beta, int64_t rows, int64_t H, float eps,
             cudaStream_t stream) {
  const bool vec_ok = aligned_to(y, 16) && aligned_to(s, 16) && aligned_to(word, 16) && aligned_to(pos, 16) &&
                      aligned_to(type, 16) && aligned_to(gamma, 16) && aligned_to(beta, 16);
  const unsigned grid = unsigned(ceil_div(rows, kWarpsPerBlock));
  with_row_shape<T>(H, vec_ok, [&](auto shape) {
    launch<embeddings_forward_kernel<T, decltype(shape)>>(grid, kThreads, 0, stream,
        y, s, mean, rstd, ids, pos_ids, type_ids, word, int(word_rows), pos, int(pos_rows), type, int(type_rows),
        gamma, beta, rows, int(H), eps);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void embeddings_forward(DType act, void* y, void* s, float* mean, float* rstd, const int32_t* ids,
                        const int32_t* pos_ids, const int32_t* type_ids, const void* word, int64_t word_rows,
                        const void* pos, int64_t pos_rows, const void* type, int64_t type_rows, const void* gamma,
                        const void* beta, int64_t T, int64_t H, float eps, cudaStream_t stream) {
  if (T == 0) return;
  using bf16 = __nv_bfloat16;
  if (act == DType::bf16)
    forward(static_cast<bf16*>(y), static_cast<bf16*>(s), mean, rstd, ids, pos_ids, type_ids,
            static_cast<const bf16*>(word), word_rows, static_cast<const bf16*>(pos), pos_rows,
            static_cast<const bf16*>(type), type_rows, static_cast<const bf16*>(gamma),
            static_cast<const bf16*>(beta), T, H, eps, stream);
  else
    forward(static_cast<float*>(y), static_cast<float*>(s), mean, rstd, ids, pos_ids, type_ids,
            static_cast<const float*>(word), word_rows, static_cast<const float*>(pos), pos_rows,
            static_cast<const float*>(type), type_rows, static_cast<const float*>(gamma),
            static_cast<const float*>(beta), T, H, eps, stream);
}

size_t embeddings_backward_scratch_bytes(int64_t T, int64_t H, int64_t word_rows, int64_t pos_rows,
                                         int64_t type_rows) {
  return carve(nullptr, T, H, dense_rows(word_rows, pos_rows, type_rows)).total;
}

void embeddings_backward(DType act, float* dword, int64_t word_rows, float* dpos, int64_t pos_rows, float* dtype,
                         int64_t type_rows, float* dgamma, float* dbeta, const void* dy, const void* s,
                         const float* mean, const float* rstd, const void* gamma, const int32_t* ids,
                         const int32_t* pos_ids, const int32_t* type_ids, int64_t T, int64_t H, void* scratch,
                         size_t scratch_bytes, cudaStream_t stream) {
  if (T == 0) return;
  BackwardScratch sc = carve(scratch, T, H, dense_rows(word_rows, pos_rows, type_rows));
  ENGINE_CHECK(sc.total <= scratch_bytes, "embeddings_backward: scratch of ", scratch_bytes, " bytes, needs ",
               sc.total);
  layernorm_backward_f32_ds(act, sc.ds, dgamma, dbeta, dy, s, mean, rstd, gamma, T, H, sc.partials, stream);
  launch<iota_kernel>(unsigned(ceil_div(T, 256)), 256, 0, stream, sc.tokens, T);
  CUDA_CHECK_LAUNCH();
  table_backward(dword, word_rows, ids, sc, T, H, stream);
  table_backward(dpos, pos_rows, pos_ids, sc, T, H, stream);
  table_backward(dtype, type_rows, type_ids, sc, T, H, stream);
}

}  // namespace engine::cuda
