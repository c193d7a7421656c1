// The sim must be able to fail: small throwaway kernels, each with one planted bug of a kind the sim
// claims to catch, and the check that the sim reports it (next to the same kernel without the bug,
// which must pass, so each test shows the difference is the bug):
//   an off-by-one tile edge (out-of-bounds shared memory: AddressSanitizer), an out-of-bounds global
//   store (AddressSanitizer), an unaligned 16-byte vector load (UBSan's alignment check), a missing
//   __syncthreads (a read of another thread's shared-memory slot before it is written: the sim
//   poisons shared memory and runs the threads of odd blocks in reverse order), a wrong mma fragment
//   index (the result differs from the plain product), barrier and warp-collective divergence (a
//   DeviceFault), launches over sm_90's limits (cudaGetLastError), a read of a cp.async tile before
//   its wait, and a CUDA graph replayed after the buffer it captured was freed (AddressSanitizer).
// Faults that abort the process (the sanitizers) run as death tests.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "../test_seed.h"
#include "cuda/launch.cuh"
#include "cuda/ptx.cuh"

namespace engine::cuda {
namespace {

constexpr int kTile = 8;

template <typename T>
T* device_array(size_t n) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(T)), cudaSuccess);
  return p;
}

std::vector<float> random_floats(size_t n) {
  std::mt19937_64 rng(pick_seed());
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// ---- an off-by-one tile edge: the tile loop writes one element past the shared tile ----

template <int EXTRA>
__global__ void transpose_tile(float* out, const float* in) {
  float* tile = dynamic_smem<float>();
  const int r = threadIdx.y, c = threadIdx.x;
  tile[c * kTile + r + (r == kTile - 1 && c == kTile - 1 ? EXTRA : 0)] = in[r * kTile + c];
  __syncthreads();
  out[r * kTile + c] = tile[r * kTile + c];
}

void run_transpose(bool planted) {
  float* in = device_array<float>(kTile * kTile);
  float* out = device_array<float>(kTile * kTile);
  const size_t smem = kTile * kTile * sizeof(float);
  if (planted)
    launch<transpose_tile<1>>(1, dim3(kTile, kTile), smem, 0, out, in);
  else
    launch<transpose_tile<0>>(1, dim3(kTile, kTile), smem, 0, out, in);
  cudaFree(in);
  cudaFree(out);
}

TEST(SimFaults, TileEdgeOffByOneOverrunsSharedMemory) {
  run_transpose(false);
  EXPECT_DEATH(run_transpose(true), "heap-buffer-overflow");
}

// ---- an out-of-bounds global store ----

__global__ void scale(float* y, const float* x, int n, int extra) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n + extra) y[i] = 2.f * x[i < n ? i : 0];
}

void run_scale(int extra) {
  const int n = 100;
  float* x = device_array<float>(n);
  float* y = device_array<float>(n);
  cudaMemset(x, 0, n * sizeof(float));
  launch<scale>(4, 32, 0, 0, y, x, n, extra);
  cudaFree(x);
  cudaFree(y);
}

TEST(SimFaults, OutOfBoundsGlobalStore) {
  run_scale(0);
  EXPECT_DEATH(run_scale(1), "heap-buffer-overflow");
}

// ---- an unaligned 16-byte vector load ----

