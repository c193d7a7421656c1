// engine serve: a fine-tuned model behind HTTP with dynamic packed batching (engine/serve/server.h).
#include <cstdlib>
#include <iostream>

#include "engine/cli/commands.h"
#include "engine/serve/server.h"

namespace engine::cli {

void add_serve_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve a fine-tuned model over HTTP/1.1: POST /predict (text-embeddings-inference's API: \"inputs\" a\n"
      "text, a pair [a, b] or a batch [[a], [a, b], ...]; for a qa model, [question, context] pairs answered\n"
      "{answer, score, start, end} as `engine predict --task qa` answers), GET /health, /info, /metrics (Prometheus).\n"
      "Requests are packed into batches by a batcher thread. SIGTERM or SIGINT: stop accepting, answer the\n"
      "requests in flight, exit 0.");
  auto o = std::make_shared<serve::ServeOptions>();
  auto max_wait_us = std::make_shared<int64_t>(2000);
  cmd->add_option("--model", o->model_dir, "fine-tuned model directory (config.json, vocab.txt, model.safetensors)")
      ->required();
  cmd->add_option("--adapter", o->adapter_dir,
                  "LoRA adapter directory (from `engine finetune --peft lora` or Hugging Face peft) applied to "
                  "--model, the base it was trained on");
  cmd->add_option("--task", o->task, "classify, regress, tokens or qa (default: what the model was trained for)");
  cmd->add_option("--host", o->http.host, "IP address to listen on (0.0.0.0: every interface)")->capture_default_str();
  cmd->add_option("--port", o->http.port, "port to listen on (0: any free port; see --port-file)")->capture_default_str();
  cmd->add_option("--port-file", o->port_file, "write the port listened on to this file once listening");
  cmd->add_option("--backend", o->runtime.backend, "cpu, cpu-ref, cuda or auto")->capture_default_str();
  cmd->add_option("--precision", o->runtime.precision, "bf16, fp32 or auto")->capture_default_str();
  cmd->add_option("--attention", o->runtime.attention, "cuda attention: auto, flash, cudnn or simple")->capture_default_str();
  cmd->add_option("--max-input-length", o->max_input_length,
                  "tokens per input with [CLS]/[SEP] (default: the model's max_position_embeddings); qa: tokens\n"
                  "per window of a question and its context (default: 384, or max_position_embeddings when smaller)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--auto-truncate", o->auto_truncate,
                "cut long inputs when a request does not set \"truncate\" (default: answer 413)");
  // qa: the same flags and defaults as `engine predict --task qa` (engine/cli/data_flags.h).
  cmd->add_option("--doc-stride", o->qa.doc_stride, "qa: tokens of overlap between a context's windows")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--n-best-size", o->qa.n_best_size, "qa: start and end candidates per window")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-answer-length", o->qa.max_answer_length, "qa: longest answer, in tokens")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--null-score-diff-threshold", o->qa.null_score_diff_threshold,
                  "qa, SQuAD v2: answer nothing when the null score beats the best answer's by more than this")
      ->capture_default_str();
  cmd->add_flag("--version-2-with-negative", o->qa.version_2_with_negative,
                "qa: questions may have no answer (SQuAD v2 post-processing: answer \"\" when the null score wins,\n"
                "and null_odds in each answer), as predict from standard input takes it");
  cmd->add_option("--max-batch-tokens", o->batch.max_batch_tokens, "tokens in one packed batch")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-batch-requests", o->batch.max_batch_sequences, "inputs (sequences) in one packed batch")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-wait-us", *max_wait_us,
                  "how long the batcher waits, after the oldest waiting request arrived, for more to fill a batch (microseconds)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-concurrent-requests", o->batch.max_queued,
                  "requests queued or in the running batch; beyond it 429 with Retry-After")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--max-client-batch-size", o->max_client_batch_size, "inputs in one request; beyond it 413")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--payload-limit", o->http.payload_limit, "bytes of a request body; beyond it 413")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--read-timeout", o->http.read_timeout_s,
                  "seconds for a request's header, then its body, to arrive (and an idle keep-alive connection's\n"
                  "wait for the next request) before the connection is closed")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--http-threads", o->http.threads, "threads that read, parse and tokenize requests")
      ->capture_default_str()->check(CLI::PositiveNumber);
  cmd->callback([o, max_wait_us] {
    o->batch.max_wait = std::chrono::microseconds(*max_wait_us);
    serve::Server server(*o, std::cerr);
    const int code = server.run();
    if (code != 0) std::exit(code);
  });
}

}  // namespace engine::cli
