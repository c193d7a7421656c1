#include "engine/serve/metrics.h"

#include <cmath>
#include <cstdio>

namespace engine::serve {

namespace {

// Prometheus numbers: integers without a decimal point, others with enough digits to round-trip.
std::string num(double v) {
  char buf[64];
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::vector<double> powers_of_two(double first, int n) {
  std::vector<double> b;
  for (int i = 0; i < n; ++i) b.push_back(first * std::pow(2.0, i));
  return b;
}

// Latency buckets from 100 us to about 52 s, doubling.
std::vector<double> latency_buckets() { return powers_of_two(1e-4, 20); }

}  // namespace

void Histogram::observe(double v) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < bounds_.size(); ++i)
    if (v <= bounds_[i]) {
      ++counts_[i];
      break;
    }
  ++count_;
  sum_ += v;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lock(mu_);
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + num(double(cumulative)) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + num(double(count_)) + "\n";
  out += name + "_sum " + num(sum_) + "\n" + name + "_count " + num(double(count_)) + "\n";
}

ServerMetrics::ServerMetrics()
    : batch_tokens_(powers_of_two(16, 12)),
      batch_sequences_(powers_of_two(1, 10)),
      queue_seconds_(latency_buckets()),
      inference_seconds_(latency_buckets()),
      request_seconds_(latency_buckets()) {}

void ServerMetrics::count_request(const std::string& path, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{path, status}];
}

void ServerMetrics::observe_batch(int64_t tokens, int64_t sequences, double seconds, bool failed) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++batches_;
    failed_batches_ += failed;
  }
  batch_tokens_.observe(double(tokens));
  batch_sequences_.observe(double(sequences));
  inference_seconds_.observe(seconds);
}

void ServerMetrics::observe_request(double queue_seconds, double total_seconds) {
  queue_seconds_.observe(queue_seconds);
  request_seconds_.observe(total_seconds);
}

std::string ServerMetrics::render(int64_t queue_depth, int64_t pending) const {
  std::string out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out += "# HELP engine_http_requests_total HTTP requests answered, by path and status code.\n"
           "# TYPE engine_http_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      out += "engine_http_requests_total{path=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"} " +
             num(double(n)) + "\n";
    out += "# HELP engine_batches_total Batches run.\n# TYPE engine_batches_total counter\n";
    out += "engine_batches_total " + num(double(batches_)) + "\n";
    out += "# HELP engine_batch_failures_total Batches whose run failed (their requests got 500).\n"
           "# TYPE engine_batch_failures_total counter\n";
    out += "engine_batch_failures_total " + num(double(failed_batches_)) + "\n";
  }
  out += "# HELP engine_queue_depth Requests waiting for a batch.\n# TYPE engine_queue_depth gauge\n";
  out += "engine_queue_depth " + num(double(queue_depth)) + "\n";
  out += "# HELP engine_pending_requests Requests accepted and not yet answered by the batcher.\n"
         "# TYPE engine_pending_requests gauge\n";
  out += "engine_pending_requests " + num(double(pending)) + "\n";
  batch_tokens_.render(out, "engine_batch_tokens", "Tokens per batch.");
  batch_sequences_.render(out, "engine_batch_sequences", "Sequences (inputs) per batch.");
  queue_seconds_.render(out, "engine_queue_seconds", "Time a request waited in the queue before its batch started.");
  inference_seconds_.render(out, "engine_inference_seconds", "Time to run one batch (forward pass and read-back).");
  request_seconds_.render(out, "engine_request_seconds", "Time from a predict request's arrival to its answer.");
  return out;
}

}  // namespace engine::serve
