#!/usr/bin/env python3
"""Times Hugging Face `tokenizers` (the Rust fast tokenizer behind BertTokenizer) in batch mode
on the tokenizer parity corpus, the same text bench/bench_tokenizer.cpp measures.

Usage (same machine as the C++ bench; a venv with transformers + tokenizers):
    python3 tools/bench_hf_tokenizer.py [--data ../shared/data] [--repeats 5]
It runs itself twice in subprocesses: once with RAYON_NUM_THREADS=1 (one thread) and once with
all threads (TOKENIZERS_PARALLELISM=true), and prints MB/s and tokens/s of the best repeat of
Tokenizer.encode_batch over the whole corpus (lines decoded with errors="replace", as the engine
does), for the uncased and the cased vocabulary.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(args):
    from transformers import BertTokenizer  # imported here: the thread settings must come first
    with open(os.path.join(HERE, "../tests/fixtures/tokenizer/corpus.txt"), "rb") as f:
        raw = f.read().split(b"\n")[:-1]
    n_bytes = sum(len(r) for r in raw)
    texts = [r.decode("utf-8", errors="replace") for r in raw]
    for mode, lower in (("uncased", True), ("cased", False)):
        tok = BertTokenizer(vocab=os.path.join(args.data, f"vocab/bert-base-{mode}/vocab.txt"), do_lower_case=lower)
        rust = tok._tokenizer
        best = float("inf")
        tokens = 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = rust.encode_batch(texts)
            best = min(best, time.perf_counter() - t0)
            tokens = sum(len(e.ids) for e in out)
        print(f"hf_tokenizers {args.label} {mode}: {len(texts)} lines {n_bytes} bytes {tokens} tokens "
              f"best {best * 1000:.1f} ms  {n_bytes / best / 1e6:.2f} MB/s  {tokens / best / 1e6:.3f} M tokens/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(HERE, "../../shared/data"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--label", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.label:
        measure(args)
        return
    import transformers
    import tokenizers
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, cpus {os.cpu_count()}")
    for label, env in (("1-thread", {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}),
                       ("all-threads", {"TOKENIZERS_PARALLELISM": "true"})):
        subprocess.run([sys.executable, __file__, "--data", args.data, "--repeats", str(args.repeats),
                        "--label", label], env={**os.environ, **env}, check=True)


if __name__ == "__main__":
    main()
