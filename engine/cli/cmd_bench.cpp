// `engine bench`: the end-to-end fine-tune step bench (engine/perf/step_bench.h). With no
// arguments it times BERT-base at sequence length 128, batch 32, on the GPU when one is visible
// (bf16, CUDA graphs on) and otherwise on the fast CPU backend (a few steps; --backend cpu-ref runs
// the plain-loop reference). --json writes the full report (schema in step_bench.h).
#include <fstream>
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/error.h"
#include "engine/io/result_path.h"
#include "engine/perf/step_bench.h"

namespace engine::cli {

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
  cmd->callback([o, json_path] {
    nlohmann::json report = perf::run_step_bench(*o, std::cout);
    std::cout << perf::summarize_step_bench(report);
    if (!json_path->empty()) {
      std::ofstream out(*json_path);
      ENGINE_CHECK(out, "--json ", *json_path, ": cannot write the file");
      out << report.dump(2) << "\n";
      ENGINE_CHECK(out.good(), "--json ", *json_path, ": write failed");
      std::cout << "report: " << io::result_path(*json_path) << "\n";
    }
  });
}

}  // namespace engine::cli
