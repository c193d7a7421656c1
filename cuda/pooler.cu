// Pooler pieces: gather of rows (each sequence's [CLS] row: out[b] = x[rows[b]]), the matching
// scatter-add for backward (dx[rows[b]] += dout[b], rows distinct so no two blocks touch the same
// row), and tanh forward / backward (dx = dy (1 - y^2)).
// Layout: x, dx act [x_rows, C]; out, dout act [B, C]; rows i32 [B] on the device; tanh over flat
// n elements. Precision: act storage, f32 math. A row index outside [0, x_rows) gathers NaN and
// scatters nothing (the CPU backend throws; the GPU cannot without a host round trip).
#include "cuda/common.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace engine::cuda {

namespace {

template <typename T>
__global__ void gather_rows_kernel(T* out, const T* x, const int32_t* rows, int64_t C, int64_t x_rows) {
  const int64_t b = blockIdx.x;
  const int32_t r = rows[b];
  const bool valid = r >= 0 && r < x_rows;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    out[b * C + c] = valid ? x[int64_t(r) * C + c] : from_float<T>(__int_as_float(0x7fffffff));
}

template <typename T>
__global__ void scatter_add_rows_kernel(T* dx, const T* dout, const int32_t* rows, int64_t C, int64_t x_rows) {
  const int64_t b = blockIdx.x;
  const int32_t r = rows[b];
  if (r < 0 || r >= x_rows) return;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    T* d = dx + int64_t(r) * C + c;
    *d = from_float<T>(to_float(*d) + to_float(dout[b * C + c]));
  }
}

template <typename T, bool BACKWARD>
__global__ void tanh_kernel(T* out, const T* a, const T* y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (BACKWARD) {
      const float yi = to_float(y[i]);
      out[i] = from_float<T>(to_float(a[i]) * (1.f - yi * yi));
    } else {
      out[i] = from_float<T>(tanhf(to_float(a[i])));
    }
  }
}

int threads_for(int64_t C) { return int(C >= 256 ? 256 : ceil_div(C, kWarp) * kWarp); }

unsigned blocks_for(int64_t n) {
  const int64_t b = ceil_div(n, 256);
  return unsigned(b < 1 ? 1 : (b > 65535 * 8 ? 65535 * 8 : b));
}

using bf16 = __nv_bfloat16;

}  // namespace

void gather_rows(DType act, void* out, const void* x, const int32_t* rows, int64_t B, int64_t C, int64_t x_rows,
                 cudaStream_t stream) {
  if (B == 0 || C == 0) return;
  if (act == DType::bf16)
    launch<gather_rows_kernel<bf16>>(unsigned(B), threads_for(C), 0, stream, static_cast<bf16*>(out),
                                     static_cast<const bf16*>(x), rows, C, x_rows);
  else
    launch<gather_rows_kernel<float>>(unsigned(B), threads_for(C), 0, stream, static_cast<float*>(out),
                                      static_cast<const float*>(x), rows, C, x_rows);
  CUDA_CHECK_LAUNCH();
}

void scatter_add_rows(DType act, void* dx, const void* dout, const int32_t* rows, int64_t B, int64_t C,
                      int64_t x_rows, cudaStream_t stream) {
  if (B == 0 || C == 0) return;
  if (act == DType::bf16)
    launch<scatter_add_rows_kernel<bf16>>(unsigned(B), threads_for(C), 0, stream,
        static_cast<bf16*>(dx), static_cast<const bf16*>(dout), rows, C, x_rows);
  else
    launch<scatter_add_rows_kernel<float>>(unsigned(B), threads_for(C), 0, stream,
        static_cast<float*>(dx), static_cast<const float*>(dout), rows, C, x_rows);
  CUDA_CHECK_LAUNCH();
}

void tanh_forward(DType act, void* y, const void* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (act == DType::bf16)
    launch<tanh_kernel<bf16, false>>(blocks_for(n), 256, 0, stream, static_cast<bf16*>(y),
                                     static_cast<const bf16*>(x), nullptr, n);
  else
    launch<tanh_kernel<float, false>>(blocks_for(n), 256, 0, stream, static_cast<float*>(y),
                                      static_cast<const float*>(x), nullptr, n);
  CUDA_CHECK_LAUNCH();
}

void tanh_backward(DType act, void* dx, const void* dy, const void* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (act == DType::bf16)
    launch<tanh_kernel<bf16, true>>(blocks_for(n), 256, 0, stream, static_cast<bf16*>(dx),
                                    static_cast<const bf16*>(dy), static_cast<const bf16*>(y), n);
  else
    launch<tanh_kernel<float, true>>(blocks_for(n), 256, 0, stream,
        static_cast<float*>(dx), static_cast<const float*>(dy), static_cast<const float*>(y), n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace engine::cuda
