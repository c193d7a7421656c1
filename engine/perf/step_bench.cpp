// The end-to-end step bench (step_bench.h): options, batches, the timed loops (eager, CUDA graphs,
// instrumented), the peak GEMM, and the JSON report.
#include "engine/perf/step_bench.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <tuple>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/io/result_path.h"
#include "engine/model/bert.h"
#include "engine/perf/timed_backend.h"
#include "engine/train/optimizer.h"
#include "engine/train/trainer.h"
#include "tokenizer/encode.h"

namespace engine::perf {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------------------------

namespace {

// A whole-string non-negative integer, or nullopt-like false.
bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty() || s.size() > 18) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  out = std::stoll(s);
  return true;
}

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

}  // namespace

StepRange parse_profile_steps(const std::string& text) {
  if (text.empty()) return {};
  const size_t colon = text.find(':');
  int64_t a = 0, b = 0;
  ENGINE_CHECK(colon != std::string::npos && parse_int(text.substr(0, colon), a) &&
                   parse_int(text.substr(colon + 1), b),
               "--profile-steps '", text, "' is not A:B with non-negative integers A <= B (e.g. 10:14)");
  ENGINE_CHECK(a <= b, "--profile-steps '", text, "': the first step ", a, " is after the last ", b);
  ENGINE_CHECK(b < (int64_t(1) << 30), "--profile-steps '", text, "': step numbers too large");
  return StepRange{int(a), int(b)};
}

BertConfig load_bench_config(const std::string& name_or_path) {
  for (const char* named : {"bert-tiny", "bert-mini", "bert-base", "bert-large"})
    if (name_or_path == named) return BertConfig::named(name_or_path);
  fs::path p(name_or_path);
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    fs::path file = p / "config.json";
    ENGINE_CHECK(fs::exists(file, ec), "--config ", name_or_path, ": the directory has no config.json");
    return BertConfig::from_file(file.string());
  }
  if (fs::is_regular_file(p, ec)) return BertConfig::from_file(p.string());
  fail("--config '", name_or_path,
       "' is neither a named config (bert-tiny, bert-mini, bert-base, bert-large) nor a model directory or "
       "config.json");
}

std::vector<int64_t> read_lengths_file(const std::string& path, int64_t max_position) {
  std::ifstream in(path);
  ENGINE_CHECK(in, "--lengths ", path, ": cannot open the file (expected one sequence length per line, or 'sst2')");
  std::vector<int64_t> lengths;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    const std::string t = trim(line);
    if (t.empty()) continue;
    int64_t n = 0;
    ENGINE_CHECK(parse_int(t, n), "--lengths ", path, ": line ", number, " ('", t,
                 "') is not a positive integer length");
    ENGINE_CHECK(n >= 1, "--lengths ", path, ": line ", number, " has length 0");
    ENGINE_CHECK(n <= max_position, "--lengths ", path, ": line ", number, " has length ", n,
                 ", more than max_position_embeddings ", max_position);
    lengths.push_back(n);
  }
  ENGINE_CHECK(!lengths.empty(), "--lengths ", path, ": the file holds no lengths");
  return lengths;
}

std::vector<int64_t> sst2_lengths(const std::string& data_dir, int64_t max_position) {
  const fs::path train = fs::path(data_dir) / "sst2" / "train.tsv";
  const fs::path vocab = fs::path(data_dir) / "vocab" / "bert-base-uncased" / "vocab.txt";
  ENGINE_CHECK(fs::exists(train) && fs::exists(vocab), "--lengths sst2 needs ", train.string(), " and ",
               vocab.string(), " (set --data-dir to the shared data folder)");
  tokenizer::BertTokenizer tok(tokenizer::Vocab::load(vocab.string()), true);
  std::ifstream in(train);
  std::string line;
  std::getline(in, line);  // header: sentence<TAB>label
  std::vector<std::string> sentences;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    sentences.push_back(line.substr(0, line.find('\t')));
  }
  std::vector<std::string_view> a(sentences.begin(), sentences.end());
  tokenizer::EncodeOptions eo;
  eo.max_length = int(max_position);
  std::vector<tokenizer::Encoding> enc = tok.encode_batch(a, {}, eo);
  std::vector<int64_t> lengths;
  lengths.reserve(enc.size());
  for (const tokenizer::Encoding& e : enc) lengths.push_back(int64_t(e.size()));
  ENGINE_CHECK(!lengths.empty(), train.string(), ": no sentences");
  return lengths;
}

