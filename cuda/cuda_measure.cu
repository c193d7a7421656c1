// CudaBackend's measurement methods (backend.h, "measurement"): CUDA-event timers, CUDA-graph
// capture of the backend's one stream, cudaProfilerStart/Stop brackets, and device facts for
// reports (name, memory in use, datasheet peaks). Used by the step bench (engine/perf/).
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/matmul_cublaslt.h"
#include "engine/perf/peaks.h"

namespace engine {

namespace {

// One CUDA event per mark, created up front: recording an event costs no allocation, so marks can
// sit between every op of a timed step.
class EventTimer final : public StepTimer {
 public:
  EventTimer(cudaStream_t stream, int marks) : stream_(stream), events_(size_t(marks), nullptr) {
    for (cudaEvent_t& e : events_) CUDA_CHECK(cudaEventCreate(&e));
  }
  ~EventTimer() override {
    for (cudaEvent_t e : events_)
      if (e) cudaEventDestroy(e);
  }
  int size() const override { return int(events_.size()); }
  void mark(int i) override {
    ENGINE_CHECK(i >= 0 && i < size(), "timer mark ", i, " outside [0, ", size(), ")");
    CUDA_CHECK(cudaEventRecord(events_[size_t(i)], stream_));
  }
  double elapsed_ms(int a, int b) override {
    ENGINE_CHECK(a >= 0 && a < size() && b >= 0 && b < size(), "timer marks ", a, ", ", b, " outside [0, ", size(),
                 ")");
    CUDA_CHECK(cudaEventSynchronize(events_[size_t(b)]));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, events_[size_t(a)], events_[size_t(b)]));
    return double(ms);
  }

 private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
};

// An instantiated CUDA graph, launched on the stream it was captured from.
class CudaGraphWork final : public CapturedWork {
 public:
  CudaGraphWork(cudaGraphExec_t exec, cudaStream_t stream) : exec_(exec), stream_(stream) {}
  ~CudaGraphWork() override { cudaGraphExecDestroy(exec_); }
  void replay() override { CUDA_CHECK(cudaGraphLaunch(exec_, stream_)); }

 private:
  cudaGraphExec_t exec_;
  cudaStream_t stream_;
};

}  // namespace

std::unique_ptr<StepTimer> CudaBackend::make_timer(int marks) {
  ENGINE_CHECK(marks > 0, "a timer needs at least one mark (got ", marks, ")");
  return std::make_unique<EventTimer>(stream_, marks);
}

void CudaBackend::begin_capture() {
  ENGINE_CHECK(!capturing_, "cuda backend: begin_capture() while already capturing");
  // Global mode: any unsafe call (cudaMalloc, a synchronize) from any thread during the capture
  // fails loudly instead of silently leaving work out of the graph.
  CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
  capturing_ = true;
}

std::unique_ptr<CapturedWork> CudaBackend::end_capture() {
  ENGINE_CHECK(capturing_, "cuda backend: end_capture() without begin_capture()");
  // Always end the capture first, so that an error inside it leaves the stream usable.
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
  if (ended != cudaSuccess) {
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    cuda::cuda_fail(ended, "cudaStreamEndCapture (an op in the captured step is not capturable)", __FILE__,
                    __LINE__);
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  CUDA_CHECK(made);
  return std::make_unique<CudaGraphWork>(exec, stream_);
}

void CudaBackend::profiler_start() { CUDA_CHECK(cudaProfilerStart()); }
void CudaBackend::profiler_stop() {
  CUDA_CHECK(cudaStreamSynchronize(stream_));  // the bracketed steps finish inside the range
  CUDA_CHECK(cudaProfilerStop());
}

std::string CudaBackend::device_label() const {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  return prop.name;
}

int64_t CudaBackend::device_bytes_in_use() const {
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return int64_t(total_bytes - free_bytes);
}

size_t CudaBackend::scratch_bytes() const { return workspace_bytes_ + cuda::CublasLt::kWorkspaceBytes; }

double CudaBackend::peak_tflops(DType act) const { return perf::datasheet_peak_tflops(device_label(), act); }

}  // namespace engine
