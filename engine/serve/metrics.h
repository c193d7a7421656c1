// The counters and histograms of `engine serve`, rendered in Prometheus' text exposition format
// (version 0.0.4) for GET /metrics. Thread-safe; every metric name starts with `engine_`.
#pragma once
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace engine::serve {

// Cumulative buckets as Prometheus counts them: bucket i counts observations <= bounds[i]; +Inf
// counts all of them.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size(), 0) {}
  void observe(double v);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative (summed when rendered)
  uint64_t count_ = 0;
  double sum_ = 0;
  mutable std::mutex mu_;
};

class ServerMetrics {
 public:
  ServerMetrics();
  // One HTTP request answered on `path` with `status`.
  void count_request(const std::string& path, int status);
  void observe_batch(int64_t tokens, int64_t sequences, double seconds, bool failed);
  void observe_request(double queue_seconds, double total_seconds);
  // queue_depth: requests waiting for a batch, read when rendering.
  std::string render(int64_t queue_depth, int64_t pending) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (path, status) -> count
  uint64_t batches_ = 0, failed_batches_ = 0;
  Histogram batch_tokens_, batch_sequences_, queue_seconds_, inference_seconds_, request_seconds_;
};

}  // namespace engine::serve
