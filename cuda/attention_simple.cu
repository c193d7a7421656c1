// The first correct attention on the GPU ("simple"): varlen multi-head self-attention, forward
// and backward, written for clarity; the GPU reference the fused kernels are checked against.
//   S = scale q k^T,  lse = logsumexp(S) per row,  P = exp(S - lse),  out = dropout(P) v
//   backward: dP = dropout(dout v^T),  D = sum_j P dP,  dS = P (dP - D),
//             dq = scale dS k,  dk = scale dS^T q,  dv = dropout(P)^T dout
// Layout (cuda/attention.h): qkv act [T, 3H] = [q | k | v], head h at columns h*d .. h*d+d-1 of
// each part; out act [T, H]; lse f32 [T, heads]; cu_seqlens i32 [B+1] on the device (each
// block finds its sequence by binary search: no host copy). Probability dropout uses
// attention_dropout_index(query token, head, heads, key index within its sequence).
// Precision: f32 throughout (scores, exponentials, sums), act storage.
// Parallelism: one block per (token, head). Forward and dq: the token is the query, scores over
// all keys of its sequence live in shared memory. dk/dv: the token is the key and the block runs
// over all queries of its sequence. Every output element is written by exactly one thread, in a
// fixed order: deterministic, no atomics. Workspace: D, f32 [T, heads].
#include "cuda/attention.h"
#include "cuda/common.cuh"
#include "cuda/cuda_check.h"

namespace engine::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kMaxSeqlen = 16384;  // shared memory holds two f32 rows of this length at most

struct Sequence {
  int64_t start, len;
};

__device__ Sequence find_sequence(const int32_t* cu, int B, int64_t t) {
  int lo = 0, hi = B - 1;  // the last b with cu[b] <= t
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (cu[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return Sequence{cu[lo], int64_t(cu[lo + 1]) - cu[lo]};
}

template <typename T>
__device__ float dot_head(const float* a_smem, const T* b, int d) {
  float acc = 0.f;
  for (int e = 0; e < d; ++e) acc += a_smem[e] * to_float(b[e]);
  return acc;
}

struct Dims {
  int64_t T;
  int B, heads, d, H;
  float scale;
  uint32_t threshold;
  float keep_scale;
  DropoutRng rng;
};

__device__ __forceinline__ float drop_factor(const Dims& m, int64_t q_token, int h, int64_t key) {
  if (m.threshold == 0u) return 1.f;
  return dropout_keep(m.rng, attention_dropout_index(q_token, h, m.heads, int(key)), m.threshold) ? m.keep_scale
                                                                                                 : 0.f;
}

// grid (T, heads). smem: q [d] | p [len].
template <typename T>
__global__ void __launch_bounds__(kThreads) forward_kernel(T* out, float* lse, const T* qkv, const int32_t* cu,
                                                           Dims m) {
  float* smem = dynamic_smem<float>();
  __shared__ float red[kWarp];
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const Sequence seq = find_sequence(cu, m.B, t);
  const int64_t stride = 3 * int64_t(m.H);
  float* q = smem;
  float* p = smem + m.d;
  for (int e = threadIdx.x; e < m.d; e += blockDim.x) q[e] = to_float(qkv[t * stride + h * m.d + e]);
  __syncthreads();
  const T* k0 = qkv + seq.start * stride + m.H + h * m.d;
  const T* v0 = qkv + seq.start * stride + 2 * m.H + h * m.d;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < seq.len; j += blockDim.x) {
    p[j] = m.scale * dot_head(q, k0 + j * stride, m.d);
    mx = fmaxf(mx, p[j]);
  }
  mx = block_max(mx, red);
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < seq.len; j += blockDim.x) sum += expf(p[j] - mx);
  sum = block_sum(sum, red);
  const float row_lse = mx + logf(sum);
  for (int64_t j = threadIdx.x; j < seq.len; j += blockDim.x) p[j] = expf(p[j] - row_lse) * drop_factor(m, t, h, j);
  __syncthreads();
  for (int e = threadIdx.x; e < m.d; e += blockDim.x) {
    float acc = 0.f;
    for (int64_t j = 0; j < seq.len; ++j) acc += p[j] * to_float(v0[j * stride + e]);
    out[t * m.H + h * m.d + e] = from_float<T>(acc);
  }
  if (threadIdx.x == 0) lse[t * m.heads + h] = row_lse;
}

