// Helpers for tests that run build/bin/engine as a user would: the command with its standard
// output and standard error captured apart, and tiny random models and labelled files of the
// synthetic task saved where the test says.
#pragma once
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "engine/model/checkpoint.h"
#include "engine/train/synthetic.h"
#include "test_seed.h"

namespace engine::test {

namespace fs = std::filesystem;

inline std::string engine_binary() { return std::string(ENGINE_BINARY_DIR) + "/bin/engine"; }

inline std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

struct CommandResult {
  int exit_code;
  std::string out, err;
};

// Runs `prefix engine args` through the shell (prefix: environment settings, or empty) with
// standard output and standard error captured separately.
inline CommandResult run_engine(const std::string& args, const std::string& prefix = "") {
  fs::path err_file = fs::temp_directory_path() / ("engine_stderr_" + unique_suffix());
  std::string cmd = prefix + " " + engine_binary() + " " + args + " 2>" + err_file.string() + " </dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  int status = pclose(pipe);
  std::string err = read_text(err_file);
  fs::remove(err_file);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, err};
}

// A tiny random BERT (2 layers, hidden 32) over the synthetic vocabulary, saved as a Hugging Face
// directory at `dir`. With `named_labels`, a two-label head is labelled "neg" and "pos", as
// write_labelled_tsv writes. `extra_vocab` words are appended to vocab.txt beyond the embeddings (a
// vocabulary that does not match the model, for the tests of that error).
inline void save_tiny_model(const SyntheticTask& task, const fs::path& dir, int64_t labels, uint64_t seed,
                            bool named_labels = true, int64_t extra_vocab = 0) {
  fs::create_directories(dir);
  {
    std::ofstream vocab(dir / "vocab.txt");
    for (const std::string& w : task.vocab) vocab << w << "\n";
    for (int64_t i = 0; i < extra_vocab; ++i) vocab << "extra" << i << "\n";
  }
  BertConfig c;
  c.vocab_size = int64_t(task.vocab.size());
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 64;
  c.num_labels = labels;
  if (named_labels && labels == 2) c.id2label = {{0, "neg"}, {1, "pos"}};
  auto backend = make_backend("cpu-ref");
  BertModel model(*backend, c, ModelOptions{});
  model.init_weights(seed);
  SaveOptions so;
  so.vocab_path = (dir / "vocab.txt").string();
  save_pretrained(model, dir.string(), so);
}

// A labelled TSV of the synthetic task (label "pos" or "neg").
inline void write_labelled_tsv(const SyntheticTask& task, const std::vector<SyntheticExample>& rows,
                               const fs::path& path) {
  std::ofstream out(path);
  out << "sentence\tlabel\n";
  for (const SyntheticExample& e : rows) out << task.text(e) << "\t" << (e.label ? "pos" : "neg") << "\n";
}

}  // namespace engine::test
