// The ranks of a data-parallel job, as the engine sees them (ARCHITECTURE.md, "Data parallel").
//
// Launch. `mpirun -np N engine finetune ...` or `srun --mpi=pmix engine finetune ...` start N
// processes; each learns from its launcher's environment (OMPI_COMM_WORLD_SIZE, PMI_SIZE,
// SLURM_STEP_NUM_TASKS) that the world has N > 1 ranks and only then loads libengine_mpi.so, the
// one part of the engine linked to MPI. Without such a variable (or with N = 1) the world is the
// process alone and nothing is loaded: a single-GPU user needs neither MPI nor NCCL.
// The library is looked for at $ENGINE_MPI_LIBRARY, next to the executable, in ../lib, then on the
// loader's path; libengine_nccl.so (the GPU gradients) likewise with $ENGINE_NCCL_LIBRARY.
//
// Every rank holds the whole data set and the same parameters; rank 0 logs, evaluates (with the
// others' share of the batches, engine/train/task.h EvalShard) and writes every file.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/dist/communicator.h"
#include "engine/tensor.h"

namespace engine::dist {

// The world size the launcher's environment announces (1 when it announces none).
int launcher_world_size();
// FNV-1a (64 bits) of bytes: compares replicas of the parameters across ranks.
uint64_t fnv1a64(const void* data, size_t bytes);

class World {
 public:
  // This process's world, opened on first use (MPI initialised then, finalised at exit).
  static World& get();

  int rank() const { return comm_->rank(); }
  int size() const { return comm_->world(); }
  int local_rank() const { return comm_->local_rank(); }
  bool root() const { return rank() == 0; }
  bool distributed() const { return size() > 1; }
  Communicator& comm() { return *comm_; }
  void set_timeout(double seconds);

  // Prepares the GPU path: loads libengine_nccl.so and builds the NCCL communicator on GPU
  // local_rank() (call before the CUDA backend is made). Nothing in a world of one.
  void open_gpu_reducer();
  // Sums the flat f32 gradient buffer across ranks in place: through MPI for host memory (the CPU
  // backend), through NCCL for GPU memory.
  void allreduce_gradients(Tensor grads);
  // A slice of the gradient buffer (on grads' device) summed while computation goes on (grad_sync.h);
  // compute_stream: the backend's native_stream(). wait_gradient_sums() waits for every started slice.
  void start_gradient_sum(float* data, int64_t n, void* compute_stream);
  void wait_gradient_sums(Tensor grads);
  // Sums of host numbers across ranks (every rank gets the same result).
  void sum(std::vector<double>& values, const char* what);
  void sum(std::vector<float>& values, const char* what);
  // Rank 0's string, on every rank.
  std::string broadcast_from_root(const std::string& s, const char* what);
  // Ends the job unless `mine` equals rank 0's: an error on each rank that differs, naming the rank,
  // the first key that differs and both values. `what` says what was compared.
  void check_same_as_root(const nlohmann::json& mine, const std::string& what);
  // Prints "engine: error: rank R of N: <message>" and ends every rank of the job (exit code 1).
  [[noreturn]] void abort_with(const std::string& message);

  ~World();

 private:
  World();
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<DeviceReducer> gpu_;
  double timeout_ = 600;
};

}  // namespace engine::dist
