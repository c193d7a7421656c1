// engine: fine-tune BERT-family models with hand-written kernels. See `engine --help`.
#include <cstdio>
#include <exception>

#include "engine/cli/commands.h"
#include "engine/cpu_fast/threads.h"
#include "engine/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "engine: fine-tune BERT-family encoders (Hugging Face checkpoints) with hand-written CPU and CUDA\n"
      "kernels and no deep-learning framework.\n\n"
      "Run `engine finetune` with no arguments for the embedded default: a small random BERT trained on a\n"
      "built-in synthetic task on the CPU.",
      "engine"};
  app.require_subcommand(1);
  // Before or after the subcommand (fallthrough); applied when parsed, before any command runs.
  app.fallthrough();
  app.add_option_function<int>(
         "--threads", [](const int& n) { engine::set_cpu_threads(n); },
         "CPU threads for the whole run: the cpu backend's ops and its BLAS (default 0: all cores)")
      ->check(CLI::Range(0, 4096));
  engine::cli::add_info_command(app);
  engine::cli::add_finetune_command(app);
  engine::cli::add_eval_command(app);
  engine::cli::add_predict_command(app);
  engine::cli::add_tokenize_command(app);
  engine::cli::add_bench_command(app);
  engine::cli::add_merge_command(app);
  engine::cli::add_serve_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const engine::Error& e) {
    std::fprintf(stderr, "engine: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
