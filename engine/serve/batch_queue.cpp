#include "engine/serve/batch_queue.h"

#include <exception>

#include "engine/error.h"

namespace engine::serve {

DynamicBatcher::DynamicBatcher(BatchLimits limits, Runner run, std::function<void(const BatchInfo&)> on_batch)
    : limits_(limits), run_(std::move(run)), on_batch_(std::move(on_batch)) {
  ENGINE_CHECK(limits_.max_batch_tokens > 0 && limits_.max_batch_sequences > 0 && limits_.max_queued > 0,
               "batch limits must be positive");
}

DynamicBatcher::~DynamicBatcher() { stop(); }

void DynamicBatcher::start(std::function<void()> first) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!thread_.joinable() && !stopping_) thread_ = std::thread([this, first] { loop(first); });
}

bool DynamicBatcher::submit(std::shared_ptr<Job> job) {
  ENGINE_CHECK(job->tokens() <= limits_.max_batch_tokens && job->sequences() <= limits_.max_batch_sequences,
               "a request of ", job->sequences(), " inputs and ", job->tokens(),
               " tokens does not fit one batch (at most ", limits_.max_batch_sequences, " inputs, ",
               limits_.max_batch_tokens, " tokens)");
  ENGINE_CHECK(job->sequences() > 0, "a request without inputs");
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || int64_t(queue_.size()) + running_ >= limits_.max_queued) return false;
    job->enqueued = Clock::now();
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
  return true;
}

void DynamicBatcher::stop_waiting() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    no_wait_ = true;
  }
  cv_.notify_all();
}

void DynamicBatcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

int64_t DynamicBatcher::queued_requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int64_t(queue_.size());
}

int64_t DynamicBatcher::pending_requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return int64_t(queue_.size()) + running_;
}

// True when the waiting jobs already fill a batch: waiting longer would not make it bigger.
bool DynamicBatcher::queue_fills_a_batch() const {
  int64_t tokens = 0, sequences = 0;
  for (const auto& job : queue_) {
    tokens += job->tokens();
    sequences += job->sequences();
    if (tokens >= limits_.max_batch_tokens || sequences >= limits_.max_batch_sequences) return true;
  }
  return false;
}

// Waits for a first job, then up to max_wait after its arrival for the batch to fill, and takes
// jobs in arrival order while they fit. Empty: stopping with nothing left to run.
std::vector<std::shared_ptr<Job>> DynamicBatcher::take_batch(std::unique_lock<std::mutex>& lock) {
  cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) return {};
  const Clock::time_point deadline = queue_.front()->enqueued + limits_.max_wait;
  cv_.wait_until(lock, deadline, [&] { return stopping_ || no_wait_ || queue_fills_a_batch(); });
  std::vector<std::shared_ptr<Job>> batch;
  int64_t tokens = 0, sequences = 0;
  while (!queue_.empty()) {
    const Job& next = *queue_.front();
    if (!batch.empty() && (tokens + next.tokens() > limits_.max_batch_tokens ||
                           sequences + next.sequences() > limits_.max_batch_sequences))
      break;
    tokens += next.tokens();
    sequences += next.sequences();
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  running_ = int64_t(batch.size());
  return batch;
}

void DynamicBatcher::loop(const std::function<void()>& first) {
  if (first) first();
  for (;;) {
    std::vector<std::shared_ptr<Job>> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      batch = take_batch(lock);
    }
    if (batch.empty()) return;
    run_batch(batch);
    std::lock_guard<std::mutex> lock(mu_);
    running_ = 0;
  }
}

void DynamicBatcher::run_batch(std::vector<std::shared_ptr<Job>>& batch) {
  BatchInfo info;
  std::vector<Job*> jobs;
  const Clock::time_point start = Clock::now();
  for (auto& job : batch) {
    job->started = start;
    info.tokens += job->tokens();
    info.sequences += job->sequences();
    jobs.push_back(job.get());
  }
  info.requests = int64_t(batch.size());
  // A failure fails this batch's jobs only; the batcher goes on with the next batch.
  std::string error;
  try {
    run_(jobs);
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown error";
  }
  const Clock::time_point end = Clock::now();
  info.seconds = std::chrono::duration<double>(end - start).count();
  info.failed = !error.empty();
  if (on_batch_) on_batch_(info);
  for (auto& job : batch) {
    job->finished = end;
    if (!error.empty()) job->error = "inference failed: " + error;
    try {
      if (job->done) job->done(*job);
    } catch (...) {
      // A reply that cannot be sent (the client went away) must not stop the batcher.
    }
  }
}

}  // namespace engine::serve
