#include "engine/serve/server.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/io/result_path.h"
#include "engine/serve/api.h"
#include "tokenizer/utf8.h"
#include "engine_version.h"  // ENGINE_VERSION, written at build time (version.cmake)

namespace engine::serve {

namespace {

using nlohmann::json;

HttpResponse json_response(int status, const json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return r;
}

HttpResponse error_response(int status, const std::string& message, const std::string& type) {
  HttpResponse r;
  r.status = status;
  r.body = error_json(message, type);
  return r;
}

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// The tasks /predict answers; a task added to engine/train/task.h gets 501 until it is wired here.
bool task_served(Task t) {
  switch (t) {
    case Task::classify:
    case Task::regress:
    case Task::tokens:
    case Task::qa:
      return true;
    default:
      return false;
  }
}

// The answer for one input, as TEI gives it: every label with its score, highest first.
json classify_answer(const std::vector<float>& logits, const LabelMap& labels, bool raw_scores) {
  std::vector<double> probs = softmax(logits);
  std::vector<std::pair<float, int32_t>> scored;
  for (size_t c = 0; c < logits.size(); ++c) scored.push_back({raw_scores ? logits[c] : float(probs[c]), int32_t(c)});
  std::stable_sort(scored.begin(), scored.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
  json out = json::array();
  for (const auto& [score, id] : scored) out.push_back({{"label", labels.name(id)}, {"score", score}});
  return out;
}

// One question's answer, with the fields `engine predict --task qa` prints (less the id).
json qa_answer(const QaAnswer& a, bool version_2) {
  json j = {{"answer", a.text}, {"score", a.probability}, {"start", a.start}, {"end", a.end}};
  if (version_2) j["null_odds"] = a.null_odds;
  return j;
}

// True for a text of nothing but whitespace (Python's str.isspace), which SQuAD reading refuses as
// a question or context.
bool blank(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    uint32_t cp;
    const size_t n = tokenizer::decode_utf8(p, end, &cp);
    if (!is_python_space(cp)) return false;
    p += n;
  }
  return true;
}

// Writes text to path through a temporary name, so a reader never sees half of it.
void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << text;
    ENGINE_CHECK(out.good(), "cannot write ", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

Server::Server(const ServeOptions& options, std::ostream& log_stream, RunnerWrap wrap)
    : options_(options), log_(log_stream), dir_(options.model_dir, options.task, options.adapter_dir) {
  const int64_t max_positions = dir_.config.max_position_embeddings;
  // qa: windows as long as `engine predict --task qa` cuts them by default (run_qa.py's 384).
  const int64_t default_length = dir_.task == Task::qa ? std::min<int64_t>(384, max_positions) : max_positions;
  max_input_length_ = options_.max_input_length > 0 ? options_.max_input_length : default_length;
  ENGINE_CHECK(max_input_length_ <= max_positions, "--max-input-length ", max_input_length_,
               " exceeds the model's max_position_embeddings ", max_positions);
  ENGINE_CHECK(options_.batch.max_batch_tokens >= max_input_length_, "--max-batch-tokens ",
               options_.batch.max_batch_tokens, " is smaller than one input of the maximum length (",
               max_input_length_, ")");
  ENGINE_CHECK(options_.max_client_batch_size > 0, "--max-client-batch-size must be positive");
  ENGINE_CHECK(options_.qa.doc_stride >= 0, "--doc-stride must not be negative");
  ENGINE_CHECK(options_.qa.n_best_size > 0 && options_.qa.max_answer_length > 0,
               "--n-best-size and --max-answer-length must be positive");
  model_ = load_model(dir_, options_.runtime, options_.batch.max_batch_tokens, options_.batch.max_batch_sequences);

  DynamicBatcher::Runner model_runner = [this](std::vector<Job*>& jobs) { run_batch(jobs); };
  DynamicBatcher::Runner runner = model_runner;
  if (wrap) runner = [wrap, model_runner](std::vector<Job*>& jobs) { wrap(jobs, model_runner); };
  batcher_ = std::make_unique<DynamicBatcher>(options_.batch, runner, [this](const BatchInfo& b) {
    metrics_.observe_batch(b.tokens, b.sequences, b.seconds, b.failed);
  });
  http_ = std::make_unique<HttpServer>(
      options_.http, [this](HttpRequest req, Reply reply) { handle(std::move(req), std::move(reply)); }, error_json);
  http_->on_shutdown([this] {
    log("shutting down: answering the requests in flight");
    batcher_->stop_waiting();
  });
}

Server::~Server() { batcher_->stop(); }

void Server::log(const std::string& line) {
  std::lock_guard<std::mutex> lock(log_mu_);
  log_ << "engine serve: " << line << std::endl;
}

int Server::run() {
  if (!options_.port_file.empty()) write_file_atomically(options_.port_file, std::to_string(port()) + "\n");
  log(io::result_path(dir_.path) + " (" + task_name(dir_.task) + ", " + model_.backend_name + ", " + dtype_name(model_.act) +
      ") on http://" + options_.http.host + ":" + std::to_string(port()));
  // The warm-up batch, on the batcher thread (which owns the model) before any request: /health
  // answers 200 only after the model ran once.
  batcher_->start([this] {
    PredictRequest probe;  // a qa model takes a [question, context] pair
    probe.inputs.push_back({"warm up", dir_.task == Task::qa ? std::optional<std::string>("warm up") : std::nullopt});
    Job job;
    job.input = encode(probe);
    std::vector<Job*> batch = {&job};
    try {
      run_batch(batch);
      ready_ = true;
      log("ready");
    } catch (const std::exception& e) {
      log(std::string("the warm-up batch failed: ") + e.what());
      exit_code_ = 1;
      http_->stop();
    }
  });
  http_->run();
  batcher_->stop();
  log("stopped");
  return exit_code_;
}

void Server::handle(HttpRequest req, Reply reply) {
  const Clock::time_point arrived = Clock::now();
  const bool known = req.path == "/predict" || req.path == "/health" || req.path == "/info" || req.path == "/metrics";
  // Count every answer under its path (unknown paths as one label, so clients cannot grow the metrics).
  Reply counted = [this, reply, path = known ? req.path : std::string("other")](HttpResponse res) {
    metrics_.count_request(path, res.status);
    reply(std::move(res));
  };
  const std::string want = req.path == "/predict" ? "POST" : "GET";
  if (!known) return counted(error_response(404, "no such path: " + req.path, "not_found"));
  if (req.method != want) {
    HttpResponse r = error_response(405, req.path + " takes " + want + ", not " + req.method, "method");
    r.headers.push_back({"Allow", want});
    return counted(r);
  }
  if (req.path == "/health") {
    if (ready_) return counted(HttpResponse{200, "", "text/plain", {}});
    return counted(error_response(503, "the model is warming up", "unhealthy"));
  }
  if (req.path == "/info") return counted(HttpResponse{200, info_json(), "application/json", {}});
  if (req.path == "/metrics") {
    return counted(HttpResponse{200, metrics_.render(batcher_->queued_requests(), batcher_->pending_requests()),
                                "text/plain; version=0.0.4", {}});
  }
  predict(req.body, counted, arrived);
}

void Server::predict(const std::string& body, const Reply& reply, Clock::time_point arrived) {
  if (!ready_) return reply(error_response(503, "the model is warming up", "unhealthy"));
  if (!task_served(dir_.task))
    return reply(error_response(501, std::string("/predict does not support the task ") + task_name(dir_.task) + " yet",
                                "backend"));
  auto job = std::make_shared<Job>();
  PredictRequest request;
  try {
    request = parse_predict_request(body);
    if (int64_t(request.inputs.size()) > options_.max_client_batch_size)
      throw ApiError(413, "validation", "batch size " + std::to_string(request.inputs.size()) +
                                            " > maximum allowed batch size " +
                                            std::to_string(options_.max_client_batch_size) + " (--max-client-batch-size)");
    job->input = encode(request);
    // A qa request has one sequence per window of its contexts.
    const std::string sequences = dir_.task == Task::qa ? " windows" : " inputs";
    if (job->tokens() > options_.batch.max_batch_tokens || job->sequences() > options_.batch.max_batch_sequences)
      throw ApiError(413, "validation", "the request has " + std::to_string(job->sequences()) + sequences + " and " +
                                            std::to_string(job->tokens()) + " tokens, more than one batch holds (" +
                                            std::to_string(options_.batch.max_batch_sequences) + sequences + ", " +
                                            std::to_string(options_.batch.max_batch_tokens) + " tokens)");
  } catch (const ApiError& e) {
    return reply(error_response(e.status, e.what(), e.type));
  } catch (const Error& e) {  // the tokenizer's (a truncation it cannot do, a question too long for a window)
    return reply(error_response(422, e.what(), "tokenizer"));
  }
  const Task task = dir_.task;
  job->done = [this, reply, request = std::move(request), arrived, task](Job& j) {
    metrics_.observe_request(seconds_between(j.enqueued, j.started), seconds_between(arrived, Clock::now()));
    if (!j.error.empty()) return reply(error_response(500, j.error, "backend"));
    json answers = json::array();
    for (size_t i = 0; i < request.inputs.size(); ++i) {
      switch (task) {
        case Task::classify:
          answers.push_back(classify_answer(j.output.logits[i], dir_.labels, request.raw_scores));
          break;
        case Task::regress: {
          // The predicted value itself (TEI would apply a sigmoid to a one-output model).
          auto name = dir_.config.id2label.find(0);
          const std::string label = name == dir_.config.id2label.end() ? "LABEL_0" : name->second;
          answers.push_back(json::array({{{"label", label}, {"score", j.output.logits[i][0]}}}));
          break;
        }
        case Task::qa:
          answers.push_back(qa_answer(j.output.answers[i], options_.qa.version_2_with_negative));
          break;
        case Task::tokens: {
          // One {word, label} per word that kept a token, in order.
          json words = json::array();
          size_t k = 0;
          for (int32_t w : j.input.first_piece_word[i])
            if (w >= 0) words.push_back({{"word", j.input.words[i][size_t(w)]}, {"label", j.output.tags[i][k++]}});
          answers.push_back(words);
          break;
        }
        default:  // refused before tokenizing (task_served)
          return reply(error_response(501, std::string("/predict does not support the task ") + task_name(task) +
                                               " yet", "backend"));
      }
    }
    reply(json_response(200, request.batch ? answers : answers[0]));
  };
  if (!batcher_->submit(job)) {
    HttpResponse r = error_response(429, "Model is overloaded: " + std::to_string(options_.batch.max_queued) +
                                             " requests pending (--max-concurrent-requests)", "overloaded");
    r.headers.push_back({"Retry-After", "1"});
    reply(r);
  }
}

// Tokenizes a request's inputs (on the request thread). Long inputs: 413 unless truncate, then cut
// to max_input_length from the end (right) or, for single texts, from the start (left).
TaskData Server::encode(const PredictRequest& request) const {
  if (dir_.task == Task::qa) return encode_qa(request);
  const bool truncate = request.truncate.value_or(options_.auto_truncate);
  const int limit = int(max_input_length_);
  TaskData data;
  data.task = dir_.task;
  DataOptions full;  // no truncation: learn the real length first
  DataOptions cut;
  cut.encode.max_length = limit;
  auto too_long = [&](size_t i, size_t n) {
    return ApiError(413, "validation", "input " + std::to_string(i) + " has " + std::to_string(n) +
                                           " tokens, more than the maximum " + std::to_string(limit) +
                                           " (send \"truncate\": true to cut it)");
  };
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    const TextInput& in = request.inputs[i];
    if (in.a.empty() || (in.b && in.b->empty()))
      throw ApiError(422, "validation", "input " + std::to_string(i) + " has an empty text");
    if (dir_.task == Task::tokens) {
      if (in.b) throw ApiError(422, "validation", "token classification takes one text per input, not a pair");
      TaskData one = task_data_from_lines({in.a}, Task::tokens, *dir_.tok, full);
      if (int64_t(one.examples[0].ids.size()) > limit) {
        if (!truncate) throw too_long(i, one.examples[0].ids.size());
        if (request.truncate_left)
          throw ApiError(422, "validation", "left truncation is not supported for token classification");
        one = task_data_from_lines({in.a}, Task::tokens, *dir_.tok, cut);
      }
      one.examples[0].index = int64_t(i);
      data.examples.push_back(std::move(one.examples[0]));
      data.first_piece_word.push_back(std::move(one.first_piece_word[0]));
      data.words.push_back(std::move(one.words[0]));
      continue;
    }
    tokenizer::Encoding e = dir_.tok->encode(in.a, in.b, full.encode);
    if (int64_t(e.ids.size()) > limit) {
      if (!truncate) throw too_long(i, e.ids.size());
      if (!request.truncate_left) {
        e = dir_.tok->encode(in.a, in.b, cut.encode);
      } else {
        if (in.b) throw ApiError(422, "validation", "left truncation of a pair is not supported");
        // [CLS] and [SEP] stay; the first tokens of the text go.
        const size_t drop = e.ids.size() - size_t(limit);
        e.ids.erase(e.ids.begin() + 1, e.ids.begin() + 1 + long(drop));
        e.type_ids.resize(e.ids.size());
      }
    }
    TokenizedExample ex;
    ex.ids = std::move(e.ids);
    ex.type_ids = std::move(e.type_ids);
    ex.index = int64_t(i);
    data.examples.push_back(std::move(ex));
  }
  return data;
}

// qa: each input a [question, context] pair, cut into the windows `engine predict --task qa` cuts
// (make_qa_windows); the job carries its questions with the windows for post-processing.
TaskData Server::encode_qa(const PredictRequest& request) const {
  auto set = std::make_shared<QaSet>();
  set->file.path = "request";
  set->options = options_.qa;
  set->version_2 = options_.qa.version_2_with_negative;  // as predict decides for questions without answers
  for (size_t i = 0; i < request.inputs.size(); ++i) {
    const TextInput& in = request.inputs[i];
    const std::string where = "input " + std::to_string(i);
    if (!in.b)
      throw ApiError(422, "validation",
                     where + " is a single text: a question answering model takes a [question, context] pair");
    if (blank(in.a)) throw ApiError(422, "validation", where + " has an empty question");
    if (blank(*in.b)) throw ApiError(422, "validation", where + " has an empty context");
    set->file.examples.push_back({where, in.a, *in.b, {}});  // the id names the input in errors
  }
  QaWindows w = make_qa_windows(set->file, *dir_.tok, int(max_input_length_), options_.qa.doc_stride, 1);
  set->features = std::move(w.features);
  TaskData data;
  data.task = Task::qa;
  data.examples = std::move(w.examples);
  data.qa = std::move(set);
  return data;
}

// One packed batch of every job's inputs through engine::predict (the code `engine predict` runs),
// then each job takes its own rows back.
void Server::run_batch(std::vector<Job*>& jobs) {
  TaskData all;
  all.task = dir_.task;
  // qa: the jobs' questions as one set, each window still pointing at its own question, so
  // post-processing (postprocess_qa, inside engine::predict) answers every question from its windows.
  std::shared_ptr<QaSet> qa;
  if (dir_.task == Task::qa) {
    qa = std::make_shared<QaSet>();
    qa->options = options_.qa;
    qa->version_2 = options_.qa.version_2_with_negative;
  }
  for (Job* job : jobs) {
    if (qa) {
      const int64_t first = int64_t(qa->file.examples.size());
      for (const SquadExample& ex : job->input.qa->file.examples) qa->file.examples.push_back(ex);
      for (QaFeature f : job->input.qa->features) {
        f.example += first;
        qa->features.push_back(std::move(f));
      }
    }
    for (size_t i = 0; i < job->input.examples.size(); ++i) {
      TokenizedExample e = job->input.examples[i];
      e.index = int64_t(all.examples.size());
      all.examples.push_back(std::move(e));
      if (dir_.task == Task::tokens) all.first_piece_word.push_back(job->input.first_piece_word[i]);
    }
  }
  all.qa = qa;
  Predictions p = engine::predict(*model_.model, all, dir_.labels, int64_t(all.examples.size()), 0);
  size_t row = 0, question = 0;
  for (Job* job : jobs) {
    job->output.task = p.task;
    if (qa) {  // one answer per question; the windows have no rows of their own
      for (size_t i = 0; i < job->input.qa->file.examples.size(); ++i)
        job->output.answers.push_back(p.answers[question++]);
      continue;
    }
    for (size_t i = 0; i < job->input.examples.size(); ++i, ++row) {
      if (dir_.task == Task::tokens) job->output.tags.push_back(std::move(p.tags[row]));
      else job->output.logits.push_back(std::move(p.logits[row]));
    }
  }
}

std::string Server::info_json() const {
  json id2label = json::object(), label2id = json::object();
  for (int32_t i = 0; i < dir_.labels.size(); ++i) {
    id2label[std::to_string(i)] = dir_.labels.name(i);
    label2id[dir_.labels.name(i)] = i;
  }
  std::filesystem::path dir = std::filesystem::path(dir_.path).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "runs/sst2/model/"
  json j = {
      {"model_id", dir.filename().string()},
      {"model_dir", io::result_path(dir_.path)},
      {"adapter_dir", dir_.adapter.empty() ? json(nullptr) : json(io::result_path(dir_.adapter))},
      {"task", task_name(dir_.task)},
      {"labels", dir_.labels.names()},
      {"max_input_length", max_input_length_},
      {"backend", model_.backend_name},
      {"precision", dtype_name(model_.act)},
      {"attention", options_.runtime.attention},
      {"max_batch_tokens", options_.batch.max_batch_tokens},
      {"max_batch_requests", options_.batch.max_batch_sequences},
      {"max_wait_us", options_.batch.max_wait.count()},
      {"max_concurrent_requests", options_.batch.max_queued},
      {"max_client_batch_size", options_.max_client_batch_size},
      {"auto_truncate", options_.auto_truncate},
      {"qa", dir_.task != Task::qa ? json(nullptr)
                                    : json{{"doc_stride", options_.qa.doc_stride},
                                           {"n_best_size", options_.qa.n_best_size},
                                           {"max_answer_length", options_.qa.max_answer_length},
                                           {"null_score_diff_threshold", options_.qa.null_score_diff_threshold},
                                           {"version_2_with_negative", options_.qa.version_2_with_negative}}},
      {"model_type", {{"classifier", {{"id2label", id2label}, {"label2id", label2id}}}}},
      {"version", ENGINE_VERSION},
  };
  return j.dump();
}

}  // namespace engine::serve
