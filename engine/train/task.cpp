#include "engine/train/task.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/io/atomic_file.h"
#include "engine/train/metrics.h"
#include "engine/train/squad_metrics.h"

namespace engine {

Task parse_task(const std::string& name) {
  if (name == "classify") return Task::classify;
  if (name == "regress") return Task::regress;
  if (name == "tokens") return Task::tokens;
  if (name == "qa") return Task::qa;
  fail("unknown task '", name, "' (expected classify, regress, tokens or qa)");
}

const char* task_name(Task t) {
  switch (t) {
    case Task::classify: return "classify";
    case Task::regress: return "regress";
    case Task::tokens: return "tokens";
    case Task::qa: return "qa";
  }
  return "?";
}

Head task_head(Task t) {
  if (t == Task::qa) return Head::question_answering;
  return t == Task::tokens ? Head::token_classification : Head::sequence_classification;
}

Task task_of_model(const BertConfig& config) {
  auto arch = config.extra.find("architectures");
  if (arch != config.extra.end() && arch->is_array() && !arch->empty() && (*arch)[0] == "BertForTokenClassification")
    return Task::tokens;
  if (arch != config.extra.end() && arch->is_array() && !arch->empty() && (*arch)[0] == "BertForQuestionAnswering")
    return Task::qa;
  if (config.problem_type == "regression" || config.num_labels == 1) return Task::regress;
  return Task::classify;
}

int64_t TaskData::tokens() const {
  int64_t n = 0;
  for (const TokenizedExample& e : examples) n += int64_t(e.ids.size());
  return n;
}

int64_t TaskData::max_length() const {
  int64_t n = 0;
  for (const TokenizedExample& e : examples) n = std::max(n, int64_t(e.ids.size()));
  return n;
}

namespace {

// Sentences (and pairs) through the tokenizer on several threads. Rows with and without a second
// text may be mixed (standard input): each group is encoded as what it is, never a single as a
// pair with an empty second text.
void encode_texts(const std::vector<std::string>& a, const std::vector<std::optional<std::string>>& b,
                  const tokenizer::BertTokenizer& tok, const DataOptions& options, TaskData& out) {
  out.examples.resize(a.size());
  for (bool pairs : {false, true}) {
    std::vector<size_t> rows;
    std::vector<std::string_view> va, vb;
    for (size_t i = 0; i < a.size(); ++i) {
      if (b[i].has_value() != pairs) continue;
      rows.push_back(i);
      va.emplace_back(a[i]);
      if (pairs) vb.emplace_back(*b[i]);
    }
    if (rows.empty()) continue;
    std::vector<tokenizer::Encoding> enc = tok.encode_batch(va, vb, options.encode, options.threads);
    for (size_t k = 0; k < rows.size(); ++k) {
      TokenizedExample& e = out.examples[rows[k]];
      e.ids = std::move(enc[k].ids);
      e.type_ids = std::move(enc[k].type_ids);
      e.index = int64_t(rows[k]);
    }
  }
}

// One sentence of words: each word's WordPieces, the word's tag on its first piece (-100 on the
// others), truncated to max_length with [CLS] and [SEP] around it.
void encode_words(const std::vector<std::string>& words, const std::vector<std::string>* tags,
                  const LabelMap* labels, const tokenizer::BertTokenizer& tok, const DataOptions& options,
                  const std::string& path, const std::vector<int64_t>* lines, TaskData& out) {
  const int limit = options.encode.max_length > 0 ? options.encode.max_length - 2 : INT32_MAX;
  TokenizedExample e;
  std::vector<int32_t> first_piece{-1};
  std::vector<std::string> gold;
  e.ids.push_back(tok.vocab().cls_id());
  e.token_labels.push_back(-100);
  for (size_t w = 0; w < words.size(); ++w) {
    std::vector<int32_t> pieces = tok.tokenize_ids(words[w]);
    if (pieces.empty()) continue;  // a word of nothing but dropped characters: no token, no label
    if (int(e.ids.size()) - 1 + int(pieces.size()) > limit) break;
    int32_t label = -100;
    if (tags && labels) label = labels->to_id((*tags)[w], path, lines ? (*lines)[w] : 0);
    for (size_t k = 0; k < pieces.size(); ++k) {
      e.ids.push_back(pieces[k]);
      e.token_labels.push_back(k == 0 ? label : -100);
      first_piece.push_back(k == 0 ? int32_t(w) : -1);
    }
    if (tags) gold.push_back((*tags)[w]);
  }
  e.ids.push_back(tok.vocab().sep_id());
  e.token_labels.push_back(-100);
  first_piece.push_back(-1);
  e.type_ids.assign(e.ids.size(), 0);
  e.index = int64_t(out.examples.size());
  out.examples.push_back(std::move(e));
  out.first_piece_word.push_back(std::move(first_piece));
  out.words.push_back(words);
  out.gold_tags.push_back(std::move(gold));
}

// qa: the windows of every question, ready for the batcher, and the set they came from.
void qa_task_data(SquadFile file, const tokenizer::BertTokenizer& tok, const DataOptions& options, TaskData& out) {
  ENGINE_CHECK(options.encode.max_length > 0, "qa: --max-length must be positive");
  QaWindows w = make_qa_windows(file, tok, options.encode.max_length, options.qa.doc_stride, options.threads);
  auto set = std::make_shared<QaSet>();
  set->version_2 = file.version_2 || options.qa.version_2_with_negative;
  set->file = std::move(file);
  set->features = std::move(w.features);
  set->options = options.qa;
  out.examples = std::move(w.examples);
  out.has_labels = set->file.has_answers;
  out.qa = std::move(set);
}

// Official SQuAD metrics of a question answering pass (v2 with null_odds as no-answer probabilities).
void qa_metrics(const QaSet& set, const std::vector<QaAnswer>& answers, std::map<std::string, double>& metrics) {
  std::vector<SquadGold> gold;
  std::map<std::string, std::string> preds;
  std::map<std::string, double> na_probs;
  for (size_t i = 0; i < set.file.examples.size(); ++i) {
    const SquadExample& e = set.file.examples[i];
    SquadGold g{e.id, {}};
    for (const SquadAnswer& a : e.answers) g.answers.push_back(a.text);
    gold.push_back(std::move(g));
    preds[e.id] = answers[i].text;
    na_probs[e.id] = answers[i].null_odds;
  }
  const auto m = set.version_2 ? squad_v2_metrics(gold, preds, na_probs) : squad_v1_metrics(gold, preds);
  metrics.insert(m.begin(), m.end());
}

}  // namespace

std::string QaSet::describe() const {
  return std::to_string(file.examples.size()) + " questions in " + std::to_string(features.size()) +
         " windows, SQuAD " +
         (version_2 ? "v2 (" + (file.version_2 ? file.version_reason : std::string("--version-2-with-negative")) + ")"
                    : file.has_answers ? std::string("v1.1 (every question has an answer)")
                                       : std::string("v1.1 (no answers to tell; --version-2-with-negative for v2)"));
}

void write_qa_predictions(const Predictions& p, const TaskData& data, const std::string& dir) {
  ENGINE_CHECK(data.qa && p.answers.size() == data.qa->file.examples.size(), "write_qa_predictions: no qa answers");
  nlohmann::ordered_json preds = nlohmann::ordered_json::object(), odds = nlohmann::ordered_json::object();
  for (size_t i = 0; i < p.answers.size(); ++i) {
    const std::string& id = data.qa->file.examples[i].id;
    preds[id] = p.answers[i].text;
    odds[id] = p.answers[i].null_odds;
  }
  io::write_file_atomic(dir + "/predictions.json", preds.dump(2) + "\n");
  if (data.qa->version_2) io::write_file_atomic(dir + "/null_odds.json", odds.dump(2) + "\n");
}

LabelMap label_map_of(const std::string& path, Task task, const DataOptions& options) {
  if (task == Task::qa) return LabelMap::from_names({"LABEL_0", "LABEL_1"});
  if (task == Task::tokens) {
    ConllDataset d = read_conll(path, options.conll);
    ENGINE_CHECK(d.has_tags, path, ": no tag column to learn from");
    return tag_map(d);
  }
  return LabelMap::from_dataset(read_dataset(path, options.columns));
}

TaskData load_task_data(const std::string& path, Task task, const tokenizer::BertTokenizer& tok,
                        const LabelMap* labels, bool labels_required, const DataOptions& options) {
  TaskData out;
  out.path = path;
  out.task = task;
  if (task == Task::qa) {
    qa_task_data(read_squad(path, labels_required), tok, options, out);
    return out;
  }
  if (task == Task::tokens) {
    ConllOptions co = options.conll;
    co.tags_optional = !labels_required;
    ConllDataset d = read_conll(path, co);
    ENGINE_CHECK(!d.sentences.empty(), path, ": no sentences");
    out.has_labels = d.has_tags && labels;
    for (const ConllSentence& s : d.sentences)
      encode_words(s.words, out.has_labels ? &s.tags : nullptr, labels, tok, options, path, &s.lines, out);
    return out;
  }
  DatasetOptions dopt = options.columns;
  dopt.labels_optional = !labels_required;
  LabelledDataset d = read_dataset(path, dopt);
  ENGINE_CHECK(!d.rows.empty(), path, ": no rows");
  std::vector<std::string> a;
  std::vector<std::optional<std::string>> b;
  for (const Example& row : d.rows) {
    a.push_back(row.text_a);
    b.push_back(row.text_b);
  }
  encode_texts(a, b, tok, options, out);
  // Without a label map (predict --data) classification labels are not read, as for CoNLL tags:
  // predict ignores them, and a label the model does not know must not stop it.
  out.has_labels = d.has_labels && (labels || task == Task::regress);
  if (!out.has_labels) return out;
  for (size_t i = 0; i < d.rows.size(); ++i) {
    const Example& row = d.rows[i];
    if (task == Task::regress) {
      out.examples[i].target = parse_regression_label(row.label, path, row.line);
    } else {
      ENGINE_CHECK(labels, "internal: classification data without a label map");
      out.examples[i].label = labels->to_id(row.label, path, row.line);
    }
  }
  return out;
}

TaskData task_data_from_lines(const std::vector<std::string>& lines, Task task, const tokenizer::BertTokenizer& tok,
                              const DataOptions& options) {
  TaskData out;
  out.path = "<stdin>";
  out.task = task;
  if (task == Task::qa) {
    qa_task_data(squad_from_json_lines(lines, out.path), tok, options, out);
    return out;
  }
  if (task == Task::tokens) {
    for (const std::string& line : lines) {
      std::vector<std::string> words;
      std::istringstream in(line);
      for (std::string w; in >> w;) words.push_back(w);
      encode_words(words, nullptr, nullptr, tok, options, out.path, nullptr, out);
    }
    return out;
  }
  std::vector<std::string> a;
  std::vector<std::optional<std::string>> b;
  for (const std::string& line : lines) {
    size_t tab = line.find('\t');
    a.push_back(tab == std::string::npos ? line : line.substr(0, tab));
    b.push_back(tab == std::string::npos ? std::nullopt : std::optional<std::string>(line.substr(tab + 1)));
  }
  encode_texts(a, b, tok, options, out);
  return out;
}

std::string default_best_metric(Task task) {
  switch (task) {
    case Task::classify: return "accuracy";
    case Task::regress: return "pearson";
    case Task::tokens: return "f1";
    case Task::qa: return "f1";
  }
  return "loss";
}

namespace {

// Makes every rank's results whole: each example's logits (C per sequence, or per token for token
// classification) laid end to end, zeros where another rank ran the batch, and the per-batch losses,
// summed across the ranks (exact, see EvalShard).
void gather_shards(const TaskData& data, int64_t C, const EvalShard& shard, std::vector<std::vector<float>>& logits,
                   std::vector<double>& batch_loss) {
  std::vector<float> flat;
  for (size_t e = 0; e < data.examples.size(); ++e) {
    const size_t n = size_t(C) * (data.task == Task::tokens || data.task == Task::qa ? data.examples[e].ids.size() : 1);
    if (logits[e].empty()) flat.resize(flat.size() + n, 0.f);
    else flat.insert(flat.end(), logits[e].begin(), logits[e].end());
  }
  shard.sum_f32(flat);
  shard.sum_f64(batch_loss);
  size_t at = 0;
  for (size_t e = 0; e < data.examples.size(); ++e) {
    const size_t n = size_t(C) * (data.task == Task::tokens || data.task == Task::qa ? data.examples[e].ids.size() : 1);
    logits[e].assign(flat.begin() + at, flat.begin() + at + n);
    at += n;
  }
}

}  // namespace

Predictions predict(BertModel& model, const TaskData& data, const LabelMap& labels, int64_t batch_size,
                    int64_t max_tokens, const std::function<void(int64_t rows_done)>& rows_done,
                    const EvalShard& shard) {
  const int64_t C = model.config().num_labels;
  BatcherOptions bo;
  bo.batch_size = batch_size;
  bo.max_tokens = max_tokens;
  bo.shuffle = false;
  Batcher batcher(data.examples, bo);
  Predictions out;
  out.task = data.task;
  const int64_t num_batches = batcher.num_batches(0);
  // Per batch: the loss weighted back to a sum, and the rows it counts (summed in batch order below).
  std::vector<double> batch_loss(size_t(2 * num_batches), 0.0);
  int64_t rows = 0;
  const bool per_token = data.task == Task::tokens || data.task == Task::qa;
  std::vector<std::vector<float>> token_logits(per_token ? data.examples.size() : 0);
  out.logits.resize(per_token ? 0 : data.examples.size());
  for (int64_t i = 0; i < num_batches; ++i) {
    PackedBatch b = batcher.batch(0, i);
    rows += b.sequences;
    if (i % shard.world != shard.rank) continue;
    model.set_batch(b, data.has_labels);
    model.forward(Pass::eval, 0);
    std::vector<float> logits = model.logits();
    if (data.has_labels) {
      // loss() is the mean over counted rows; weight it back to a sum for the data set's mean.
      batch_loss[size_t(2 * i)] = double(model.loss()) * double(model.counted_rows());
      batch_loss[size_t(2 * i + 1)] = double(model.counted_rows());
    }
    for (int64_t s = 0; s < b.sequences; ++s) {
      const int64_t example = b.example_index[s];
      if (per_token) {
        const int64_t begin = b.cu_seqlens[s], end = b.cu_seqlens[s + 1];
        token_logits[example].assign(logits.begin() + begin * C, logits.begin() + end * C);
      } else {
        out.logits[example].assign(logits.begin() + s * C, logits.begin() + (s + 1) * C);
      }
    }
    if (rows_done) rows_done(rows);
  }
  if (shard.world > 1) gather_shards(data, C, shard, per_token ? token_logits : out.logits, batch_loss);
  double loss_sum = 0, loss_rows = 0;
  for (int64_t i = 0; i < num_batches; ++i) {
    loss_sum += batch_loss[size_t(2 * i)];
    loss_rows += batch_loss[size_t(2 * i + 1)];
  }
  auto argmax = [](const float* p, int64_t n) {
    return int32_t(std::max_element(p, p + n) - p);
  };
  if (data.task == Task::tokens) {
    out.tags.resize(data.examples.size());
    for (size_t e = 0; e < data.examples.size(); ++e) {
      for (size_t t = 0; t < data.first_piece_word[e].size(); ++t) {
        if (data.first_piece_word[e][t] < 0) continue;
        out.tags[e].push_back(labels.name(argmax(token_logits[e].data() + t * C, C)));
      }
    }
  }
  if (data.task == Task::qa) {
    ENGINE_CHECK(data.qa, "internal: qa data without its questions");
    out.answers = postprocess_qa(data.qa->file, data.qa->features, token_logits, data.qa->options, data.qa->version_2);
  }
  if (!data.has_labels) return out;
  out.metrics["loss"] = loss_rows > 0 ? loss_sum / loss_rows : NAN;
  switch (data.task) {
    case Task::classify: {
      std::vector<int32_t> gold, pred;
      for (size_t e = 0; e < data.examples.size(); ++e) {
        gold.push_back(data.examples[e].label);
        pred.push_back(argmax(out.logits[e].data(), C));
      }
      out.metrics["accuracy"] = accuracy(gold, pred);
      out.metrics["f1"] = macro_f1(gold, pred);
      out.metrics["mcc"] = matthews_corrcoef(gold, pred);
      break;
    }
    case Task::regress: {
      std::vector<double> gold, pred;
      for (size_t e = 0; e < data.examples.size(); ++e) {
        gold.push_back(data.examples[e].target);
        pred.push_back(out.logits[e][0]);
      }
      out.metrics["pearson"] = pearson(gold, pred);
      out.metrics["spearman"] = spearman(gold, pred);
      break;
    }
    case Task::tokens: {
      EntityScores scores = entity_scores(data.gold_tags, out.tags);
      out.metrics["precision"] = scores.overall.precision;
      out.metrics["recall"] = scores.overall.recall;
      out.metrics["f1"] = scores.overall.f1;
      int64_t right = 0, total = 0;
      for (size_t e = 0; e < out.tags.size(); ++e)
        for (size_t w = 0; w < out.tags[e].size(); ++w) {
          right += out.tags[e][w] == data.gold_tags[e][w];
          ++total;
        }
      out.metrics["accuracy"] = total ? double(right) / double(total) : NAN;
      break;
    }
    case Task::qa:
      qa_metrics(*data.qa, out.answers, out.metrics);
      break;
  }
  return out;
}

}  // namespace engine
