// Communicator: the collectives a data-parallel run needs between its ranks, over host memory.
// The MPI implementation lives in libengine_mpi.so (engine/dist/mpi_communicator.cpp), which the
// engine loads with dlopen only when the launcher says the world has more than one rank, so a plain
// single-process run needs no MPI installation (engine/dist/world.h). The one-rank implementation
// below does nothing: every collective of a world of one is the identity.
//
// Every collective names what it is doing (`what`): a rank that waits longer than the timeout for
// the others prints its rank and that name, and ends the whole job (MPI has no timeout of its own;
// the MPI implementation polls non-blocking collectives against a deadline).
// This header is shared with the dlopen()ed library: plain types only, no engine symbols.
#pragma once
#include <cstdint>
#include <string>

namespace engine::dist {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // The rank's index among the ranks of its node (picks the GPU), from the launcher.
  virtual int local_rank() const = 0;
  // Seconds a rank waits in one collective before it declares the job hung.
  virtual void set_timeout(double seconds) = 0;

  // In place: every rank's buffer becomes the element-wise sum over all ranks.
  virtual void allreduce_sum(float* data, int64_t n, const char* what) = 0;
  virtual void allreduce_sum(double* data, int64_t n, const char* what) = 0;
  // The same sum started and left running (the buckets of the gradients while backward goes on):
  // every rank must start the same buffers in the same order; the buffer must not be touched until
  // wait_started() returns, which waits for every started sum.
  virtual void start_allreduce_sum(float* data, int64_t n, const char* what) = 0;
  virtual void wait_started(const char* what) = 0;
  // root's bytes to every rank (the same size on every rank).
  virtual void broadcast(void* data, int64_t bytes, int root, const char* what) = 0;
  virtual void barrier(const char* what) = 0;
  // Ends every rank of the job now with this exit code (after the caller printed why).
  [[noreturn]] virtual void abort(int code) = 0;
};

// A world of one rank.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  int local_rank() const override { return 0; }
  void set_timeout(double) override {}
  void allreduce_sum(float*, int64_t, const char*) override {}
  void allreduce_sum(double*, int64_t, const char*) override {}
  void start_allreduce_sum(float*, int64_t, const char*) override {}
  void wait_started(const char*) override {}
  void broadcast(void*, int64_t, int, const char*) override {}
  void barrier(const char*) override {}
  [[noreturn]] void abort(int code) override;
};

// The sum of an f32 buffer in GPU memory across ranks: NCCL, in libengine_nccl.so (cuda/nccl/),
// loaded like the MPI library and only by a distributed run on the CUDA backend.
class DeviceReducer {
 public:
  virtual ~DeviceReducer() = default;
  // In place; returns when the sum is in `device_data` (the caller has finished writing it).
  virtual void allreduce_sum(float* device_data, int64_t n, const char* what) = 0;
  // Started once the work queued so far on `compute_stream` (a cudaStream_t; null: the whole device)
  // has written the buffer, and run on the reducer's own stream beside the backward pass still being
  // queued; wait_started() returns when every started sum is done.
  virtual void start_allreduce_sum(float* device_data, int64_t n, void* compute_stream, const char* what) = 0;
  virtual void wait_started(const char* what) = 0;
};

// The factory libengine_mpi.so exports (extern "C", found with dlsym): initialises MPI and returns
// a communicator over MPI_COMM_WORLD, or null after printing why to standard error.
using CreateMpiCommunicator = Communicator* (*)();
constexpr const char* kMpiFactorySymbol = "engine_mpi_communicator_create";
// The factory libengine_nccl.so exports: selects GPU `device`, builds an NCCL communicator over the
// ranks of `comm` (rank 0's unique id broadcast through it), or returns null after printing why.
using CreateNcclReducer = DeviceReducer* (*)(Communicator* comm, int device, double timeout_seconds);
constexpr const char* kNcclFactorySymbol = "engine_nccl_reducer_create";

}  // namespace engine::dist
