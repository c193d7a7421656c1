// The NCCL gradient reducer: engine/dist/communicator.h's DeviceReducer over the GPUs of a
// data-parallel job. Built as its own shared library, libengine_nccl.so, the only part of the engine
// linked to libnccl; a distributed run on the CUDA backend dlopen()s it (engine/dist/world.cpp), so a
// single-GPU run needs no NCCL. Kept out of the sim (cuda/sim/ emulates no NCCL): it lives in this
// subfolder, which neither cuda/'s nor the sim's source glob reads.
//
// Set-up: rank 0 makes the NCCL unique id and broadcasts it over MPI (the host communicator), then
// every rank joins with ncclCommInitRank on GPU local_rank. A whole-buffer reduction
// (--dist-overlap off) waits for all work queued on the device, then all-reduces the flat f32 buffer
// in place on this reducer's stream. A bucket's (engine/dist/grad_sync.h) is queued on this stream
// behind an event recorded on the backend's stream when its layer's backward has been queued, so it
// runs while the backward of the layers below still runs on the compute stream. Waiting polls this
// stream against the --dist-timeout deadline: NCCL, like MPI, would otherwise wait forever for a rank
// that died; past the deadline the communicator is aborted and the job ended with a message naming
// the rank. Compiled for sm_90, never run on a GPU yet.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "engine/dist/communicator.h"

namespace engine::dist {
namespace {

using Clock = std::chrono::steady_clock;

class NcclReducer final : public DeviceReducer {
 public:
  NcclReducer(Communicator& host, ncclComm_t comm, cudaStream_t stream, cudaEvent_t ready, double timeout)
      : host_(host), comm_(comm), stream_(stream), ready_(ready), timeout_(timeout) {}
  ~NcclReducer() override {
    ncclCommDestroy(comm_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
  }

  void allreduce_sum(float* device_data, int64_t n, const char* what) override {
    start_allreduce_sum(device_data, n, nullptr, what);
    wait_started(what);
  }

  // The reducer's stream waits (on the device, not the host) for the work queued so far on the
  // compute stream, then reduces the slice while the compute stream goes on with the next layers.
  void start_allreduce_sum(float* device_data, int64_t n, void* compute_stream, const char* what) override {
    if (compute_stream) {
      check(cudaEventRecord(ready_, static_cast<cudaStream_t>(compute_stream)), what);
      check(cudaStreamWaitEvent(stream_, ready_, 0), what);
    } else {
      check(cudaDeviceSynchronize(), what);
    }
    check(ncclAllReduce(device_data, device_data, size_t(n), ncclFloat32, ncclSum, comm_, stream_), what);
  }

  void wait_started(const char* what) override { wait(what); }

 private:
  void wait(const char* what) {
    const Clock::time_point deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_));
    for (int polls = 0;; ++polls) {
      const cudaError_t e = cudaStreamQuery(stream_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) check(e, what);
      ncclResult_t async = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &async), what);
      check(async, what);
      if (Clock::now() > deadline) {
        std::fprintf(stderr,
                     "engine: error: rank %d of %d: %s: no answer from the other ranks within %g s (--dist-timeout); "
                     "a rank died or hangs, ending the job\n",
                     host_.rank(), host_.world(), what, timeout_);
        ncclCommAbort(comm_);
        host_.abort(3);
      }
      if (polls >= 1000) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  void check(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    std::fprintf(stderr, "engine: error: rank %d of %d: %s: CUDA: %s\n", host_.rank(), host_.world(), what,
                 cudaGetErrorString(e));
    host_.abort(1);
  }
  void check(ncclResult_t r, const char* what) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    std::fprintf(stderr, "engine: error: rank %d of %d: %s: NCCL: %s\n", host_.rank(), host_.world(), what,
                 ncclGetErrorString(r));
    host_.abort(1);
  }

  Communicator& host_;
  ncclComm_t comm_;
  cudaStream_t stream_;
  cudaEvent_t ready_;  // reused: each start records it, and the stream's wait copies its state then
  double timeout_;
};

}  // namespace
}  // namespace engine::dist

// The factory engine/dist/world.cpp finds with dlsym.
extern "C" __attribute__((visibility("default"))) engine::dist::DeviceReducer* engine_nccl_reducer_create(
    engine::dist::Communicator* host, int device, double timeout_seconds) {
  auto fail = [&](const char* step, const char* message) -> engine::dist::DeviceReducer* {
    std::fprintf(stderr, "engine: error: rank %d of %d: %s: %s\n", host->rank(), host->world(), step, message);
    return nullptr;
  };
  cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return fail("selecting the rank's GPU (its local rank)", cudaGetErrorString(e));
  ncclUniqueId id{};
  if (host->rank() == 0) {
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) return fail("ncclGetUniqueId", ncclGetErrorString(r));
  }
  host->broadcast(&id, sizeof id, 0, "broadcast of the NCCL unique id");
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRank(&comm, host->world(), id, host->rank());
  if (r != ncclSuccess) return fail("ncclCommInitRank", ncclGetErrorString(r));
  cudaStream_t stream = nullptr;
  e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) return fail("creating the NCCL stream", cudaGetErrorString(e));
  cudaEvent_t ready = nullptr;
  e = cudaEventCreateWithFlags(&ready, cudaEventDisableTiming);
  if (e != cudaSuccess) return fail("creating the NCCL event", cudaGetErrorString(e));
  return new engine::dist::NcclReducer(*host, comm, stream, ready, timeout_seconds);
}
