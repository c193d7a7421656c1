// The `engine` command's subcommands, one file each in engine/cli/. Each add_* registers its
// subcommand (flags and callback) on the app; main.cpp lists them and turns engine::Error into a
// message and a non-zero exit.
#pragma once
#include <CLI/CLI.hpp>

namespace engine::cli {

void add_info_command(CLI::App& app);      // cmd_info.cpp
void add_finetune_command(CLI::App& app);  // cmd_finetune.cpp
void add_tokenize_command(CLI::App& app);  // cmd_tokenize.cpp
void add_eval_command(CLI::App& app);      // cmd_eval_predict.cpp
void add_predict_command(CLI::App& app);   // cmd_eval_predict.cpp
void add_bench_command(CLI::App& app);     // cmd_bench.cpp
void add_merge_command(CLI::App& app);     // cmd_merge.cpp
void add_serve_command(CLI::App& app);     // cmd_serve.cpp

}  // namespace engine::cli
