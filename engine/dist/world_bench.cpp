// The --world report of `engine bench` (world_bench.h).
#include "engine/dist/world_bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "engine/backend.h"
#include "engine/dist/world.h"
#include "engine/error.h"
#include "engine/perf/step_bench.h"

namespace engine::dist {

nlohmann::json measure_world(const nlohmann::json& bench, const std::string& backend_name, int device, int reps) {
  World& world = World::get();
  ENGINE_CHECK(world.distributed(), "--world: run the bench under mpirun or srun with more than one rank");
  ENGINE_CHECK(reps > 0, "--world-reps must be positive");
  const int64_t n = bench["config"]["parameters"].get<int64_t>();
  BackendOptions bo;
  bo.device = device;
  auto backend = make_backend(backend_name, bo);
  void* data = backend->allocate(size_t(n) * 4);
  Tensor grads(data, DType::f32, backend->device(), {n});
  std::vector<double> ms;
  std::vector<float> check(static_cast<size_t>(n));
  for (int rep = -2; rep < reps; ++rep) {  // two untimed first: connections, NCCL channels
    backend->fill(grads, 1.f);
    backend->synchronize();
    world.comm().barrier("--world: barrier before an all-reduce");
    const auto t0 = std::chrono::steady_clock::now();
    world.allreduce_gradients(grads);
    backend->synchronize();
    const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (rep >= 0) ms.push_back(t);
    if (rep == -1) {  // every element must be the sum of N ones
      backend->copy_to_host(check.data(), grads);
      for (int64_t i = 0; i < n; ++i)
        ENGINE_CHECK(check[size_t(i)] == float(world.size()), "--world: all-reduce element ", i, " is ",
                     check[size_t(i)], ", expected ", world.size());
    }
  }
  backend->release(data);

  nlohmann::json stats = perf::step_time_stats(ms);
  // The slowest rank's median: each rank puts its median at its own index, the sum gathers them.
  std::vector<double> medians(size_t(world.size()), 0.0);
  medians[size_t(world.rank())] = stats["median"].get<double>();
  world.sum(medians, "--world: gathering the all-reduce times");
  const double slowest = *std::max_element(medians.begin(), medians.end());

  const double bytes = double(n) * 4, t = stats["median"].get<double>() / 1e3, N = world.size();
  const double step_ms = bench["step_ms"]["median"].get<double>();
  const double step_n = step_ms + stats["median"].get<double>();
  const int64_t batch = bench["batch"]["batch"].get<int64_t>();
  return {{"ranks", world.size()},
          {"gradient_bytes", int64_t(bytes)},
          {"reps", reps},
          {"allreduce_ms", stats},
          {"allreduce_ms_slowest_rank", slowest},
          {"algbw_gb_s", bytes / t / 1e9},
          {"busbw_gb_s", 2 * (N - 1) / N * bytes / t / 1e9},
          {"step_ms", step_ms},
          {"step_ms_no_overlap", step_n},
          {"global_samples_per_s", N * double(batch) / (step_n / 1e3)},
          {"scaling_efficiency", step_ms / step_n},
          {"sum_checked", true}};
}

std::string summarize_world(const nlohmann::json& w) {
  char line[512];
  std::snprintf(line, sizeof line,
                "world: %d ranks; all-reduce of %.1f MB of gradients: median %.3f ms (slowest rank %.3f ms), "
                "bus bandwidth %.2f GB/s\n"
                "  data-parallel step without overlap: %.3f ms + %.3f ms = %.3f ms, %.1f global samples/s, "
                "scaling efficiency %.0f%%\n",
                w["ranks"].get<int>(), w["gradient_bytes"].get<double>() / 1e6, w["allreduce_ms"]["median"].get<double>(),
                w["allreduce_ms_slowest_rank"].get<double>(), w["busbw_gb_s"].get<double>(), w["step_ms"].get<double>(),
                w["allreduce_ms"]["median"].get<double>(), w["step_ms_no_overlap"].get<double>(),
                w["global_samples_per_s"].get<double>(), 100 * w["scaling_efficiency"].get<double>());
  return line;
}

}  // namespace engine::dist
