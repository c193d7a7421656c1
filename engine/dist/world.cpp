// The world of a data-parallel job: which launcher variables count, how the MPI and NCCL libraries
// are found and loaded, and the few collectives the trainer calls (engine/dist/world.h).
#include "engine/dist/world.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "engine/error.h"

namespace engine::dist {

namespace fs = std::filesystem;

[[noreturn]] void LocalCommunicator::abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(code);
}

int launcher_world_size() {
  // Open MPI's mpirun; MPICH's Hydra and Slurm's PMI-2; a task of an srun job step.
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"}) {
    const char* v = std::getenv(var);
    if (!v || !*v) continue;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    ENGINE_CHECK(*end == '\0' && n >= 1, "the launcher variable ", var, "=", v, " is not a world size");
    return int(n);
  }
  return 1;
}

uint64_t fnv1a64(const void* data, size_t bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

namespace {

// Where a plug-in library may be: $env_var, next to the executable, ../lib, then the loader's path.
std::vector<std::string> library_candidates(const char* env_var, const std::string& file) {
  std::vector<std::string> out;
  if (const char* v = std::getenv(env_var); v && *v) return {v};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    out.push_back((exe.parent_path() / file).string());
    out.push_back((exe.parent_path().parent_path() / "lib" / file).string());
  }
  out.push_back(file);
  return out;
}

// dlopen()s the first candidate that loads and returns `symbol` from it. RTLD_GLOBAL: Open MPI loads
// its own components with dlopen and they need libmpi's symbols.
void* load_symbol(const char* env_var, const std::string& file, const char* symbol, const std::string& why) {
  std::string tried;
  for (const std::string& path : library_candidates(env_var, file)) {
    if (path.find('/') != std::string::npos && !fs::exists(path)) {
      tried += "\n  " + path + ": no such file";
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!handle) {
      tried += "\n  " + path + ": " + dlerror();
      continue;
    }
    void* f = dlsym(handle, symbol);
    ENGINE_CHECK(f, path, " has no ", symbol, " (a library of another engine build?)");
    return f;
  }
  fail(why, " needs ", file, ", which could not be loaded (set ", env_var, " to its path):", tried);
}

}  // namespace

World::World() {
  const int announced = launcher_world_size();
  if (announced == 1) {
    comm_ = std::make_unique<LocalCommunicator>();
    return;
  }
  auto create = reinterpret_cast<CreateMpiCommunicator>(
      load_symbol("ENGINE_MPI_LIBRARY", "libengine_mpi.so", kMpiFactorySymbol,
                  "a run with " + std::to_string(announced) + " ranks (as the launcher's environment says)"));
  Communicator* c = create();
  ENGINE_CHECK(c, "MPI could not be initialised (see the message above)");
  comm_.reset(c);
  if (comm_->world() != announced) {
    std::fprintf(stderr,
                 "engine: error: the launcher announces %d ranks but MPI sees %d: libengine_mpi.so is built "
                 "against another MPI than the launcher's (under Slurm: srun --mpi=pmix)\n",
                 announced, comm_->world());
    comm_->abort(1);
  }
}

World::~World() = default;

World& World::get() {
  static World world;
  return world;
}

void World::set_timeout(double seconds) {
  ENGINE_CHECK(seconds > 0, "--dist-timeout must be positive (got ", seconds, ")");
  timeout_ = seconds;
  comm_->set_timeout(seconds);
}

void World::open_gpu_reducer() {
  if (!distributed() || gpu_) return;
  auto create = reinterpret_cast<CreateNcclReducer>(load_symbol(
      "ENGINE_NCCL_LIBRARY", "libengine_nccl.so", kNcclFactorySymbol, "a distributed run on the cuda backend"));
  DeviceReducer* r = create(comm_.get(), local_rank(), timeout_);
  if (!r) abort_with("NCCL could not be initialised (see the message above)");
  gpu_.reset(r);
}

void World::allreduce_gradients(Tensor grads) {
  if (!distributed()) return;
  ENGINE_CHECK(grads.dtype == DType::f32, "gradients must be f32 to be reduced");
  if (grads.device == Device::cpu) {
    comm_->allreduce_sum(grads.as<float>(), grads.numel(), "all-reduce of the gradients");
    return;
  }
  ENGINE_CHECK(gpu_, "the GPU gradients of a distributed run need open_gpu_reducer() first");
  gpu_->allreduce_sum(grads.as<float>(), grads.numel(), "all-reduce of the gradients (NCCL)");
}

void World::start_gradient_sum(float* data, int64_t n, void* compute_stream) {
  if (gpu_) gpu_->start_allreduce_sum(data, n, compute_stream, "all-reduce of a gradient bucket (NCCL)");
  else comm_->start_allreduce_sum(data, n, "all-reduce of a gradient bucket");
}

void World::wait_gradient_sums(Tensor grads) {
  if (grads.device == Device::cpu) comm_->wait_started("all-reduce of the gradient buckets");
  else gpu_->wait_started("all-reduce of the gradient buckets (NCCL)");
}

void World::sum(std::vector<double>& values, const char* what) {
  comm_->allreduce_sum(values.data(), int64_t(values.size()), what);
}

void World::sum(std::vector<float>& values, const char* what) {
  comm_->allreduce_sum(values.data(), int64_t(values.size()), what);
}

std::string World::broadcast_from_root(const std::string& s, const char* what) {
  if (!distributed()) return s;
  double length = double(s.size());  // a double: exact for any length a string can have here
  comm_->broadcast(&length, sizeof length, 0, what);
  std::string out = root() ? s : std::string(size_t(length), '\0');
  comm_->broadcast(out.data(), int64_t(out.size()), 0, what);
  return out;
}

void World::check_same_as_root(const nlohmann::json& mine, const std::string& what) {
  if (!distributed()) return;
  const nlohmann::json theirs = nlohmann::json::parse(broadcast_from_root(mine.dump(), what.c_str()));
  if (theirs == mine) return;
  std::string diff;
  for (auto it = theirs.begin(); it != theirs.end() && diff.empty(); ++it) {
    if (!mine.contains(it.key())) diff = it.key() + " is missing here";
    else if (mine[it.key()] != it.value())
      diff = it.key() + " = " + mine[it.key()].dump() + " here, " + it.value().dump() + " on rank 0";
  }
  for (auto it = mine.begin(); it != mine.end() && diff.empty(); ++it)
    if (!theirs.contains(it.key())) diff = it.key() + " is missing on rank 0";
  abort_with(what + " differs from rank 0's: " + diff + " (every rank must run the same command on the same data)");
}

[[noreturn]] void World::abort_with(const std::string& message) {
  std::fprintf(stderr, "engine: error: rank %d of %d: %s\n", rank(), size(), message.c_str());
  comm_->abort(1);
  std::_Exit(1);  // not reached: abort() does not return (the compiler cannot see that through virtual)
}

}  // namespace engine::dist
