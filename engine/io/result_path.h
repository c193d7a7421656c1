// How results name files and directories, so that they read the same on any machine: the options in
// run_config.json and trainer_state.json, eval's output, the finetune log, the bench JSON. The rule:
//   - a relative path is kept as given (normalised): it already reads the same anywhere
//     ("../shared/data/sst2/dev.tsv", "runs/sst2");
//   - an absolute path under the current directory is written relative to it ("runs/sst2/model");
//   - any other absolute path is reduced to its last component, the model or file name
//     ("~/.cache/engine/models/all-MiniLM-L6-v2" -> "all-MiniLM-L6-v2", "/tmp/x/dev.tsv" ->
//     "dev.tsv"): the directories above it only name the machine the run happened on.
// Error messages are not results: they name the full path, which is what a user needs to act.
#pragma once
#include <string>

namespace engine::io {

std::string result_path(const std::string& path);

}  // namespace engine::io
