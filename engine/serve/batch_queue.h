// The dynamic batcher of `engine serve`: requests wait in a queue; one thread packs waiting
// requests into one batch under a token budget (max_batch_tokens) and a sequence budget
// (max_batch_sequences), waiting at most max_wait after the oldest request arrived for more to fill
// it, runs the batch, and hands each request its own results. One thread owns the model, so the
// model (and its GPU stream) is never used concurrently; tokenisation happens before submit(), on
// the request threads.
//
// A request is never split across batches: submit() refuses one larger than a batch (the server
// checks this first and answers 413). The queue holds at most max_queued requests (waiting or in
// the running batch): submit() refuses more (the server answers 429). When running a batch throws,
// every request of that batch, and only those, gets the error message.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/train/task.h"

namespace engine::serve {

using Clock = std::chrono::steady_clock;

// One request's inputs, tokenized, and, after its batch ran, its results or an error.
struct Job {
  TaskData input;       // its examples, in request order
  Predictions output;   // filled by the runner
  std::string error;    // non-empty: the batch failed
  Clock::time_point enqueued, started, finished;
  int64_t tokens() const { return input.tokens(); }
  int64_t sequences() const { return int64_t(input.examples.size()); }
  // Called once, on the batcher thread, when the job has its output or its error.
  std::function<void(Job&)> done;
};

struct BatchLimits {
  int64_t max_batch_tokens = 16384;
  int64_t max_batch_sequences = 256;
  std::chrono::microseconds max_wait{2000};
  int64_t max_queued = 512;
};

// What one batch was, for metrics.
struct BatchInfo {
  int64_t requests = 0, sequences = 0, tokens = 0;
  double seconds = 0;  // running the batch
  bool failed = false;
};

class DynamicBatcher {
 public:
  // run: computes the output of every job of a batch (throws to fail the batch). on_batch: called
  // after each batch (metrics), may be empty.
  using Runner = std::function<void(std::vector<Job*>& batch)>;
  DynamicBatcher(BatchLimits limits, Runner run, std::function<void(const BatchInfo&)> on_batch = {});
  ~DynamicBatcher();  // stop()

  // Starts the batcher thread; it first calls `first` (the server's warm-up batch, run without
  // waiting for --max-wait), then takes batches from the queue.
  void start(std::function<void()> first = {});
  // Queues a job; false when the queue is full or the batcher stops (the job is not taken).
  // Throws engine::Error for a job that can never fit a batch.
  bool submit(std::shared_ptr<Job> job);
  // From now on a batch starts as soon as the batcher is free, without waiting to fill (shutdown:
  // no more requests are coming).
  void stop_waiting();
  // Runs the jobs still queued, then ends the thread. Idempotent.
  void stop();

  int64_t queued_requests() const;   // waiting, not yet in a batch
  int64_t pending_requests() const;  // waiting or in the running batch
  const BatchLimits& limits() const { return limits_; }

 private:
  void loop(const std::function<void()>& first);
  std::vector<std::shared_ptr<Job>> take_batch(std::unique_lock<std::mutex>& lock);
  bool queue_fills_a_batch() const;
  void run_batch(std::vector<std::shared_ptr<Job>>& batch);

  BatchLimits limits_;
  Runner run_;
  std::function<void(const BatchInfo&)> on_batch_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  int64_t running_ = 0;  // jobs in the batch being run
  bool stopping_ = false;
  bool no_wait_ = false;
  std::thread thread_;
};

}  // namespace engine::serve