__global__ void sum4(float* out, const float* x, int offset) {
  const float4 v = reinterpret_cast<const float4*>(x + offset)[threadIdx.x];
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

void run_sum4(int offset) {
  float* x = device_array<float>(64 + 4);
  float* out = device_array<float>(16);
  cudaMemset(x, 0, (64 + 4) * sizeof(float));
  launch<sum4>(1, 16, 0, 0, out, x, offset);
  cudaFree(x);
  cudaFree(out);
}

TEST(SimFaults, UnalignedVectorLoad) {
  run_sum4(4);
  EXPECT_DEATH(run_sum4(1), "misaligned address");
}

// ---- a missing __syncthreads: each thread reads its neighbour's slot ----

template <bool BARRIER>
__global__ void rotate(float* out, const float* in) {
  float* slot = dynamic_smem<float>();
  const int t = threadIdx.x, n = blockDim.x;
  slot[t] = in[blockIdx.x * n + t];
  if (BARRIER) __syncthreads();
  out[blockIdx.x * n + t] = slot[(t + 1) % n];
}

std::vector<float> run_rotate(bool barrier, const std::vector<float>& host) {
  const int n = 64, blocks = 2;
  float* in = device_array<float>(n * blocks);
  float* out = device_array<float>(n * blocks);
  cudaMemcpy(in, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  if (barrier)
    launch<rotate<true>>(blocks, n, n * sizeof(float), 0, out, in);
  else
    launch<rotate<false>>(blocks, n, n * sizeof(float), 0, out, in);
  std::vector<float> result(host.size());
  cudaMemcpy(result.data(), out, result.size() * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(in);
  cudaFree(out);
  return result;
}

size_t wrong_rotations(const std::vector<float>& host, const std::vector<float>& got) {
  size_t wrong = 0;
  for (int b = 0; b < 2; ++b)
    for (int t = 0; t < 64; ++t)
      if (!(got[size_t(b * 64 + t)] == host[size_t(b * 64 + (t + 1) % 64)])) ++wrong;
  return wrong;
}

TEST(SimFaults, MissingSyncthreadsReadsUnwrittenSharedMemory) {
  const std::vector<float> host = random_floats(128);
  EXPECT_EQ(wrong_rotations(host, run_rotate(true, host)), 0u);
  // Forward order (block 0): every thread but the last reads a slot not yet written (poison, NaN);
  // reverse order (block 1): only the last one does. Either way the result is wrong.
  EXPECT_GT(wrong_rotations(host, run_rotate(false, host)), 60u);
}

// ---- a wrong mma fragment index ----

// D (16x8) = A (16x16, row-major) * B (16x8, stored [n][k]) through ldmatrix and mma.sync.
template <bool SWAP>
__global__ void mma_tile(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b_nk) {
  __nv_bfloat16* sa = dynamic_smem<__nv_bfloat16>();
  __nv_bfloat16* sb = sa + 16 * 16;
  const int lane = threadIdx.x;
  for (int i = lane; i < 16 * 16; i += 32) sa[i] = a[i];
  for (int i = lane; i < 8 * 16; i += 32) sb[i] = b_nk[i];
  __syncwarp();
  uint32_t ra[4], rb[4];
  const int i = lane >> 3, r = lane & 7;
  ldsm_x4(ra, sa + ((i & 1) * 8 + r) * 16 + (i >> 1) * 8);
  // B: matrices 0 and 1 are k 0..7 and 8..15 of the 8 n rows (lanes 16..31 repeat them).
  ldsm_x4(rb, sb + r * 16 + (i & 1) * 8);
  if (SWAP) {
    const uint32_t t = ra[1];
    ra[1] = ra[2];
    ra[2] = t;
  }
  float c[4] = {0.f, 0.f, 0.f, 0.f};
  mma_bf16(c, ra, rb[0], rb[1]);
  const int g = lane >> 2, q = lane & 3;
  d[g * 8 + 2 * q] = c[0];
  d[g * 8 + 2 * q + 1] = c[1];
  d[(g + 8) * 8 + 2 * q] = c[2];
  d[(g + 8) * 8 + 2 * q + 1] = c[3];
}

double mma_max_error(bool swap) {
  const std::vector<float> fa = random_floats(16 * 16), fb = random_floats(8 * 16);
  std::vector<__nv_bfloat16> ha(fa.begin(), fa.end()), hb(fb.begin(), fb.end());
  __nv_bfloat16* a = device_array<__nv_bfloat16>(ha.size());
  __nv_bfloat16* b = device_array<__nv_bfloat16>(hb.size());
  float* d = device_array<float>(16 * 8);
  cudaMemcpy(a, ha.data(), ha.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(b, hb.data(), hb.size() * 2, cudaMemcpyHostToDevice);
  const size_t smem = (16 * 16 + 8 * 16) * 2;
  if (swap)
    launch<mma_tile<true>>(1, 32, smem, 0, d, a, b);
  else
    launch<mma_tile<false>>(1, 32, smem, 0, d, a, b);
  std::vector<float> got(16 * 8);
  cudaMemcpy(got.data(), d, got.size() * 4, cudaMemcpyDeviceToHost);
  double worst = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double want = 0;
      for (int k = 0; k < 16; ++k) want += double(float(ha[size_t(m * 16 + k)])) * double(float(hb[size_t(n * 16 + k)]));
      const double err = std::fabs(got[size_t(m * 8 + n)] - want);
      worst = std::isnan(err) ? INFINITY : std::max(worst, err);
    }
  cudaFree(a);
  cudaFree(b);
  cudaFree(d);
  return worst;
}

TEST(SimFaults, WrongMmaFragmentIndexGivesAWrongProduct) {
  EXPECT_LT(mma_max_error(false), 1e-4);  // the fragment layouts as the PTX ISA documents them
  EXPECT_GT(mma_max_error(true), 1e-2);
}

// ---- divergence ----

__global__ void half_block_barrier(float* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void early_return_then_barrier(float* out) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[threadIdx.x] = 1.f;
}

__global__ void divergent_shuffle(float* out) {
  float v = float(threadIdx.x);
  if (threadIdx.x % 2)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  else
    __syncwarp();
  out[threadIdx.x] = v;
}

__global__ void shuffle_reads_outside_its_mask(float* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, float(threadIdx.x), 20);
}

__global__ void shuffle_by_a_lane_outside_the_mask(float* out) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, float(threadIdx.x), 0);
}

