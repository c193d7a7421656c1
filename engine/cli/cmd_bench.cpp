// `engine bench`: the end-to-end fine-tune step bench (engine/perf/step_bench.h). With no
// arguments it times BERT-base at sequence length 128, batch 32, on the GPU when one is visible
// (bf16, CUDA graphs on) and otherwise on the fast CPU backend (a few steps; --backend cpu-ref runs
// the plain-loop reference). --json writes the full report (schema in step_bench.h).
#include <fstream>
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/dist/world.h"
#include "engine/dist/world_bench.h"
#include "engine/error.h"
#include "engine/io/result_path.h"
#include "engine/perf/step_bench.h"
#include "engine/train/trainer.h"

namespace engine::cli {

namespace {

// One bench; under mpirun every rank benches its own device and only rank 0 prints and writes.
void run_bench(perf::StepBenchOptions o, const std::string& json_path, bool world, int world_reps) {
  dist::World& w = dist::World::get();
  std::ostream quiet(nullptr);
  std::ostream& out = w.root() ? std::cout : quiet;
  if (world) {
    ENGINE_CHECK(w.distributed(), "--world: run the bench under mpirun or srun with more than one rank");
    if (resolve_backend(o.backend) == "cuda") {
      o.device = w.local_rank();  // one GPU per rank
      w.open_gpu_reducer();
    }
  }
  nlohmann::json report = perf::run_step_bench(o, out);
  out << perf::summarize_step_bench(report);
  if (world) {
    report["world"] = dist::measure_world(report, report["backend"].get<std::string>(), o.device, world_reps);
    out << dist::summarize_world(report["world"]);
  }
  if (!json_path.empty() && w.root()) {
    std::ofstream file(json_path);
    ENGINE_CHECK(file, "--json ", json_path, ": cannot write the file");
    file << report.dump(2) << "\n";
    ENGINE_CHECK(file.good(), "--json ", json_path, ": write failed");
    out << "report: " << io::result_path(json_path) << "\n";
  }
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench",
      "Time the full fine-tune step (forward, backward, AdamW) of a BERT config with random weights: median and\n"
      "spread of the step time, samples/s, tokens/s, TFLOP/s and MFU (against a GEMM peak measured in the same\n"
      "run and the datasheet), memory, a per-op breakdown, and the gain of CUDA graphs.");
  auto o = std::make_shared<perf::StepBenchOptions>();
  auto json_path = std::make_shared<std::string>();
  cmd->add_option("--config", o->config, "bert-tiny, bert-mini, bert-base, bert-large, or a model DIR / config.json")
      ->capture_default_str();
  cmd->add_option("--task", o->task, "classify (pooler + classifier) or qa (qa_outputs + span loss, as BertForQuestionAnswering)")
      ->capture_default_str();
  cmd->add_option("--seq", o->seq, "tokens per sequence, [CLS]/[SEP] included (fixed-length batches)")
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "sequences per batch")->capture_default_str();
  cmd->add_option("--lengths", o->lengths,
                  "real-length batches: a file of one sequence length per line (tools/lengths_from_data), or 'sst2'");
  cmd->add_option("--data-dir", o->data_dir, "shared data folder for --lengths sst2")->capture_default_str();
  cmd->add_option("--backend", o->backend, "cpu (fast), cpu-ref (plain-loop reference), cuda or auto (cuda when a GPU is visible, else cpu)")->capture_default_str();
  cmd->add_option("--precision", o->precision, "bf16, fp32 or auto (bf16 on cuda, fp32 on cpu)")
      ->capture_default_str();
  cmd->add_option("--attention", o->attention, "cuda attention: auto (flash for bf16, simple for fp32), flash, cudnn (dropout 0 only) or simple")->capture_default_str();
  cmd->add_option("--warmup", o->warmup, "untimed steps first (-1: 10 on cuda, 0 on cpu)")->capture_default_str();
  cmd->add_option("--steps", o->steps, "timed steps per mode (-1: 50 on cuda, 1 on cpu)")->capture_default_str();
  cmd->add_option("--breakdown-steps", o->breakdown_steps,
                  "instrumented steps for the per-op breakdown (-1: 5 on cuda, 1 on cpu; 0: none)")
      ->capture_default_str();
  cmd->add_option("--cuda-graphs", o->cuda_graphs, "on, off or auto: also time the step as replayed CUDA graphs")
      ->capture_default_str();
  cmd->add_option("--max-graphs", o->max_graphs, "captured graphs kept (one per batch shape)")->capture_default_str();
  cmd->add_option("--token-bucket", o->token_bucket,
                  "real-length graph runs: pad each batch's tokens up to a multiple of this (0: exact shapes)")
      ->capture_default_str();
  cmd->add_option("--peak-gemm", o->peak_gemm, "n of the n^3 peak GEMM (-1: 8192 on cuda, 256 on cpu; 0: skip)")
      ->capture_default_str();
  cmd->add_option("--profile-steps", o->profile_steps,
                  "A:B: cudaProfilerStart before timed step A, Stop after step B (nsys --capture-range=cudaProfilerApi)");
  cmd->add_option("--seed", o->seed, "seed of the random weights, ids and labels")->capture_default_str();
  cmd->add_option("--json", *json_path, "write the full report as JSON to this file");
  auto world = std::make_shared<bool>(false);
  auto world_reps = std::make_shared<int>(20);
  cmd->add_flag("--world", *world,
                "under mpirun/srun (N > 1 ranks, each benching the step on its own GPU): also time the all-reduce of "
                "the gradients across the ranks and report the data-parallel step; rank 0 prints");
  cmd->add_option("--world-reps", *world_reps, "timed all-reduces for --world")->capture_default_str();
  cmd->callback([o, json_path, world, world_reps] {
    dist::World& w = dist::World::get();
    try {
      run_bench(*o, *json_path, *world, *world_reps);
    } catch (const std::exception& e) {
      if (!w.distributed()) throw;
      w.abort_with(e.what());  // an error on one rank ends the job, it does not leave the others waiting
    }
  });
}

}  // namespace engine::cli