// grid (T, heads): token t as the query. Writes dq and D[t, h]. smem: q [d] | dout [d] | P [len] | dP [len].
template <typename T>
__global__ void __launch_bounds__(kThreads) dq_kernel(T* dqkv, float* D, const T* qkv, const T* dout,
                                                      const float* lse, const int32_t* cu, Dims m) {
  float* smem = dynamic_smem<float>();
  __shared__ float red[kWarp];
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const Sequence seq = find_sequence(cu, m.B, t);
  const int64_t stride = 3 * int64_t(m.H);
  float* q = smem;
  float* go = q + m.d;
  float* P = go + m.d;
  float* dP = P + seq.len;
  for (int e = threadIdx.x; e < m.d; e += blockDim.x) {
    q[e] = to_float(qkv[t * stride + h * m.d + e]);
    go[e] = to_float(dout[t * m.H + h * m.d + e]);
  }
  __syncthreads();
  const T* k0 = qkv + seq.start * stride + m.H + h * m.d;
  const T* v0 = qkv + seq.start * stride + 2 * m.H + h * m.d;
  const float row_lse = lse[t * m.heads + h];
  float part = 0.f;
  for (int64_t j = threadIdx.x; j < seq.len; j += blockDim.x) {
    P[j] = expf(m.scale * dot_head(q, k0 + j * stride, m.d) - row_lse);
    dP[j] = dot_head(go, v0 + j * stride, m.d) * drop_factor(m, t, h, j);
    part += P[j] * dP[j];
  }
  const float Dt = block_sum(part, red);  // also a barrier: P, dP complete
  for (int e = threadIdx.x; e < m.d; e += blockDim.x) {
    float acc = 0.f;
    for (int64_t j = 0; j < seq.len; ++j) acc += P[j] * (dP[j] - Dt) * to_float(k0[j * stride + e]);
    dqkv[t * stride + h * m.d + e] = from_float<T>(m.scale * acc);
  }
  if (threadIdx.x == 0) D[t * m.heads + h] = Dt;
}

// grid (T, heads): token t as the key. Writes dk, dv. smem: k [d] | v [d] | dS [len] | Pd [len].
template <typename T>
__global__ void __launch_bounds__(kThreads) dkv_kernel(T* dqkv, const float* D, const T* qkv, const T* dout,
                                                       const float* lse, const int32_t* cu, Dims m) {
  float* smem = dynamic_smem<float>();
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y;
  const Sequence seq = find_sequence(cu, m.B, t);
  const int64_t stride = 3 * int64_t(m.H);
  const int64_t key = t - seq.start;
  float* k = smem;
  float* v = k + m.d;
  float* dS = v + m.d;
  float* Pd = dS + seq.len;
  for (int e = threadIdx.x; e < m.d; e += blockDim.x) {
    k[e] = to_float(qkv[t * stride + m.H + h * m.d + e]);
    v[e] = to_float(qkv[t * stride + 2 * m.H + h * m.d + e]);
  }
  __syncthreads();
  const T* q0 = qkv + seq.start * stride + h * m.d;
  const T* go0 = dout + seq.start * m.H + h * m.d;
  for (int64_t i = threadIdx.x; i < seq.len; i += blockDim.x) {
    const int64_t qt = seq.start + i;
    const float P = expf(m.scale * dot_head(k, q0 + i * stride, m.d) - lse[qt * m.heads + h]);
    const float f = drop_factor(m, qt, h, key);
    const float dP = dot_head(v, go0 + i * m.H, m.d) * f;
    dS[i] = P * (dP - D[qt * m.heads + h]);
    Pd[i] = P * f;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < m.d; e += blockDim.x) {
    float dk = 0.f, dv = 0.f;
    for (int64_t i = 0; i < seq.len; ++i) {
      dk += dS[i] * to_float(q0[i * stride + e]);
      dv += Pd[i] * to_float(go0[i * m.H + e]);
    }
    dqkv[t * stride + m.H + h * m.d + e] = from_float<T>(m.scale * dk);
    dqkv[t * stride + 2 * m.H + h * m.d + e] = from_float<T>(dv);
  }
}