template <auto Kernel>
void expect_fault(const char* what) {
  float* out = device_array<float>(64);
  try {
    launch<Kernel>(1, 32, 0, 0, out);
    ADD_FAILURE() << "no fault for " << what;
  } catch (const cudasim::DeviceFault& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
  cudaFree(out);
}

__global__ void half_warp_shuffle(float* out) {
  // Two half-warp collectives with disjoint masks are legal.
  const unsigned mask = threadIdx.x < 16 ? 0x0000ffffu : 0xffff0000u;
  out[threadIdx.x] = __shfl_xor_sync(mask, float(threadIdx.x), 1);
}

TEST(SimFaults, BarrierAndWarpDivergenceAreFaults) {
  expect_fault<half_block_barrier>("returned while");
  expect_fault<early_return_then_barrier>("__syncthreads after");
  expect_fault<divergent_shuffle>("warp divergence");
  expect_fault<shuffle_reads_outside_its_mask>("reads lane 20, which is not in the mask");
  expect_fault<shuffle_by_a_lane_outside_the_mask>("does not name the calling lane");

  float* out = device_array<float>(32);
  launch<half_warp_shuffle>(1, 32, 0, 0, out);
  std::vector<float> got(32);
  cudaMemcpy(got.data(), out, 32 * 4, cudaMemcpyDeviceToHost);
  for (int l = 0; l < 32; ++l) EXPECT_EQ(got[size_t(l)], float(l ^ 1));
  cudaFree(out);
}

// ---- launches a GPU refuses ----

__global__ void nothing(float*) {}

TEST(SimFaults, LaunchesOverTheLimitsAreRefused) {
  cudaGetLastError();
  launch<nothing>(1, 1025, 0, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  launch<nothing>(dim3(1, 65536), 32, 0, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  launch<nothing>(1, 32, 64 * 1024, 0, nullptr);  // over 48 KiB without the opt-in
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFuncSetAttribute(nothing, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024), cudaSuccess);
  launch<nothing>(1, 32, 64 * 1024, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaFuncSetAttribute(nothing, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024),
            cudaErrorInvalidValue);
}

// ---- cp.async: the tile is there after the wait, not before ----

template <bool WAIT>
__global__ void async_copy(float* out, const float* in) {
  float* tile = dynamic_smem<float>();
  cp_async16(tile + 4 * threadIdx.x, in + 4 * threadIdx.x, true);
  cp_async_commit();
  if (WAIT) cp_async_wait<0>();
  __syncthreads();
  out[threadIdx.x] = tile[4 * ((threadIdx.x + 1) % blockDim.x)];
}

TEST(SimFaults, CpAsyncTileIsReadOnlyAfterItsWait) {
  const std::vector<float> host = random_floats(128);
  float* in = device_array<float>(128);
  float* out = device_array<float>(32);
  cudaMemcpy(in, host.data(), 128 * 4, cudaMemcpyHostToDevice);
  std::vector<float> got(32);
  launch<async_copy<true>>(1, 32, 128 * 4, 0, out, in);
  cudaMemcpy(got.data(), out, 32 * 4, cudaMemcpyDeviceToHost);
  for (int t = 0; t < 32; ++t) EXPECT_EQ(got[size_t(t)], host[size_t(4 * ((t + 1) % 32))]);
  launch<async_copy<false>>(1, 32, 128 * 4, 0, out, in);
  cudaMemcpy(got.data(), out, 32 * 4, cudaMemcpyDeviceToHost);
  for (int t = 0; t < 32; ++t) EXPECT_TRUE(std::isnan(got[size_t(t)])) << t;
  cudaFree(in);
  cudaFree(out);
}

// ---- a CUDA graph keeps the pointers it captured ----

void replay_after_free() {
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  float* x = device_array<float>(32);
  float* y = device_array<float>(32);
  cudaMemset(x, 0, 32 * 4);
  cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  launch<scale>(1, 32, 0, s, y, x, 32, 0);
  cudaGraph_t graph;
  cudaStreamEndCapture(s, &graph);
  cudaGraphExec_t exec;
  cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphLaunch(exec, s);  // fine
  cudaFree(y);               // the step's buffer moved, the graph was not re-captured
  y = device_array<float>(32);
  cudaGraphLaunch(exec, s);
  cudaFree(x);
  cudaFree(y);
}

TEST(SimFaults, GraphReplayWithAStalePointer) {
  EXPECT_DEATH(replay_after_free(), "heap-use-after-free");
}

TEST(SimFaults, AllocationDuringCaptureInvalidatesIt) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, 64), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  cudaGetLastError();
  cudaStreamDestroy(s);
}

}  // namespace
}  // namespace engine::cuda
