// `engine tokenize`: WordPiece-tokenize UTF-8 lines from standard input, one output line per input
// line: the ids (with [CLS] and [SEP]) separated by spaces, or with --json the ids, token type ids,
// tokens and character offsets. Other tools and checks parse the plain format: keep it exact.
#include <iostream>
#include <memory>

#include "engine/cli/commands.h"
#include "tokenizer/tokenize_stream.h"

namespace engine::cli {

void add_tokenize_command(CLI::App& app) {
  auto opts = std::make_shared<tokenizer::TokenizeStreamOptions>();
  auto truncation = std::make_shared<std::string>("longest_first");
  CLI::App* cmd = app.add_subcommand(
      "tokenize",
      "Tokenize UTF-8 lines from standard input as Hugging Face's BertTokenizer does; print one line of\n"
      "space-separated ids per input line, [CLS] and [SEP] included.");
  cmd->add_option("--vocab", opts->vocab_path, "vocab.txt of the model")->required();
  auto* lower = cmd->add_flag_function(
      "--lowercase", [opts](int64_t) { opts->lowercase = true; },
      "uncased rules: lowercase and strip accents (default: do_lower_case of the vocab's directory's "
      "tokenizer_config.json, else on)");
  auto* no_lower = cmd->add_flag_function(
      "--no-lowercase", [opts](int64_t) { opts->lowercase = false; }, "cased rules: keep case and accents");
  lower->excludes(no_lower);
  cmd->add_flag("--pairs", opts->pairs, "each line holds two texts separated by its first tab");
  cmd->add_option("--max-length", opts->encode.max_length,
                  "truncate to at most N tokens including [CLS]/[SEP] (0: no truncation)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--truncation", *truncation, "longest_first, only_first or only_second")
      ->check(CLI::IsMember({"longest_first", "only_first", "only_second"}));
  cmd->add_flag("--json", opts->json,
                "print {ids, type_ids, tokens, offsets} per line; offsets are character offsets into "
                "the line's text (a or b), as Hugging Face gives them");
  cmd->add_option("--threads", opts->threads, "encoding threads (0: all)")->check(CLI::NonNegativeNumber);
  cmd->callback([opts, truncation] {
    opts->encode.truncation = tokenizer::parse_truncation(*truncation);
    std::ios::sync_with_stdio(false);
    tokenizer::run_tokenize(std::cin, std::cout, *opts);
  });
}

}  // namespace engine::cli
