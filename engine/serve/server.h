// `engine serve`: a fine-tuned model behind HTTP. Request threads parse and tokenize; the dynamic
// batcher (batch_queue.h) packs waiting requests into one packed batch and runs the same forward
// pass as `engine predict` (engine::predict over the batch); each request gets its own results.
//
// Endpoints: POST /predict (text-embeddings-inference's API, api.h), GET /health (200 once the
// model is loaded and a warm-up batch ran, 503 before), GET /info (JSON), GET /metrics
// (Prometheus text).
//
// Question answering models (TEI has none; the same request shape): each input is a pair
// [question, context] ({"inputs": ["q", "c"]} or a batch [["q1", "c1"], ...]) and its answer is
// {"answer", "score", "start", "end"} (plus "null_odds" with --version-2-with-negative), exactly
// what `engine predict --task qa` prints: start and end are character offsets into the context.
// The context is cut into windows of --max-input-length tokens (default 384, as predict's
// --max-length) with --doc-stride of overlap, so a long context is several windows, not an error;
// truncate and raw_scores do not apply. A request's windows go into one batch together.
//
// Errors are JSON {"error", "error_type"}:
//   400 malformed HTTP           404 unknown path            405 wrong method
//   413 body over --payload-limit, more inputs than --max-client-batch-size, an input longer
//       than --max-input-length without truncate, a qa request with more windows than a batch
//   422 invalid JSON or fields, empty text, a pair for a token model, left truncation of a pair,
//       a single text (not a [question, context] pair) for a qa model
//   429 more than --max-concurrent-requests pending (with Retry-After)
//   500 the batch holding the request failed (only that batch's requests)
//   501 a task the server cannot answer yet         503 warming up
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>

#include "engine/serve/batch_queue.h"
#include "engine/serve/http_server.h"
#include "engine/serve/metrics.h"
#include "engine/serve/predictor.h"

namespace engine::serve {

struct PredictRequest;  // api.h

struct ServeOptions {
  std::string model_dir, task;  // task empty: what the model was trained for
  std::string adapter_dir;      // a LoRA adapter applied to model_dir (its base), or empty
  RuntimeOptions runtime;
  HttpOptions http;
  std::string port_file;         // written (atomically) with the bound port once listening
  int64_t max_input_length = 0;  // tokens per input with [CLS]/[SEP]; 0: max_position_embeddings
                                 // (qa: tokens per window; 0: 384, or less when the model is shorter)
  QaOptions qa;                  // qa: windows and answers, as `engine predict --task qa` takes them
  BatchLimits batch;
  int64_t max_client_batch_size = 32;  // inputs per request
  bool auto_truncate = false;          // truncate long inputs when a request does not say
};

class Server {
 public:
  // Runs one batch on the model. Tests wrap it (to fail a batch on purpose); the binary does not.
  using RunnerWrap = std::function<void(std::vector<Job*>&, const DynamicBatcher::Runner& model)>;
  // Loads the model and binds the port (throws engine::Error on a bad model, flag or port).
  Server(const ServeOptions& options, std::ostream& log, RunnerWrap wrap = {});
  ~Server();
  int port() const { return http_->port(); }
  // Serves until SIGTERM/SIGINT (when options.http.handle_signals) or stop(); returns the exit
  // code: 0 after a clean drain, 1 when the warm-up batch failed.
  int run();
  void stop() { http_->stop(); }
  bool ready() const { return ready_; }

 private:
  void log(const std::string& line);
  void handle(HttpRequest req, Reply reply);
  void predict(const std::string& body, const Reply& reply, Clock::time_point arrived);
  TaskData encode(const PredictRequest& request) const;
  TaskData encode_qa(const PredictRequest& request) const;
  std::string info_json() const;
  void run_batch(std::vector<Job*>& jobs);

  ServeOptions options_;
  std::ostream& log_;
  std::mutex log_mu_;  // log lines come from the batcher and the HTTP threads
  ModelDir dir_;
  LoadedModel model_;
  int64_t max_input_length_ = 0;
  ServerMetrics metrics_;
  std::unique_ptr<DynamicBatcher> batcher_;
  std::unique_ptr<HttpServer> http_;
  std::atomic<bool> ready_{false};
  std::atomic<int> exit_code_{0};
};

}  // namespace engine::serve
