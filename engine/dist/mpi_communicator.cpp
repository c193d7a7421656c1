// The MPI communicator: engine/dist/communicator.h over MPI_COMM_WORLD. Built as its own shared
// library, libengine_mpi.so, the only part of the engine that links libmpi; the engine dlopen()s it
// when the launcher (mpirun, srun) starts more than one rank.
//
// MPI collectives have no timeout, and a rank that died or hangs would leave the others blocked in
// MPI_Allreduce forever. So every collective here is the non-blocking form (MPI_Iallreduce, ...),
// polled with MPI_Test against a deadline; past it the rank says who it is and what it waited
// for, and MPI_Abort ends every rank of the job.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "engine/dist/communicator.h"

namespace engine::dist {
namespace {

using Clock = std::chrono::steady_clock;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &world_);
    // The ranks that share this node (shared memory) number themselves 0.. : the GPU to take.
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_free(&node);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  int local_rank() const override { return local_rank_; }
  void set_timeout(double seconds) override { timeout_ = seconds; }

  void allreduce_sum(float* data, int64_t n, const char* what) override { allreduce(data, n, MPI_FLOAT, 4, what); }
  void allreduce_sum(double* data, int64_t n, const char* what) override { allreduce(data, n, MPI_DOUBLE, 8, what); }

  void start_allreduce_sum(float* data, int64_t n, const char* /*what*/) override {
    for (int64_t done = 0; done < n;) {
      const int count = int(std::min<int64_t>(n - done, kMaxCount));
      started_.emplace_back();
      MPI_Iallreduce(MPI_IN_PLACE, data + done, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &started_.back());
      done += count;
    }
    // Open MPI moves non-blocking collectives on only inside MPI calls: one test per start keeps the
    // earlier buckets going while this rank computes the next.
    int flag = 0;
    MPI_Testall(int(started_.size()), started_.data(), &flag, MPI_STATUSES_IGNORE);
  }

  void wait_started(const char* what) override {
    for (MPI_Request& req : started_) wait(&req, what);  // a completed request is MPI_REQUEST_NULL: returns at once
    started_.clear();
  }

  void broadcast(void* data, int64_t bytes, int root, const char* what) override {
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < bytes;) {
      const int count = int(std::min<int64_t>(bytes - done, kMaxCount));
      MPI_Request req;
      MPI_Ibcast(p + done, count, MPI_BYTE, root, MPI_COMM_WORLD, &req);
      wait(&req, what);
      done += count;
    }
  }

  void barrier(const char* what) override {
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    wait(&req, what);
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this is for an MPI that does
  }

 private:
  // MPI counts are ints: larger buffers go in pieces.
  static constexpr int64_t kMaxCount = int64_t(1) << 30;

  void allreduce(void* data, int64_t n, MPI_Datatype type, int64_t elem_bytes, const char* what) {
    char* p = static_cast<char*>(data);
    for (int64_t done = 0; done < n;) {
      const int count = int(std::min<int64_t>(n - done, kMaxCount));
      MPI_Request req;
      MPI_Iallreduce(MPI_IN_PLACE, p + done * elem_bytes, count, type, MPI_SUM, MPI_COMM_WORLD, &req);
      wait(&req, what);
      done += count;
    }
  }

  // Polls the request until it completes or the deadline passes. The first polls spin (a collective
  // between ranks that arrive together completes in microseconds); after that the rank sleeps between
  // polls so that, with more ranks than cores, it does not take the CPU from a rank still computing.
  void wait(MPI_Request* req, const char* what) {
    const Clock::time_point deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_));
    for (int polls = 0;; ++polls) {
      int done = 0;
      MPI_Test(req, &done, MPI_STATUS_IGNORE);
      if (done) return;
      if (Clock::now() > deadline) {
        std::fprintf(stderr,
                     "engine: error: rank %d of %d: %s: no answer from the other ranks within %g s (--dist-timeout); "
                     "a rank died or hangs, ending the job\n",
                     rank_, world_, what, timeout_);
        abort(3);
      }
      if (polls >= 1000) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  int rank_ = 0, world_ = 1, local_rank_ = 0;
  double timeout_ = 600;
  std::vector<MPI_Request> started_;  // start_allreduce_sum() requests not yet waited for
};

}  // namespace
}  // namespace engine::dist

// The factory engine/dist/world.cpp finds with dlsym.
extern "C" __attribute__((visibility("default"))) engine::dist::Communicator* engine_mpi_communicator_create() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      std::fprintf(stderr, "engine: error: MPI_Init_thread failed\n");
      return nullptr;
    }
  }
  return new engine::dist::MpiCommunicator();
}