Dims dims_of(const AttentionArgs& a) {
  ENGINE_CHECK(a.heads > 0 && a.head_dim > 0, "attention (simple): heads ", a.heads, ", head_dim ", a.head_dim);
  ENGINE_CHECK(a.max_seqlen <= kMaxSeqlen, "attention (simple): max_seqlen ", a.max_seqlen, " > ", kMaxSeqlen);
  ENGINE_CHECK(a.tokens <= 0x7FFFFFFF, "attention (simple): ", a.tokens, " tokens");
  const float keep_scale = float(1.0 / (1.0 - double(a.dropout_p)));
  return Dims{a.tokens, a.sequences, a.heads, a.head_dim, a.heads * a.head_dim, a.scale,
              dropout_threshold(a.dropout_p), keep_scale, a.rng};
}

template <typename K>
void allow_smem(K kernel, size_t bytes) {
  if (bytes > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <typename T>
void forward(const AttentionArgs& a, cudaStream_t stream) {
  const Dims m = dims_of(a);
  const size_t smem = size_t(m.d + a.max_seqlen) * sizeof(float);
  allow_smem(forward_kernel<T>, smem);
  launch<forward_kernel<T>>(dim3(unsigned(a.tokens), unsigned(a.heads)), kThreads, smem, stream,
      static_cast<T*>(a.out), a.lse, static_cast<const T*>(a.qkv), a.cu_seqlens, m);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void backward(const AttentionArgs& a, cudaStream_t stream) {
  const Dims m = dims_of(a);
  ENGINE_CHECK(a.workspace_bytes >= attention_simple_workspace_bytes(a), "attention (simple): workspace of ",
               a.workspace_bytes, " bytes, needs ", attention_simple_workspace_bytes(a));
  float* D = static_cast<float*>(a.workspace);
  const size_t smem = size_t(2 * m.d + 2 * a.max_seqlen) * sizeof(float);
  const dim3 grid(unsigned(a.tokens), unsigned(a.heads));
  allow_smem(dq_kernel<T>, smem);
  allow_smem(dkv_kernel<T>, smem);
  launch<dq_kernel<T>>(grid, kThreads, smem, stream, static_cast<T*>(a.dqkv), D, static_cast<const T*>(a.qkv),
                                                 static_cast<const T*>(a.dout), a.lse, a.cu_seqlens, m);
  CUDA_CHECK_LAUNCH();
  launch<dkv_kernel<T>>(grid, kThreads, smem, stream, static_cast<T*>(a.dqkv), D, static_cast<const T*>(a.qkv),
                                                  static_cast<const T*>(a.dout), a.lse, a.cu_seqlens, m);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

size_t attention_simple_workspace_bytes(const AttentionArgs& a) {
  return size_t(a.tokens) * size_t(a.heads) * sizeof(float);
}

void attention_simple_forward(const AttentionArgs& a, cudaStream_t stream) {
  if (a.tokens == 0) return;
  if (a.bf16) forward<__nv_bfloat16>(a, stream);
  else forward<float>(a, stream);
}

void attention_simple_backward(const AttentionArgs& a, cudaStream_t stream) {
  if (a.tokens == 0) return;
  if (a.bf16) backward<__nv_bfloat16>(a, stream);
  else backward<float>(a, stream);
}

}  // namespace engine::cuda
