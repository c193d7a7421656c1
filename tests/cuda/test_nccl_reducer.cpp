// libengine_nccl.so on the one GPU of the GPU check, as a world of one rank (one H200 cannot hold two
// NCCL ranks): NCCL set up through the host communicator (unique id "broadcast"), a whole-buffer
// all-reduce, and bucket sums started behind the backend's stream and waited for. With one rank the
// sum is the buffer itself, so every element must come back bitwise (a NaN stays a NaN). The
// arithmetic across ranks is tested through MPI on the CPU (tests/test_dist.cpp).
// Skips without a GPU, in the sim (it emulates no NCCL), and where the build found no NCCL.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "../test_seed.h"
#include "engine/backend.h"
#include "engine/dist/communicator.h"
#include "gpu_or_sim.h"

namespace engine {
namespace {

TEST(NcclReducer, OneRankSumsInPlaceWholeAndInBuckets) {
  if (test::kSim) GTEST_SKIP() << "the sim emulates no NCCL";
  if (!cuda_available()) GTEST_SKIP() << "no GPU";
  const std::string lib = std::string(ENGINE_BINARY_DIR) + "/bin/libengine_nccl.so";
  if (!std::filesystem::exists(lib)) GTEST_SKIP() << "this build has no libengine_nccl.so (CMake found no NCCL)";
  void* handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL);
  ASSERT_NE(handle, nullptr) << dlerror();
  auto create = reinterpret_cast<dist::CreateNcclReducer>(dlsym(handle, dist::kNcclFactorySymbol));
  ASSERT_NE(create, nullptr);
  dist::LocalCommunicator host;
  std::unique_ptr<dist::DeviceReducer> reducer(create(&host, 0, 60.0));
  ASSERT_NE(reducer, nullptr);

  const uint64_t seed = pick_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  const int64_t n = 1000003 + int64_t(rng() % 1000);  // odd: no slice is a multiple of anything
  std::vector<float> want(static_cast<size_t>(n));
  for (float& v : want) v = normal(rng);
  want[size_t(rng() % uint64_t(n))] = NAN;

  auto backend = make_backend("cuda");
  void* data = backend->allocate(size_t(n) * 4);
  Tensor t(data, DType::f32, Device::cuda, {n});
  backend->copy_from_host(t, want.data());
  std::vector<float> got(static_cast<size_t>(n));
  auto expect_unchanged = [&](const char* what) {
    backend->copy_to_host(got.data(), t);
    EXPECT_EQ(std::memcmp(got.data(), want.data(), size_t(n) * 4), 0) << what;
  };

  reducer->allreduce_sum(t.as<float>(), n, "whole buffer");
  expect_unchanged("whole buffer");
  // Buckets: the backend's stream is still writing (a fill of the first slice queued just before).
  const int64_t cut = n / 3;
  backend->fill(t.rows(cut), 2.f);
  for (int64_t i = 0; i < cut; ++i) want[size_t(i)] = 2.f;
  reducer->start_allreduce_sum(t.as<float>() + cut, n - cut, backend->native_stream(), "top bucket");
  reducer->start_allreduce_sum(t.as<float>(), cut, backend->native_stream(), "bottom bucket");
  reducer->wait_started("buckets");
  expect_unchanged("buckets");
  backend->release(data);
}

}  // namespace
}  // namespace engine
