#!/usr/bin/env python3
"""Side by side on the CPU: the engine's fast CPU backend (`engine bench --backend cpu`) against
PyTorch eager (Hugging Face BertForSequenceClassification, bench/pytorch_baseline.py --device cpu),
the same fine-tune steps in one run of this script, one workload after the other:

  minilm-fixed128   all-MiniLM-L6-v2's config, 32 sequences of 128 tokens
  minilm-sst2       the same model on real SST-2 training-sentence lengths (consecutive, cycling)
  minilm-agnews     the same model on real AG News lengths, cut at 128 tokens as a max-length-128
                    fine-tune would
  bert-base-fixed128  BERT-base shape, random weights, 32 x 128

Both sides: batch 32, fp32, dropout as the config says (0.1), AdamW (lr 2e-5, weight decay 0.01),
gradient clipping at 1.0, the same thread count (--threads: the engine's --threads, torch's
set_num_threads), the same sequence lengths per batch (PyTorch pads each batch to its own longest
sequence, as the HF Trainer's dynamic padding does; the engine packs and does no padding work),
random token ids and weights on both sides (speed does not depend on their values), and the same
number of untimed warm-up and timed steps. Each side runs as its own process; its peak memory is
the process's peak resident set (getrusage of the child).

Also reported from the engine's run: the matrix products' rate in a fine-tune step (the FLOPs of
every linear layer's forward, dX and dW products over the measured time of the engine's `matmuls`
category, i.e. linear ops without their fused GELU pieces) against the BLAS's own large-GEMM rate
(`--peak-gemm`, an n^3 product through the same backend, measured in the same run).

Usage (from the repository root, torch from /work/venv-hf or any env with torch + transformers):
  python bench/cpu_vs_pytorch.py --model DIR [--threads N] [--warmup 1] [--steps 3] [--out DIR]
      [--workloads minilm-fixed128,minilm-sst2,...]
DIR: all-MiniLM-L6-v2 (tools/fetch_model all-MiniLM-L6-v2 prints it). Writes the table to stdout and
every raw output (each side's JSON report and log, the lengths files) to --out.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="all-MiniLM-L6-v2 directory (config.json)")
    p.add_argument("--engine", default=os.path.join(ROOT, "build/bin/engine"))
    p.add_argument("--data-dir", default=os.path.join(ROOT, "../shared/data"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--peak-gemm", type=int, default=2048, help="n of the engine's n^3 BLAS peak product")
    p.add_argument("--max-length", type=int, default=128, help="real lengths are cut here")
    p.add_argument("--workloads", default="minilm-fixed128,minilm-sst2,minilm-agnews,bert-base-fixed128")
    p.add_argument("--out", default="/tmp/cpu_vs_pytorch")
    p.add_argument("--reuse", action="store_true",
                   help="take a workload's results from --out when both sides' reports are already there")
    a = p.parse_args(argv)
    if not os.path.isfile(os.path.join(a.model, "config.json")):
        p.error(f"--model {a.model}: no config.json there")
    if not os.access(a.engine, os.X_OK):
        p.error(f"--engine {a.engine}: not an executable (build it first: cmake --build build --target engine)")
    if a.threads < 1 or a.steps < 1 or a.warmup < 0:
        p.error("--threads and --steps must be >= 1, --warmup >= 0")
    return a


def real_lengths(args, task, tsv, skip_header):
    """Token counts of the file's first column with the engine's tokenizer, cut at --max-length."""
    vocab = os.path.join(args.data_dir, "vocab/bert-base-uncased/vocab.txt")
    path = os.path.join(args.data_dir, tsv)
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: missing (real-length workloads need ../shared/data)")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1 if skip_header else 0:]
    text = "\n".join(line.split("\t")[0] for line in lines) + "\n"
    out = subprocess.run([args.engine, "tokenize", "--vocab", vocab, "--lowercase", "--max-length", "512"],
                         input=text, capture_output=True, text=True, check=True).stdout
    lengths = [min(len(line.split()), args.max_length) for line in out.splitlines()]
    file = os.path.join(args.out, f"lengths-{task}.txt")
    with open(file, "w") as f:
        f.write("\n".join(map(str, lengths)) + "\n")
    return file


def run_measured(cmd, log_path):
    """Runs cmd, its stdout and stderr to log_path; returns (seconds, peak RSS in bytes)."""
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log_path}")
    return time.time() - t0, usage.ru_maxrss * 1024


def linear_flops_per_token(cfg):
    """Forward + dX + dW FLOPs of the encoder's linear layers per token (3 x 2 x multiply-adds)."""
    H, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    return 3 * 2 * L * (3 * H * H + H * H + 2 * H * F)


