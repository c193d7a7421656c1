// Tokenizer throughput on the parity corpus (tests/fixtures/tokenizer/corpus.txt, 10,650 lines of
// real and adversarial text) with the bert-base-uncased and -cased vocabularies: one thread
// (encode line by line) and all threads (encode_batch). Reports bytes/s and tokens/s.
// Compare with tools/bench_hf_tokenizer.py (Hugging Face tokenizers, batch mode) on the same machine.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tokenizer/encode.h"

namespace {

struct Corpus {
  std::vector<std::string> lines;
  std::vector<std::string_view> views;
  size_t bytes = 0;
};

const Corpus& corpus() {
  static const Corpus c = [] {
    Corpus c;
    std::ifstream in(std::string(ENGINE_SOURCE_DIR) + "/tests/fixtures/tokenizer/corpus.txt", std::ios::binary);
    for (std::string line; std::getline(in, line);) {
      c.bytes += line.size();
      c.lines.push_back(line);
    }
    c.views.assign(c.lines.begin(), c.lines.end());
    return c;
  }();
  return c;
}

std::string vocab_path(bool lowercase) {
  const char* data = std::getenv("ENGINE_DATA_DIR");
  const std::string dir = data ? data : std::string(ENGINE_SOURCE_DIR) + "/../shared/data";
  return dir + (lowercase ? "/vocab/bert-base-uncased/vocab.txt" : "/vocab/bert-base-cased/vocab.txt");
}

void report(benchmark::State& state, size_t tokens) {
  const Corpus& c = corpus();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * c.bytes));
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens) * state.iterations(),
                                                  benchmark::Counter::kIsRate);
  state.counters["lines"] = static_cast<double>(c.lines.size());
}

void BM_Tokenize1Thread(benchmark::State& state) {
  const tokenizer::BertTokenizer tok(tokenizer::Vocab::load(vocab_path(state.range(0) != 0)), state.range(0) != 0);
  const Corpus& c = corpus();
  if (c.lines.empty()) {
    state.SkipWithError("corpus not found");
    return;
  }
  tokenizer::Encoding e;
  tok.encode("warm up", std::nullopt, {}, e);  // builds the Unicode tables outside the timing
  size_t tokens = 0;
  for (auto _ : state) {
    tokens = 0;
    for (std::string_view line : c.views) {
      tok.encode(line, std::nullopt, {}, e);
      tokens += e.size();
    }
    benchmark::DoNotOptimize(tokens);
  }
  report(state, tokens);
}

void BM_TokenizeAllThreads(benchmark::State& state) {
  const tokenizer::BertTokenizer tok(tokenizer::Vocab::load(vocab_path(state.range(0) != 0)), state.range(0) != 0);
  const Corpus& c = corpus();
  if (c.lines.empty()) {
    state.SkipWithError("corpus not found");
    return;
  }
  (void)tok.encode("warm up");  // builds the Unicode tables outside the timing
  size_t tokens = 0;
  for (auto _ : state) {
    const auto out = tok.encode_batch(c.views, {}, {}, 0);
    tokens = 0;
    for (const auto& e : out) tokens += e.size();
    benchmark::DoNotOptimize(tokens);
  }
  state.counters["threads"] = static_cast<double>(std::thread::hardware_concurrency());
  report(state, tokens);
}

}  // namespace

// Argument: 1 = uncased vocabulary, 0 = cased.
BENCHMARK(BM_Tokenize1Thread)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TokenizeAllThreads)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
