// Deterministic column sums, the second half of every parameter-gradient reduction that has to
// give bitwise the same result run after run (layernorm dgamma/dbeta, embedding tables, bias
// gradients): no float atomics, every sum in an order fixed by the sizes alone.
//   column_sum_f32:            out[c] (+)= sum_r in[r * ld + c]                      (f32)
//   column_sum_act_accumulate: out[c] += sum_r x[r, c]  for an act (f32/bf16) matrix, in two passes:
//                              fixed row chunks -> f32 partials -> column_sum_f32.
// Layout: row-major, columns contiguous. Precision: f32 sums (the partials keep them short).
// Block shape 32 x 8: 32 consecutive columns per block (coalesced rows), 8 row groups that each
// sum a fixed strided subset of rows, then combined in group order through shared memory.
#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

constexpr int kCols = 32;
constexpr int kGroups = 8;
constexpr int64_t kChunkRows = 256;  // rows per partial in column_sum_act (fixed: sets the summation order)

template <typename T>
__device__ void column_sum_tile(float* out, const T* in, int64_t row_begin, int64_t row_end, int64_t cols,
                                int64_t ld, bool accumulate) {
  __shared__ float part[kGroups][kCols];
  const int64_t c = int64_t(blockIdx.x) * kCols + threadIdx.x;
  float acc = 0.f;
  if (c < cols) {
    int64_t r = row_begin + threadIdx.y;
    // Four independent loads in flight per thread; the additions stay in row order.
    for (; r + 3 * kGroups < row_end; r += 4 * kGroups) {
      float a0 = to_float(in[r * ld + c]), a1 = to_float(in[(r + kGroups) * ld + c]);
      float a2 = to_float(in[(r + 2 * kGroups) * ld + c]), a3 = to_float(in[(r + 3 * kGroups) * ld + c]);
      acc += a0;
      acc += a1;
      acc += a2;
      acc += a3;
    }
    for (; r < row_end; r += kGroups) acc += to_float(in[r * ld + c]);
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float total = 0.f;
#pragma unroll
    for (int g = 0; g < kGroups; ++g) total += part[g][threadIdx.x];
    out[c] = accumulate ? out[c] + total : total;
  }
}

__global__ void column_sum_f32_kernel(float* out, const float* in, int64_t rows, int64_t cols, int64_t ld,
                                      bool accumulate) {
  column_sum_tile(out, in, 0, rows, cols, ld, accumulate);
}

// blockIdx.y = chunk of kChunkRows rows; writes partials[chunk, c].
template <typename T>
__global__ void column_partials_kernel(float* partials, const T* x, int64_t rows, int64_t cols) {
  const int64_t begin = int64_t(blockIdx.y) * kChunkRows;
  const int64_t end = begin + kChunkRows < rows ? begin + kChunkRows : rows;
  column_sum_tile(partials + int64_t(blockIdx.y) * cols, x, begin, end, cols, cols, false);
}

}  // namespace

void column_sum_f32(float* out, const float* in, int64_t rows, int64_t cols, int64_t ld, bool accumulate,
                    cudaStream_t stream) {
  if (cols == 0) return;
  dim3 block(kCols, kGroups), grid(unsigned(ceil_div(cols, kCols)));
  launch<column_sum_f32_kernel>(grid, block, 0, stream, out, in, rows, cols, ld, accumulate);
  CUDA_CHECK_LAUNCH();
}

size_t column_sum_act_scratch_bytes(int64_t rows, int64_t cols) {
  return size_t(ceil_div(rows, kChunkRows)) * size_t(cols) * sizeof(float);
}

void column_sum_act_accumulate(float* out, DType act, const void* x, int64_t rows, int64_t cols, void* scratch,
                               cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const int64_t chunks = ceil_div(rows, kChunkRows);
  ENGINE_CHECK(chunks <= 65535, "column_sum: ", rows, " rows is more than this kernel's grid takes");
  float* partials = static_cast<float*>(scratch);
  dim3 block(kCols, kGroups), grid(unsigned(ceil_div(cols, kCols)), unsigned(chunks));
  if (act == DType::bf16)
    launch<column_partials_kernel<__nv_bfloat16>>(grid, block, 0, stream, partials, static_cast<const __nv_bfloat16*>(x), rows, cols);
  else
    launch<column_partials_kernel<float>>(grid, block, 0, stream, partials, static_cast<const float*>(x), rows, cols);
  CUDA_CHECK_LAUNCH();
  column_sum_f32(out, partials, chunks, cols, cols, true, stream);
}

}  // namespace engine::cuda