def main(argv):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    workloads = {
        "minilm-fixed128": (args.model, ["--seq", "128"]),
        "minilm-sst2": (args.model, ["--lengths", lambda: real_lengths(args, "sst2", "sst2/train.tsv", True)]),
        "minilm-agnews": (args.model, ["--lengths", lambda: real_lengths(args, "agnews", "agnews/train_10k.tsv", False)]),
        "bert-base-fixed128": ("bert-base", ["--seq", "128"]),
    }
    rows = []
    for name in args.workloads.split(","):
        if name not in workloads:
            raise SystemExit(f"--workloads: unknown '{name}' (expected {', '.join(workloads)})")
        config, shape = workloads[name]
        shape = [s() if callable(s) else s for s in shape]
        common = ["--config", config, "--batch", str(args.batch), "--warmup", str(args.warmup), "--steps",
                  str(args.steps), "--threads", str(args.threads)] + shape
        ejson, tjson = os.path.join(args.out, f"engine-{name}.json"), os.path.join(args.out, f"torch-{name}.json")
        engine_cmd = [args.engine, "bench", "--backend", "cpu", "--precision", "fp32", "--breakdown-steps", "1",
                      "--peak-gemm", str(args.peak_gemm), "--json", ejson] + common
        torch_cmd = [sys.executable, os.path.join(ROOT, "bench/pytorch_baseline.py"), "--device", "cpu", "--mode",
                     "eager", "--precision", "fp32", "--json", tjson] + common
        rss_file = os.path.join(args.out, f"peak-rss-{name}.json")
        if args.reuse and all(os.path.isfile(f) for f in (ejson, tjson, rss_file)):
            engine_rss, torch_rss = json.load(open(rss_file))
        else:
            print(f"{name}: engine ...", file=sys.stderr, flush=True)
            _, engine_rss = run_measured(engine_cmd, os.path.join(args.out, f"engine-{name}.log"))
            print(f"{name}: pytorch ...", file=sys.stderr, flush=True)
            _, torch_rss = run_measured(torch_cmd, os.path.join(args.out, f"torch-{name}.log"))
            with open(rss_file, "w") as f:
                json.dump([engine_rss, torch_rss], f)
        e, t = json.load(open(ejson)), json.load(open(tjson))["runs"][0]
        mean_tokens = e["batch"]["mean_tokens"]
        matmul_ms = e["breakdown_ms"]["matmuls"]
        # The breakdown step runs batch `warmup` (the first timed one); for fixed lengths every batch
        # has the same tokens, for real lengths the mean over the timed batches is an estimate.
        matmul_gflops = linear_flops_per_token(e["config"]) * mean_tokens / (matmul_ms * 1e-3) / 1e9
        peak_gflops = e["peak_tflops_measured"] * 1e3
        rows.append(dict(workload=name, tokens=mean_tokens, padded=t["padded_tokens_per_step"],
                         engine_ms=e["step_ms"]["median"], torch_ms=t["step_ms"]["median"],
                         engine_tps=e["tokens_per_s"], torch_tps=t["tokens_per_s"],
                         engine_rss=engine_rss, torch_rss=torch_rss, matmul_gflops=matmul_gflops,
                         blas_peak_gflops=peak_gflops, matmul_share=matmul_ms / e["breakdown_step_ms"]))
    header = (f"{'workload':20s} {'tok/step':>8s} {'padded':>7s} {'engine ms':>10s} {'torch ms':>9s} "
              f"{'engine tok/s':>12s} {'torch tok/s':>11s} {'speedup':>7s} {'engine MiB':>10s} {'torch MiB':>9s} "
              f"{'matmul GF/s':>11s} {'BLAS peak':>9s} {'of peak':>7s}")
    print(f"threads {args.threads}, batch {args.batch}, warm-up {args.warmup}, timed steps {args.steps} (medians)")
    print(header)
    for r in rows:
        print(f"{r['workload']:20s} {r['tokens']:8.0f} {r['padded']:7.0f} {r['engine_ms']:10.1f} {r['torch_ms']:9.1f} "
              f"{r['engine_tps']:12.0f} {r['torch_tps']:11.0f} {r['engine_tps'] / r['torch_tps']:6.2f}x "
              f"{r['engine_rss'] / 2**20:10.0f} {r['torch_rss'] / 2**20:9.0f} {r['matmul_gflops']:11.1f} "
              f"{r['blas_peak_gflops']:9.1f} {100 * r['matmul_gflops'] / r['blas_peak_gflops']:6.0f}%")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(dict(argv=argv, threads=args.threads, rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