json step_time_stats(std::vector<double> ms) {
  if (ms.empty()) return nullptr;
  std::sort(ms.begin(), ms.end());
  auto pct = [&](double q) {
    const double pos = q * double(ms.size() - 1);
    const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, ms.size() - 1);
    return ms[lo] + (ms[hi] - ms[lo]) * (pos - double(lo));
  };
  double sum = 0;
  for (double v : ms) sum += v;
  return {{"median", pct(0.5)}, {"p10", pct(0.1)},  {"p90", pct(0.9)},
          {"min", ms.front()},  {"max", ms.back()}, {"mean", sum / double(ms.size())}};
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

namespace {

// One bench batch: the packed batch the model sees and the numbers the report needs.
struct BenchBatch {
  PackedBatch packed;
  int64_t real_sequences = 0, real_tokens = 0;
  double sum_len_sq = 0;  // of the real sequences (attention FLOPs)
};

// Packs sequences of the given lengths with random ids and labels; labels[i] < 0 marks a filler.
PackedBatch pack_lengths(const std::vector<int64_t>& lengths, const std::vector<int32_t>& labels,
                         const BertConfig& config, std::mt19937_64& rng) {
  PackedBatch b;
  b.cu_seqlens.push_back(0);
  const int32_t vocab = int32_t(config.vocab_size);
  const int32_t cls = vocab > 101 ? 101 : 0;  // bert-base-uncased's [CLS]; any id works for timing
  for (size_t s = 0; s < lengths.size(); ++s) {
    const int32_t len = int32_t(lengths[s]);
    b.cls_rows.push_back(b.cu_seqlens.back());
    for (int32_t i = 0; i < len; ++i) {
      b.ids.push_back(i == 0 ? cls : int32_t(rng() % uint64_t(vocab)));
      b.type_ids.push_back(0);
      b.pos_ids.push_back(i);
    }
    b.cu_seqlens.push_back(b.cu_seqlens.back() + len);
    b.labels.push_back(labels[s]);
    b.targets.push_back(0.f);
    // Answer spans (read by --task qa only): inside a real sequence; past the end of a filler, which
    // the span loss ignores as the classification loss ignores its label -1.
    const int32_t start = labels[s] < 0 ? len : int32_t(s % size_t(len));
    b.span_positions.push_back(start);
    b.span_positions.push_back(labels[s] < 0 ? len : std::min(len - 1, start + 3));
    b.example_index.push_back(int64_t(s));
    b.max_seqlen = std::max<int64_t>(b.max_seqlen, len);
  }
  b.sequences = int64_t(lengths.size());
  b.tokens = b.cu_seqlens.back();
  return b;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The key of a captured graph: everything about a batch the host bakes into kernel arguments.
using ShapeKey = std::tuple<int64_t, int64_t, int64_t>;  // tokens, sequences, max_seqlen

// A real-length batch padded for graph reuse: T rounded up to a multiple of `bucket` (at least one
// filler token), max_seqlen bucketed to a multiple of 32. Fillers have label -1 (ignored by the
// loss, zero gradient), so the update equals that of the real batch. `capture` is a batch of the
// same (T, B) whose longest sequence has the bucketed length: capturing with it sizes the attention
// launch for any batch of this key (kernels read the real lengths from cu_seqlens).
struct PaddedBatch {
  BenchBatch batch;
  ShapeKey key;
  PackedBatch capture;  // empty cu_seqlens: capture with `batch` itself
};

PaddedBatch pad_to_bucket(const std::vector<int64_t>& lengths, const std::vector<int32_t>& labels, int64_t bucket,
                          const BertConfig& config, std::mt19937_64& rng) {
  const int64_t max_pos = config.max_position_embeddings;
  int64_t T = 0, max_len = 0;
  for (int64_t l : lengths) {
    T += l;
    max_len = std::max(max_len, l);
  }
  const int64_t m_bucket = std::min(round_up(max_len, 32), max_pos);
  const int64_t t_bucket = round_up(T + 1, bucket);
  std::vector<int64_t> lens = lengths;
  std::vector<int32_t> labs = labels;
  for (int64_t rest = t_bucket - T; rest > 0;) {  // fillers no longer than the bucketed max length
    const int64_t piece = std::min(rest, m_bucket);
    lens.push_back(piece);
    labs.push_back(-1);
    rest -= piece;
  }
  PaddedBatch p;
  p.batch.packed = pack_lengths(lens, labs, config, rng);
  const int64_t n = int64_t(lens.size());
  // The capture batch: first sequence m_bucket long, the rest of the tokens spread evenly.
  const int64_t rest = t_bucket - m_bucket, others = n - 1;
  if (m_bucket > max_len && others >= 1 && rest >= others && rest <= others * m_bucket) {
    std::vector<int64_t> cl(size_t(n), 0);
    cl[0] = m_bucket;
    for (int64_t i = 0; i < others; ++i) cl[size_t(i + 1)] = rest / others + (i < rest % others ? 1 : 0);
    p.capture = pack_lengths(cl, labs, config, rng);  // same labels: same rows counted by the loss
    p.key = ShapeKey{t_bucket, n, m_bucket};
  } else {
    p.key = ShapeKey{t_bucket, n, max_len};
  }
  return p;
}

void fill_counts(BenchBatch& b, const std::vector<int64_t>& real_lengths) {
  b.real_sequences = int64_t(real_lengths.size());
  b.real_tokens = 0;
  b.sum_len_sq = 0;
  for (int64_t l : real_lengths) {
    b.real_tokens += l;
    b.sum_len_sq += double(l) * double(l);
  }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

std::string engine_commit() {
  std::string out;
  if (FILE* p = popen("git rev-parse --short HEAD 2>/dev/null", "r")) {
    char buf[64];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
  }
  out = trim(out);
  return out.empty() ? "unknown" : out;
}

std::string fmt(double v, int digits) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

json or_null(double v) { return std::isfinite(v) && v > 0 ? json(v) : json(nullptr); }

// Everything the timed loops share.
class Bench {
 public:
  Bench(const StepBenchOptions& o, std::ostream& log) : o_(o), log_(log) {}
  json run();

 private:
  void resolve();
  void make_batches();
  void measure_peak_gemm();
  void build_model();
  // One training step on batch b. With `graphs`, replays (or captures) the graph of its shape.
  void eager_step(const PackedBatch& batch, uint64_t seed);
  void step_ops(uint64_t seed);
  void graph_step(size_t index, uint64_t seed);
  std::vector<double> timed_loop(bool graphs, bool profile);
  void breakdown(json& report);
  json report();

  StepBenchOptions o_;
  std::ostream& log_;
  BertConfig config_;
  std::string config_name_, backend_name_;
  DType act_ = DType::f32;
  StepRange profile_;
  bool graphs_ = false;
  bool real_lengths_ = false;
  std::vector<int64_t> lengths_;

  std::vector<BenchBatch> batches_;  // exact batches, one per step (warm-up and timed)
  std::vector<PaddedBatch> padded_;  // graph runs: one per batch
  int64_t max_tokens_ = 0, max_sequences_ = 0;

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<TimedBackend> timed_;
  std::unique_ptr<BertModel> model_;
  std::unique_ptr<Optimizer> optimizer_;

  json peak_gemm_ = nullptr;
  double peak_measured_ = 0;
  int64_t device_used_before_ = -1;
  int64_t intervals_per_step_ = 0;

  // Graphs.
  std::map<ShapeKey, std::unique_ptr<CapturedWork>> graphs_by_shape_;
  size_t captured_scratch_ = 0;  // workspace size the cached graphs were captured with
  void drop_stale_graphs();
  std::map<ShapeKey, bool> eager_shapes_;  // shapes already run eagerly (workspace grown)
  int captures_ = 0, replays_ = 0, hits_ = 0, fallbacks_ = 0;

  std::vector<double> eager_ms_, graph_ms_;
  uint64_t step_counter_ = 0;
};

void Bench::resolve() {
  profile_ = parse_profile_steps(o_.profile_steps);
  config_ = load_bench_config(o_.config);
  ENGINE_CHECK(o_.task == "classify" || o_.task == "qa", "--task must be classify or qa (got '", o_.task, "')");
  config_.num_labels = 2;
  config_.id2label.clear();
  config_.problem_type.clear();
  config_name_ = io::result_path(o_.config);  // as the report names it (a named config stays as it is)
  ENGINE_CHECK(o_.batch >= 1, "--batch must be at least 1 (got ", o_.batch, ")");
  real_lengths_ = !o_.lengths.empty();
  if (!real_lengths_) {
    ENGINE_CHECK(o_.seq >= 1, "--seq must be at least 1 (got ", o_.seq, ")");
    ENGINE_CHECK(o_.seq <= config_.max_position_embeddings, "--seq ", o_.seq, " is more than max_position_embeddings ",
                 config_.max_position_embeddings, " of ", config_name_);
  }
  ENGINE_CHECK(o_.cuda_graphs == "on" || o_.cuda_graphs == "off" || o_.cuda_graphs == "auto",
               "--cuda-graphs must be on, off or auto (got '", o_.cuda_graphs, "')");
  ENGINE_CHECK(o_.max_graphs >= 1, "--max-graphs must be at least 1");
  ENGINE_CHECK(o_.token_bucket >= 0, "--token-bucket must be >= 0");
  ENGINE_CHECK(o_.warmup >= -1 && o_.steps >= -1 && o_.breakdown_steps >= -1,
               "--warmup, --steps and --breakdown-steps must be >= 0");
  ENGINE_CHECK(o_.peak_gemm >= -1, "--peak-gemm must be >= 0");
  backend_name_ = resolve_backend(o_.backend);
  act_ = resolve_precision(o_.precision, backend_name_);
  const bool gpu = backend_name_ == "cuda";
  // On the CPU a BERT-base step takes about a minute on 2 cores (the fast backend) to many minutes
  // (the reference): one timed step and one instrumented step by default there.
  if (o_.warmup < 0) o_.warmup = gpu ? 10 : 0;
  if (o_.steps < 0) o_.steps = gpu ? 50 : 1;
  if (o_.breakdown_steps < 0) o_.breakdown_steps = gpu ? 5 : 1;
  if (o_.peak_gemm < 0) o_.peak_gemm = gpu ? 8192 : 256;
  ENGINE_CHECK(o_.steps >= 1, "--steps must be at least 1");
  ENGINE_CHECK(profile_.first > profile_.last || profile_.last < o_.steps, "--profile-steps ", o_.profile_steps,
               " reaches past the last timed step ", o_.steps - 1);
  if (real_lengths_) {
    lengths_ = o_.lengths == "sst2" ? sst2_lengths(o_.data_dir, config_.max_position_embeddings)
                                    : read_lengths_file(o_.lengths, config_.max_position_embeddings);
  }
}

void Bench::make_batches() {
  std::mt19937_64 rng(o_.seed);
  const size_t count = size_t(o_.warmup + o_.steps);
  size_t cursor = 0;
  for (size_t i = 0; i < count; ++i) {
    std::vector<int64_t> lens;
    for (int64_t s = 0; s < o_.batch; ++s) {
      if (real_lengths_) {
        lens.push_back(lengths_[cursor]);
        cursor = (cursor + 1) % lengths_.size();
      } else {
        lens.push_back(o_.seq);
      }
    }
    std::vector<int32_t> labels;
    for (size_t s = 0; s < lens.size(); ++s) labels.push_back(int32_t(rng() % uint64_t(config_.num_labels)));
    BenchBatch b;
    b.packed = pack_lengths(lens, labels, config_, rng);
    fill_counts(b, lens);
    max_tokens_ = std::max(max_tokens_, b.packed.tokens);
    max_sequences_ = std::max(max_sequences_, b.packed.sequences);
    if (graphs_ && real_lengths_ && o_.token_bucket > 0) {
      PaddedBatch p = pad_to_bucket(lens, labels, o_.token_bucket, config_, rng);
      fill_counts(p.batch, lens);
      max_tokens_ = std::max(max_tokens_, p.batch.packed.tokens);
      max_sequences_ = std::max(max_sequences_, p.batch.packed.sequences);
      padded_.push_back(std::move(p));
    }
    batches_.push_back(std::move(b));
  }
}

void Bench::measure_peak_gemm() {
  if (o_.peak_gemm == 0) return;
  const int64_t n = o_.peak_gemm;
  Backend& be = *backend_;
  const size_t bytes = size_t(n) * size_t(n) * dtype_size(act_);
  void* x = be.allocate(bytes);
  void* w = be.allocate(bytes);
  void* y = be.allocate(bytes);
  Tensor tx(x, act_, be.device(), {n, n}), tw(w, act_, be.device(), {n, n}), ty(y, act_, be.device(), {n, n});
  be.fill(tx, 0.01f);
  be.fill(tw, 0.01f);
  const int reps = be.device() == Device::cuda ? 20 : 3;
  std::unique_ptr<StepTimer> timer = be.make_timer(2 * (reps + 1));
  double best = 1e300;
  for (int r = 0; r <= reps; ++r) {  // r == 0 is the warm-up (plans, clocks)
    timer->mark(2 * r);
    be.linear_forward(ty, tx, tw, Tensor{}, Activation::none, Tensor{});
    timer->mark(2 * r + 1);
    if (r > 0) best = std::min(best, timer->elapsed_ms(2 * r, 2 * r + 1));
  }
  be.synchronize();
  be.release(x);
  be.release(w);
  be.release(y);
  peak_measured_ = 2.0 * double(n) * double(n) * double(n) / (best * 1e-3) / 1e12;
  peak_gemm_ = {{"n", n}, {"ms", best}, {"tflops", peak_measured_}, {"dtype", dtype_name(act_)}};
  log_ << "peak GEMM " << n << "^3 " << dtype_name(act_) << ": " << std::fixed << std::setprecision(3) << best
       << " ms, " << (peak_measured_ >= 1 ? fmt(peak_measured_, 1) + " TFLOP/s" : fmt(peak_measured_ * 1e3, 2) + " GFLOP/s")
       << "\n";
}

void Bench::build_model() {
  ModelOptions mo;
  mo.head = o_.task == "qa" ? Head::question_answering : Head::sequence_classification;
  mo.act = act_;
  mo.max_tokens = max_tokens_;
  mo.max_sequences = max_sequences_;
  timed_ = std::make_unique<TimedBackend>(*backend_);
  model_ = std::make_unique<BertModel>(*timed_, config_, mo);
  model_->init_weights(o_.seed);
  AdamWConfig ac;
  ac.weight_decay = 0.01f;
  ac.max_grad_norm = 1.f;
  optimizer_ = std::make_unique<Optimizer>(*timed_, model_->params(), ac);
}

// The device work of one step after the upload: what a CUDA graph captures.
void Bench::step_ops(uint64_t seed) {
  timed_->set_optimizer_phase(true);
  model_->zero_grads();
  timed_->set_optimizer_phase(false);
  model_->forward(Pass::train, seed);
  model_->backward();
  timed_->set_optimizer_phase(true);
  optimizer_->compute_grad_norm();
  optimizer_->step(o_.learning_rate);
  timed_->set_optimizer_phase(false);
}

void Bench::eager_step(const PackedBatch& batch, uint64_t seed) {
  model_->set_batch(batch);
  step_ops(seed);
}

// A graph holds the backend workspace's address; an eager step of a larger shape may have grown
// (reallocated) it since, and replaying an older graph would then touch freed memory.
void Bench::drop_stale_graphs() {
  if (backend_->scratch_bytes() == captured_scratch_) return;
  graphs_by_shape_.clear();
  captured_scratch_ = backend_->scratch_bytes();
}

void Bench::graph_step(size_t index, uint64_t seed) {
  drop_stale_graphs();
  const bool padded = !padded_.empty();
  const PackedBatch& batch = padded ? padded_[index].batch.packed : batches_[index].packed;
  const ShapeKey key = padded ? padded_[index].key : ShapeKey{batch.tokens, batch.sequences, batch.max_seqlen};
  auto it = graphs_by_shape_.find(key);
  if (it == graphs_by_shape_.end()) {
    if (int(graphs_by_shape_.size()) >= o_.max_graphs) {  // cache full: this shape runs eagerly
      ++fallbacks_;
      eager_step(batch, seed);
      return;
    }
    const PackedBatch& shape_batch = padded && !padded_[index].capture.cu_seqlens.empty() ? padded_[index].capture : batch;
    if (!eager_shapes_[key]) {  // grow the workspace and plan the products for this shape first
      eager_step(shape_batch, seed);
      eager_shapes_[key] = true;
      drop_stale_graphs();
    }
    model_->set_batch(shape_batch);  // uploads stay outside the capture
    Backend& be = *backend_;
    be.begin_capture();
    try {
      step_ops(seed);
    } catch (...) {
      try {
        be.end_capture();
      } catch (...) {
      }
      throw;
    }
    it = graphs_by_shape_.emplace(key, be.end_capture()).first;
    ++captures_;
  } else {
    ++hits_;
  }
  model_->set_batch(batch);
  it->second->replay();
  ++replays_;
}

std::vector<double> Bench::timed_loop(bool graphs, bool profile) {
  std::vector<double> ms;
  const int steps = o_.steps;
  std::unique_ptr<StepTimer> timer = backend_->make_timer(2 * steps);
  for (int s = 0; s < steps; ++s) {
    const size_t index = size_t(o_.warmup + s);
    const uint64_t seed = o_.seed + ++step_counter_;
    if (profile && s == profile_.first) backend_->profiler_start();
    timer->mark(2 * s);
    if (graphs) {
      graph_step(index, seed);
    } else {
      eager_step(batches_[index].packed, seed);
    }
    timer->mark(2 * s + 1);
    if (profile && s == profile_.last) backend_->profiler_stop();
  }
  for (int s = 0; s < steps; ++s) ms.push_back(timer->elapsed_ms(2 * s, 2 * s + 1));
  return ms;
}

void Bench::breakdown(json& report) {
  const int n = o_.breakdown_steps;
  std::array<double, kOpCategories> sum{};
  std::map<std::string, std::pair<int64_t, double>> ops;
  double total = 0;
  // Marks: one per interval of a step, plus the first; pieces may add a few, so leave room.
  std::unique_ptr<StepTimer> timer = backend_->make_timer(int(intervals_per_step_) + 16);
  for (int i = 0; i < n; ++i) {
    const size_t index = size_t(o_.warmup + (i % o_.steps));
    timed_->arm(timer.get());
    eager_step(batches_[index].packed, o_.seed + ++step_counter_);
    timed_->disarm();
    const int last = timed_->marks_used() - 1;
    total += timer->elapsed_ms(0, last);
    for (const TimedBackend::Interval& iv : timed_->intervals()) {
      const double t = timer->elapsed_ms(iv.mark - 1, iv.mark);
      sum[size_t(iv.category)] += t;
      auto& op = ops[iv.name];
      op.first += 1;
      op.second += t;
    }
  }
  json cats = json::object();
  for (int c = 0; c < kOpCategories; ++c) cats[category_name(OpCategory(c))] = sum[size_t(c)] / n;
  json per_op = json::object();
  for (const auto& [name, v] : ops) per_op[name] = {{"calls", double(v.first) / n}, {"ms", v.second / n}};
  report["breakdown_ms"] = cats;
  report["breakdown_step_ms"] = total / n;
  report["breakdown_ops"] = per_op;
}

json Bench::run() {
  resolve();
  BackendOptions bo;
  bo.attention = o_.attention;
  bo.device = o_.device;
  backend_ = make_backend(backend_name_, bo);
  graphs_ = o_.cuda_graphs == "on" || (o_.cuda_graphs == "auto" && backend_->can_capture());
  ENGINE_CHECK(!graphs_ || backend_->can_capture(), "--cuda-graphs on needs a backend that captures (cuda); ",
               backend_->name(), " cannot");
  make_batches();
  const std::string device = backend_->device_label();
  log_ << "engine bench: " << config_name_ << " on " << device << " (" << backend_name_ << ", " << dtype_name(act_)
       << (backend_name_ == "cuda" ? ", attention " + o_.attention : std::string()) << "), "
       << (real_lengths_ ? "lengths " + io::result_path(o_.lengths) : "seq " + std::to_string(o_.seq)) << ", batch " << o_.batch
       << ", warm-up " << o_.warmup << ", steps " << o_.steps << "\n";
  if (backend_name_ == "cpu-ref")
    log_ << "note: the cpu-ref backend is the plain-loop reference; its numbers are for reference only\n";
  device_used_before_ = backend_->device_bytes_in_use();
  measure_peak_gemm();
  build_model();
  if (backend_name_ == "cpu-ref" && peak_measured_ > 0) {
    double flops = 0;
    for (const BenchBatch& b : batches_) flops = std::max(flops, config_.train_flops(b.real_tokens, b.sum_len_sq));
    log_ << "note: about " << fmt(flops / (peak_measured_ * 1e12), 1)
         << " s per step at the measured GEMM rate; --config bert-tiny runs in seconds\n";
  }

  // Warm-up: the largest batch first, so that the workspace reaches its final size here.
  size_t largest = 0;
  for (size_t i = 0; i < batches_.size(); ++i)
    if (batches_[i].packed.tokens > batches_[largest].packed.tokens) largest = i;
  for (int w = 0; w < o_.warmup; ++w) {
    const size_t index = w == 0 ? largest : size_t(w);
    if (graphs_ && w == o_.warmup - 1 && w > 0) {
      graph_step(index, o_.seed + ++step_counter_);  // the first capture happens outside the timed steps
    } else {
      const int64_t before = timed_->intervals_called();
      const PackedBatch& b = batches_[index].packed;
      eager_step(b, o_.seed + ++step_counter_);
      intervals_per_step_ = timed_->intervals_called() - before;
      if (padded_.empty()) eager_shapes_[ShapeKey{b.tokens, b.sequences, b.max_seqlen}] = true;
    }
    backend_->synchronize();
  }
  if (intervals_per_step_ == 0) {  // no eager warm-up step: still count the ops of a step
    const int64_t before = timed_->intervals_called();
    eager_step(batches_[largest].packed, o_.seed + ++step_counter_);
    intervals_per_step_ = timed_->intervals_called() - before;
  }

  eager_ms_ = timed_loop(false, !graphs_);
  if (graphs_) graph_ms_ = timed_loop(true, true);
  backend_->synchronize();
  const float final_loss = model_->loss();
  const float final_norm = optimizer_->grad_norm();

  json r = report();
  r["final_loss"] = std::isfinite(final_loss) ? json(final_loss) : json(nullptr);
  r["final_grad_norm"] = std::isfinite(final_norm) ? json(final_norm) : json(nullptr);
  if (o_.breakdown_steps > 0) {
    breakdown(r);
  } else {
    r["breakdown_ms"] = nullptr;
    r["breakdown_step_ms"] = nullptr;
    r["breakdown_ops"] = nullptr;
  }
  r["breakdown_steps"] = o_.breakdown_steps;
  r["memory"]["workspace"] = backend_->scratch_bytes();
  r["memory"]["total"] = r["memory"]["parameters"].get<int64_t>() + r["memory"]["activations"].get<int64_t>() +
                         r["memory"]["workspace"].get<int64_t>();
  const int64_t used = backend_->device_bytes_in_use();
  r["memory"]["device_used"] = used >= 0 ? json(used) : json(nullptr);
  r["memory"]["device_used_before"] = device_used_before_ >= 0 ? json(device_used_before_) : json(nullptr);
  return r;
}

json Bench::report() {
  const bool use_graphs = graphs_ && !graph_ms_.empty();
  const std::vector<double>& ms = use_graphs ? graph_ms_ : eager_ms_;
  json stats = step_time_stats(ms);
  const double median_s = stats["median"].get<double>() * 1e-3;

  // Per-step work over the timed batches (real sequences and tokens only).
  double samples = 0, tokens = 0, flops = 0, max_len = 0, padded_tokens = 0;
  for (int s = 0; s < o_.steps; ++s) {
    const BenchBatch& b = batches_[size_t(o_.warmup + s)];
    samples += double(b.real_sequences);
    tokens += double(b.real_tokens);
    flops += config_.train_flops(b.real_tokens, b.sum_len_sq);
    max_len += double(b.packed.max_seqlen);
    if (!padded_.empty()) padded_tokens += double(padded_[size_t(o_.warmup + s)].batch.packed.tokens);
  }
  const double n = double(o_.steps);
  samples /= n, tokens /= n, flops /= n, max_len /= n, padded_tokens /= n;
  const double tflops = flops / median_s / 1e12;
  const double peak_sheet = backend_->peak_tflops(act_);

  json r;
  r["schema"] = "engine-bench/1";
  r["engine_commit"] = engine_commit();
  r["device"] = backend_->device_label();
  r["backend"] = backend_name_;
  r["precision"] = act_ == DType::bf16 ? "bf16" : "fp32";
  r["attention"] = backend_name_ == "cuda" ? json(o_.attention)
                   : backend_name_ == "cpu"  ? json("cpu-per-sequence-head")
                                             : json("cpu-reference");
  r["task"] = o_.task;
  r["config"] = {{"name", config_name_},
                 {"hidden_size", config_.hidden_size},
                 {"num_hidden_layers", config_.num_hidden_layers},
                 {"num_attention_heads", config_.num_attention_heads},
                 {"intermediate_size", config_.intermediate_size},
                 {"vocab_size", config_.vocab_size},
                 {"max_position_embeddings", config_.max_position_embeddings},
                 {"num_labels", config_.num_labels},
                 {"parameters", config_.parameter_count(true, config_.num_labels)}};
  r["batch"] = {{"mode", real_lengths_ ? "lengths" : "fixed"},
                {"seq", real_lengths_ ? json(nullptr) : json(o_.seq)},
                {"batch", o_.batch},
                {"lengths_source", real_lengths_ ? json(io::result_path(o_.lengths)) : json(nullptr)},
                {"mean_tokens", tokens},
                {"mean_max_seqlen", max_len},
                {"distinct_batches", o_.warmup + o_.steps}};
  r["warmup"] = o_.warmup;
  r["steps"] = o_.steps;
  r["mode"] = use_graphs ? "graphs" : "eager";
  r["step_ms"] = stats;
  r["samples_per_s"] = samples / median_s;
  r["tokens_per_s"] = tokens / median_s;
  r["flops_per_step"] = flops;
  r["tflops"] = tflops;
  r["peak_tflops_measured"] = or_null(peak_measured_);
  r["peak_tflops_datasheet"] = or_null(peak_sheet);
  r["mfu_measured"] = peak_measured_ > 0 ? json(tflops / peak_measured_) : json(nullptr);
  r["mfu_datasheet"] = peak_sheet > 0 ? json(tflops / peak_sheet) : json(nullptr);
  r["peak_gemm"] = peak_gemm_;
  r["memory"] = {{"parameters", int64_t(model_->parameter_bytes())},
                 {"activations", int64_t(model_->activation_bytes())}};
  r["eager_step_ms"] = step_time_stats(eager_ms_);
  json g = {{"enabled", graphs_},
            {"captures", captures_},
            {"replays", replays_},
            {"hits", hits_},
            {"hit_rate", replays_ > 0 ? json(double(hits_) / double(replays_)) : json(nullptr)},
            {"eager_fallbacks", fallbacks_},
            {"token_bucket", padded_.empty() ? json(nullptr) : json(o_.token_bucket)},
            {"padded_tokens_per_step", padded_.empty() ? json(nullptr) : json(padded_tokens)},
            {"step_ms", use_graphs ? step_time_stats(graph_ms_) : json(nullptr)},
            {"speedup", nullptr}};
  if (use_graphs)
    g["speedup"] = r["eager_step_ms"]["median"].get<double>() / g["step_ms"]["median"].get<double>();
  r["cuda_graphs"] = g;
  return r;
}

std::string num_or_dash(const json& j, double scale, int digits, const char* unit) {
  return j.is_number() ? fmt(j.get<double>() * scale, digits) + unit : std::string("-");
}

}  // namespace

std::string summarize_step_bench(const nlohmann::json& r) {
  std::ostringstream os;
  const json& st = r["step_ms"];
  os << "step (" << r["mode"].get<std::string>() << "): median " << fmt(st["median"], 3) << " ms  p10 "
     << fmt(st["p10"], 3) << "  p90 " << fmt(st["p90"], 3) << "  min " << fmt(st["min"], 3) << "  max "
     << fmt(st["max"], 3) << "\n";
  const double tf = r["tflops"].get<double>();
  os << "throughput: " << fmt(r["samples_per_s"], 1) << " samples/s, " << fmt(r["tokens_per_s"], 0)
     << " tokens/s, " << (tf >= 1 ? fmt(tf, 1) + " TFLOP/s" : fmt(tf * 1e3, 2) + " GFLOP/s") << "\n";
  os << "MFU: " << num_or_dash(r["mfu_measured"], 100, 1, "%") << " of the measured peak ("
     << num_or_dash(r["peak_tflops_measured"], 1, 3, " TFLOP/s") << "), "
     << num_or_dash(r["mfu_datasheet"], 100, 1, "%") << " of the datasheet peak ("
     << num_or_dash(r["peak_tflops_datasheet"], 1, 1, " TFLOP/s") << ")\n";
  const json& m = r["memory"];
  os << "memory: parameters+optimizer " << fmt(m["parameters"].get<double>() / 1048576.0, 1) << " MiB, activations "
     << fmt(m["activations"].get<double>() / 1048576.0, 1) << " MiB, workspace "
     << fmt(m["workspace"].get<double>() / 1048576.0, 1) << " MiB, total "
     << fmt(m["total"].get<double>() / 1048576.0, 1) << " MiB; device in use "
     << num_or_dash(m["device_used"], 1.0 / 1048576.0, 1, " MiB") << "\n";
  const json& g = r["cuda_graphs"];
  if (g["enabled"].get<bool>()) {
    os << "cuda graphs: eager median " << fmt(r["eager_step_ms"]["median"], 3) << " ms -> graphs "
       << num_or_dash(g["step_ms"].is_object() ? g["step_ms"]["median"] : json(nullptr), 1, 3, " ms") << " ("
       << num_or_dash(g["speedup"], 1, 2, "x") << "), " << g["captures"].get<int>() << " captures, "
       << g["replays"].get<int>() << " replays, hit rate " << num_or_dash(g["hit_rate"], 100, 0, "%") << ", "
       << g["eager_fallbacks"].get<int>() << " eager fallbacks\n";
  } else {
    os << "cuda graphs: off\n";
  }
  if (r["breakdown_ms"].is_object()) {
    const double total = r["breakdown_step_ms"].get<double>();
    os << "breakdown (instrumented eager step " << fmt(total, 3) << " ms, mean of " << r["breakdown_steps"].get<int>()
       << "):\n";
    for (int c = 0; c < kOpCategories; ++c) {
      const char* name = category_name(OpCategory(c));
      const double ms = r["breakdown_ms"][name].get<double>();
      os << "  " << std::left << std::setw(10) << name << std::right << std::setw(11) << fmt(ms, 3) << " ms "
         << std::setw(6) << fmt(total > 0 ? 100.0 * ms / total : 0.0, 1) << "%\n";
    }
  }
  return os.str();
}

nlohmann::json run_step_bench(const StepBenchOptions& options, std::ostream& log) {
  Bench bench(options, log);
  return bench.run();
}

}  // namespace engine::perf
