// The host side of the CUDA runtime for the sim build (see include/cuda_runtime.h for the model):
// device memory, copies, streams, events, stream capture into graphs, and the device's limits.
//
// What it refuses, as CUDA does: copies that name a device pointer outside every live allocation,
// freeing what cudaMalloc did not return, and, while a stream is captured in global mode, the
// synchronous calls that CUDA forbids then (cudaMalloc, cudaMemcpy, cudaMemset, synchronising):
// they fail and invalidate the capture, so a step that allocates or syncs inside a CUDA graph
// shows here. Fresh allocations hold 0xFF bytes (NaN as f32 and bf16), so a read before any write
// shows in the results.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "cuda/sim/launch.h"

struct CUgraph_st {
  std::vector<std::function<void()>> nodes;
};

struct CUgraphExec_st {
  std::vector<std::function<void()>> nodes;
};

struct CUstream_st {
  bool capturing = false;
  bool capture_invalid = false;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeGlobal;
  std::unique_ptr<CUgraph_st> graph;
};

struct CUevent_st {
  bool recorded = false;
  bool timing = true;
  std::chrono::steady_clock::time_point at;
};

namespace cudasim {
namespace {

constexpr size_t kDeviceBytes = size_t(141) << 30;  // an H200's memory, for cudaMemGetInfo
constexpr size_t kAllocAlign = 256;                 // what cudaMalloc guarantees

cudaError_t g_last_error = cudaSuccess;
std::map<const char*, size_t> g_allocations;  // base -> bytes
size_t g_allocated = 0;
std::map<const void*, size_t> g_max_dynamic_smem;
std::vector<CUstream_st*> g_streams;  // every live stream, for the capture rules

CUstream_st& default_stream() {
  static CUstream_st s;
  return s;
}

CUstream_st& stream_of(cudaStream_t s) { return s ? *s : default_stream(); }

cudaError_t fail(cudaError_t e) {
  g_last_error = e;
  return e;
}

// A synchronous call while some stream is captured in global mode: CUDA refuses it and
// invalidates the capture.
bool refused_during_capture(const char* call) {
  for (CUstream_st* s : g_streams) {
    if (s->capturing && s->mode == cudaStreamCaptureModeGlobal) {
      std::fprintf(stderr, "cudasim: %s during a stream capture: not permitted; the capture is invalidated\n",
                   call);
      s->capture_invalid = true;
      return true;
    }
  }
  return false;
}

const char* error_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorStreamCaptureUnmatched: return "cudaErrorStreamCaptureUnmatched";
    case cudaErrorUnknown: return "cudaErrorUnknown";
  }
  return "cudaErrorUnknown";
}

const char* error_string(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureUnmatched: return "capture was not initiated in this stream";
    default: return error_name(e);
  }
}

}  // namespace

// ---- sim-only entry points (cuda_runtime.h, launch.h) ----

void enqueue(cudaStream_t stream, std::function<void()> work) {
  CUstream_st& s = stream_of(stream);
  if (s.capturing) {
    s.graph->nodes.push_back(std::move(work));
    return;
  }
  work();
}

void set_last_error(cudaError_t error) { g_last_error = error; }

bool is_device_range(const void* p, size_t bytes) {
  const char* c = static_cast<const char*>(p);
  auto it = g_allocations.upper_bound(c);
  if (it == g_allocations.begin()) return false;
  --it;
  return c >= it->first && c + bytes <= it->first + it->second;
}

cudaError_t func_set_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > dynamic_smem_limit())
    return fail(cudaErrorInvalidValue);
  g_max_dynamic_smem[func] = size_t(value);
  return cudaSuccess;
}

size_t dynamic_smem_limit() { return 232448; }

size_t max_dynamic_smem(const void* func) {
  auto it = g_max_dynamic_smem.find(func);
  return it == g_max_dynamic_smem.end() ? size_t(48) * 1024 : it->second;
}

}  // namespace cudasim

using cudasim::fail;

// ---- errors and the device ----

const char* cudaGetErrorString(cudaError_t e) { return cudasim::error_string(e); }
const char* cudaGetErrorName(cudaError_t e) { return cudasim::error_name(e); }

cudaError_t cudaGetLastError() {
  const cudaError_t e = cudasim::g_last_error;
  cudasim::g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return cudasim::g_last_error; }

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return fail(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!p) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "cudasim (sm_90 emulated on the host)");
  p->totalGlobalMem = cudasim::kDeviceBytes;
  p->sharedMemPerBlock = 48 * 1024;
  p->sharedMemPerBlockOptin = cudasim::dynamic_smem_limit();
  p->sharedMemPerMultiprocessor = 233472;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->multiProcessorCount = 132;
  p->maxThreadsPerMultiProcessor = 2048;
  p->major = 9;
  p->minor = 0;
  p->l2CacheSize = 50 << 20;
  p->memoryBusWidth = 6144;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  if (cudasim::refused_during_capture("cudaDeviceSynchronize")) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaDeviceReset() { return cudaSuccess; }

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
  *total_bytes = cudasim::kDeviceBytes;
  *free_bytes = cudasim::kDeviceBytes - cudasim::g_allocated;
  return cudaSuccess;
}

// ---- memory ----

