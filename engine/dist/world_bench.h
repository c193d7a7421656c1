// The --world report of `engine bench` under mpirun or srun: times the all-reduce of a gradient
// buffer the size of the benched model's (f32, one element per parameter) across the ranks, on the
// bench's backend (MPI for the CPU, NCCL for the GPU), and sets it against the single-rank step the
// bench measured: bus bandwidth 2(N-1)/N x bytes / time (the ring model of bench/NOTES.md), the step
// of N ranks without overlap (step + all-reduce) and its global samples/s and scaling efficiency.
// Each timed all-reduce sums a buffer of ones, and every rank checks that it got N everywhere.
//
// JSON (the "world" object of the bench report):
//   {"ranks", "gradient_bytes", "reps", "allreduce_ms": {median, p10, p90, min, max, mean} (rank 0),
//    "allreduce_ms_slowest_rank": median of the slowest rank, "algbw_gb_s", "busbw_gb_s",
//    "step_ms": the bench's median step, "step_ms_no_overlap", "global_samples_per_s",
//    "scaling_efficiency", "sum_checked": true}
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace engine::dist {

nlohmann::json measure_world(const nlohmann::json& bench_report, const std::string& backend, int device, int reps);
std::string summarize_world(const nlohmann::json& world);

}  // namespace engine::dist
