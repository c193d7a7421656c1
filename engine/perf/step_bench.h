// The end-to-end step bench behind `engine bench`: times the whole fine-tune step (batch upload,
// zero grads, forward, backward, gradient norm, AdamW) of a BERT config with random weights, on
// the CPU or the GPU, eagerly and as replayed CUDA graphs, and explains where the time goes.
//
// What one run does, in order:
//   1. the peak GEMM: an n x n x n product through the backend's linear_forward (cuBLASLt bf16 on
//      the GPU), best of a few, as the "measured peak" for MFU (n = 8192 on cuda, 256 on cpu);
//   2. builds the model (random weights, num_labels 2; --task classify: pooler and classifier,
//      --task qa: qa_outputs over every token and the span loss) and the batches: fixed length (--seq,
//      --batch) or real lengths (--lengths FILE | sst2: consecutive lengths, cycling, --batch
//      sequences per batch); random token ids and labels;
//   3. warm-up steps (eager; the first on the largest batch, so the workspace has grown);
//   4. timed eager steps, each between two timer marks (CUDA events on the GPU);
//   5. with CUDA graphs: timed steps replaying one captured graph per batch shape
//      (T, B, max_seqlen); a shape seen for the first time runs once eagerly, is captured and
//      replayed, all inside that step's time. Real-length runs pad each batch to a token bucket
//      (one or more filler sequences whose label is ignored, so the update is unchanged) so that
//      a few graphs serve all batches. Graphs bake in kernel arguments: the learning rate, the
//      AdamW step (bias correction) and the dropout seed are those of the capture (fine for
//      timing; a trainer would need them in device memory);
//   6. instrumented eager steps with a mark after every op (perf/timed_backend.h) for the per-op
//      breakdown, which sums exactly to the instrumented step time.
//
// JSON (--json FILE), schema "engine-bench/1"; times in ms, rates per second, bytes as integers;
// null where a number does not apply (e.g. datasheet peak of a CPU):
// {
//   "schema": "engine-bench/1", "engine_commit": "abc1234" | "unknown", "device": "NVIDIA H100 ...",
//   "backend": "cuda", "precision": "bf16", "attention": "flash", "task": "classify" | "qa",
//   "config": {"name", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
//              "vocab_size", "max_position_embeddings", "num_labels", "parameters"},
//   "batch": {"mode": "fixed" | "lengths", "seq": 128 | null, "batch": 32, "lengths_source": null | "FILE",
//             "mean_tokens": real tokens per batch, "mean_max_seqlen", "distinct_batches"},
//   "warmup": 10, "steps": 50,
//   "step_ms": {"median", "p10", "p90", "min", "max", "mean"},        (the reported mode, see "mode")
//   "mode": "graphs" | "eager",
//   "samples_per_s", "tokens_per_s" (real tokens), "flops_per_step", "tflops",
//   "peak_tflops_measured", "peak_tflops_datasheet" | null, "mfu_measured", "mfu_datasheet" | null,
//   "peak_gemm": {"n", "ms", "tflops"} | null,
//   "memory": {"parameters", "activations", "workspace", "total" (the three summed),
//              "device_used" | null (all processes, after the run), "device_used_before" | null},
//   "breakdown_ms": {"attention", "matmuls", "layernorm", "gelu", "loss", "optimizer", "other"},
//   "breakdown_step_ms": mean instrumented step (= sum of breakdown_ms), "breakdown_steps": 5,
//   "breakdown_ops": {"linear_forward": {"calls", "ms"}, ...}   (per step),
//   "eager_step_ms": {...} (always), "cuda_graphs": {"enabled", "captures", "replays", "hits",
//             "hit_rate", "eager_fallbacks", "token_bucket", "padded_tokens_per_step", "step_ms" | null,
//             "speedup" | null},
//   "final_loss", "final_grad_norm"
// }
#pragma once
#include <cstdint>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/model/config.h"

namespace engine::perf {

struct StepBenchOptions {
  std::string config = "bert-base";  // bert-tiny, bert-mini, bert-base, bert-large, a model DIR or a config.json
  std::string task = "classify";     // classify (pooler + classifier) or qa (qa_outputs + span loss)
  int64_t seq = 128;                 // tokens per sequence ([CLS] and [SEP] included) without --lengths
  int64_t batch = 32;                // sequences per batch
  std::string lengths;               // "": fixed --seq; a file of one length per line; "sst2"
  std::string data_dir = "../shared/data";  // where --lengths sst2 finds sst2/train.tsv and the vocabulary
  std::string backend = "auto";      // cpu, cuda, auto
  std::string precision = "auto";    // bf16, fp32, auto
  std::string attention = "auto";    // cuda: auto (flash for bf16, simple for fp32), flash, cudnn, simple
  int warmup = -1;                   // -1: 10 on cuda, 0 on cpu
  int steps = -1;                    // -1: 50 on cuda, 1 on cpu
  int breakdown_steps = -1;          // instrumented steps; -1: 5 on cuda, 1 on cpu; 0: no breakdown
  std::string cuda_graphs = "auto";  // on, off, auto (on when the backend can capture)
  int max_graphs = 32;               // graphs kept; shapes beyond run eagerly
  int64_t token_bucket = 64;         // real-length graph runs pad T up to a multiple of this (0: exact shapes)
  int64_t peak_gemm = -1;            // n of the n^3 peak GEMM; -1: 8192 on cuda, 256 on cpu; 0: skip
  std::string profile_steps;         // "A:B": profiler bracket around timed steps A..B (0-based, inclusive)
  uint64_t seed = 1234;
  int device = 0;                    // cuda: which GPU (a rank's local rank under mpirun)
  float learning_rate = 2e-5f;
};

// A parsed --profile-steps; first > last means none.
struct StepRange {
  int first = 1, last = 0;
  bool contains(int i) const { return i >= first && i <= last; }
};
// Parses "A:B" (0 <= A <= B); "" gives the empty range. Throws engine::Error when malformed.
StepRange parse_profile_steps(const std::string& text);

// The config of --config: a named one, a model directory (its config.json) or a config.json file.
BertConfig load_bench_config(const std::string& name_or_path);

// Sequence lengths, one per line (blank lines skipped). Throws engine::Error on a missing or empty
// file, a line that is not a positive integer, or a length above max_position.
std::vector<int64_t> read_lengths_file(const std::string& path, int64_t max_position);
// Token counts of the SST-2 training sentences ([CLS] and [SEP] included) with the engine's own
// tokenizer (bert-base-uncased vocabulary) from data_dir, truncated to max_position.
std::vector<int64_t> sst2_lengths(const std::string& data_dir, int64_t max_position);

// Runs the bench; progress and a human summary go to `log`. Returns the JSON described above.
// Throws engine::Error on bad options (before any heavy work).
nlohmann::json run_step_bench(const StepBenchOptions& options, std::ostream& log);

// The human summary of a report (what `engine bench` prints at the end).
std::string summarize_step_bench(const nlohmann::json& report);

// Percentiles of step times (linear interpolation between order statistics), as in the JSON.
nlohmann::json step_time_stats(std::vector<double> ms);

}  // namespace engine::perf