cudaError_t cudaMalloc(void** ptr, size_t bytes) {
  if (!ptr) return fail(cudaErrorInvalidValue);
  if (cudasim::refused_during_capture("cudaMalloc")) return fail(cudaErrorStreamCaptureUnsupported);
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  if (bytes > cudasim::kDeviceBytes - cudasim::g_allocated) return fail(cudaErrorMemoryAllocation);
  void* p = nullptr;
  // Exactly `bytes`: under AddressSanitizer the byte after the allocation is already out of bounds.
  if (posix_memalign(&p, cudasim::kAllocAlign, bytes) != 0) return fail(cudaErrorMemoryAllocation);
  std::memset(p, 0xff, bytes);
  cudasim::g_allocations[static_cast<const char*>(p)] = bytes;
  cudasim::g_allocated += bytes;
  *ptr = p;
  return cudaSuccess;
}

cudaError_t cudaFree(void* ptr) {
  if (!ptr) return cudaSuccess;
  if (cudasim::refused_during_capture("cudaFree")) return fail(cudaErrorStreamCaptureUnsupported);
  auto it = cudasim::g_allocations.find(static_cast<const char*>(ptr));
  if (it == cudasim::g_allocations.end()) {
    std::fprintf(stderr, "cudasim: cudaFree(%p): not a pointer cudaMalloc returned\n", ptr);
    return fail(cudaErrorInvalidDevicePointer);
  }
  cudasim::g_allocated -= it->second;
  cudasim::g_allocations.erase(it);
  std::free(ptr);
  return cudaSuccess;
}

namespace {

// The pointers of a copy must be what its kind says (cudaMemcpyDefault: either).
bool copy_ok(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return true;
  if (!dst || !src) return false;
  const bool dst_dev = cudasim::is_device_range(dst, bytes), src_dev = cudasim::is_device_range(src, bytes);
  switch (kind) {
    case cudaMemcpyHostToHost: return true;
    case cudaMemcpyHostToDevice: return dst_dev;
    case cudaMemcpyDeviceToHost: return src_dev;
    case cudaMemcpyDeviceToDevice: return dst_dev && src_dev;
    case cudaMemcpyDefault: return true;
  }
  return false;
}

cudaError_t bad_copy(const char* call, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  std::fprintf(stderr, "cudasim: %s(dst %p, src %p, %zu bytes, kind %d): a pointer is not what the kind says\n",
               call, dst, src, bytes, int(kind));
  return fail(cudaErrorInvalidValue);
}

}  // namespace

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (cudasim::refused_during_capture("cudaMemcpy")) return fail(cudaErrorStreamCaptureUnsupported);
  if (!copy_ok(dst, src, bytes, kind)) return bad_copy("cudaMemcpy", dst, src, bytes, kind);
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (!copy_ok(dst, src, bytes, kind)) return bad_copy("cudaMemcpyAsync", dst, src, bytes, kind);
  if (bytes) cudasim::enqueue(stream, [dst, src, bytes] { std::memmove(dst, src, bytes); });
  return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (cudasim::refused_during_capture("cudaMemset")) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes && !cudasim::is_device_range(dst, bytes)) return bad_copy("cudaMemset", dst, nullptr, bytes, cudaMemcpyDeviceToDevice);
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream) {
  if (bytes && !cudasim::is_device_range(dst, bytes))
    return bad_copy("cudaMemsetAsync", dst, nullptr, bytes, cudaMemcpyDeviceToDevice);
  if (bytes) cudasim::enqueue(stream, [dst, value, bytes] { std::memset(dst, value, bytes); });
  return cudaSuccess;
}

// ---- streams ----

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  if (!stream) return fail(cudaErrorInvalidValue);
  *stream = new CUstream_st;
  cudasim::g_streams.push_back(*stream);
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  if (!stream) return fail(cudaErrorInvalidResourceHandle);
  auto& all = cudasim::g_streams;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i] == stream) {
      all.erase(all.begin() + long(i));
      delete stream;
      return cudaSuccess;
    }
  return fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  CUstream_st& s = cudasim::stream_of(stream);
  if (s.capturing) {
    s.capture_invalid = true;
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (cudasim::refused_during_capture("cudaStreamSynchronize")) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  if (!status) return fail(cudaErrorInvalidValue);
  const CUstream_st& s = cudasim::stream_of(stream);
  *status = !s.capturing ? cudaStreamCaptureStatusNone
                         : (s.capture_invalid ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive);
  return cudaSuccess;
}

// ---- events ----

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned flags) {
  if (!event) return fail(cudaErrorInvalidValue);
  *event = new CUevent_st;
  (*event)->timing = !(flags & cudaEventDisableTiming);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  cudasim::enqueue(stream, [event] {
    event->recorded = true;
    event->at = std::chrono::steady_clock::now();
  });
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!event) return fail(cudaErrorInvalidResourceHandle);
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms || !start || !end) return fail(cudaErrorInvalidValue);
  if (!start->timing || !end->timing) return fail(cudaErrorInvalidResourceHandle);
  if (!start->recorded || !end->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

// ---- graphs ----

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  if (!stream) return fail(cudaErrorStreamCaptureUnsupported);  // the legacy stream cannot be captured
  if (stream->capturing) return fail(cudaErrorIllegalState);
  stream->capturing = true;
  stream->capture_invalid = false;
  stream->mode = mode;
  stream->graph = std::make_unique<CUgraph_st>();
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  if (!graph) return fail(cudaErrorInvalidValue);
  if (!stream || !stream->capturing) return fail(cudaErrorIllegalState);
  stream->capturing = false;
  *graph = nullptr;
  if (stream->capture_invalid) {
    stream->graph.reset();
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = stream->graph.release();
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  if (!exec || !graph) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->nodes};
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (!exec) return fail(cudaErrorInvalidResourceHandle);
  // Replays the recorded work with the arguments it was captured with.
  cudasim::enqueue(stream, [nodes = exec->nodes] {
    for (const auto& node : nodes) node();
  });
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
