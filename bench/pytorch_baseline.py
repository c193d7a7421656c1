#!/usr/bin/env python3
"""PyTorch baseline for `engine bench`: Hugging Face BertForSequenceClassification, one full
fine-tune step (host->device copy of the batch, zero_grad, forward, backward, grad-norm clipping at
1.0, AdamW) timed the way the engine times it, on the same configs and batches.

Modes (--mode eager|compile|both):
  eager    bf16 autocast (fp32 master weights, as the engine keeps them), attn_implementation="sdpa",
           torch.optim.AdamW(fused=True)
  compile  the same model wrapped in torch.compile (default mode); compilation happens in warm-up
           (real-length batches have varying padded widths: dynamic shapes after the first recompile)

Batches: fixed length (--seq, --batch), or real lengths (--lengths FILE: one length per line,
[CLS]/[SEP] included, e.g. from tools/lengths_from_data): consecutive lengths, cycling, --batch per
batch, each batch padded to its own longest sequence (dynamic padding, as PyTorch requires).
tokens_per_s counts real (non-pad) tokens only, so it is comparable with the engine's.

Output (--json FILE): {"schema": "pytorch-baseline/1", "runs": [one object per mode]} with
step_ms {median, p10, p90, min, max, mean}, samples_per_s, tokens_per_s, padded_tokens_per_step,
peak_memory_bytes (torch.cuda.max_memory_allocated over the timed steps: parameters, gradients,
optimizer state, activations), peak_reserved_bytes, versions and the device name.

Smoke test on a machine without a GPU (fp32, tiny model):
  python3 bench/pytorch_baseline.py --device cpu --config bert-tiny --seq 16 --batch 4 --warmup 1 --steps 2
"""
import argparse
import json
import os
import statistics
import sys
import time

NAMED = {  # the engine's BertConfig::named shapes
    "bert-tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "bert-mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="bert-base", help="bert-tiny|bert-mini|bert-base|bert-large or a model DIR")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lengths", default="", help="file of sequence lengths, one per line")
    p.add_argument("--mode", default="both", choices=["eager", "compile", "both"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on cuda, fp32 on cpu")
    p.add_argument("--warmup", type=int, default=-1,
                   help="-1: 10 on cuda (as engine bench, so both time the same batches), 1 on cpu")
    p.add_argument("--steps", type=int, default=-1, help="-1: 50 on cuda, 2 on cpu")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads on the CPU (0: torch's default)")
    p.add_argument("--json", default="", help="write the report here")
    a = p.parse_args(argv)
    if a.seq < 1 or a.batch < 1:
        p.error("--seq and --batch must be positive")
    return a


def read_lengths(path, max_position):
    lengths = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            t = line.strip()
            if not t:
                continue
            if not t.isdigit() or int(t) < 1:
                raise SystemExit(f"--lengths {path}: line {number} ({t!r}) is not a positive length")
            if int(t) > max_position:
                raise SystemExit(f"--lengths {path}: line {number}: {t} > max_position_embeddings {max_position}")
            lengths.append(int(t))
    if not lengths:
        raise SystemExit(f"--lengths {path}: no lengths")
    return lengths


def make_config(args):
    from transformers import BertConfig
    if args.config in NAMED:
        cfg = BertConfig(**NAMED[args.config])
    else:
        cfg = BertConfig.from_pretrained(args.config)
    cfg.num_labels = 2
    return cfg


def make_batches(args, cfg, count):
    """CPU tensors per batch: ids, token types, mask, labels, real token count (padded to the longest)."""
    import torch
    g = torch.Generator().manual_seed(args.seed)
    lengths = read_lengths(args.lengths, cfg.max_position_embeddings) if args.lengths else None
    cursor, batches = 0, []
    for _ in range(count):
        if lengths:
            lens = []
            for _ in range(args.batch):
                lens.append(lengths[cursor])
                cursor = (cursor + 1) % len(lengths)
        else:
            if args.seq > cfg.max_position_embeddings:
                raise SystemExit(f"--seq {args.seq} > max_position_embeddings {cfg.max_position_embeddings}")
            lens = [args.seq] * args.batch
        width = max(lens)
        ids = torch.randint(1000, cfg.vocab_size, (args.batch, width), generator=g)
        mask = torch.zeros(args.batch, width, dtype=torch.long)
        for i, n in enumerate(lens):
            mask[i, :n] = 1
            ids[i, 0] = 101
        ids = ids * mask  # pad id 0
        labels = torch.randint(0, cfg.num_labels, (args.batch,), generator=g)
        pin = args.device == "cuda"
        batches.append(dict(input_ids=ids.pin_memory() if pin else ids,
                            attention_mask=mask.pin_memory() if pin else mask,
                            token_type_ids=torch.zeros_like(ids),
                            labels=labels.pin_memory() if pin else labels,
                            real_tokens=sum(lens), padded_tokens=args.batch * width))
    return batches


def stats(ms):
    s = sorted(ms)

    def pct(q):
        pos = q * (len(s) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(s) - 1)
        return s[lo] + (s[hi] - s[lo]) * (pos - lo)
    return dict(median=pct(0.5), p10=pct(0.1), p90=pct(0.9), min=s[0], max=s[-1], mean=statistics.fmean(s))


def run_mode(args, mode, cfg):
    import torch
    from transformers import BertForSequenceClassification
    cuda = args.device == "cuda"
    bf16 = args.precision == "bf16" or (args.precision == "auto" and cuda)
    warmup = args.warmup if args.warmup >= 0 else (10 if cuda else 1)
    steps = args.steps if args.steps >= 1 else (50 if cuda else 2)
    torch.manual_seed(args.seed)
    model = BertForSequenceClassification._from_config(cfg, attn_implementation="sdpa").to(args.device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, fused=cuda)
    fwd = torch.compile(model) if mode == "compile" else model
    batches = make_batches(args, cfg, warmup + steps)

    def step(b):
        inputs = {k: b[k].to(args.device, non_blocking=True)
                  for k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=bf16):
            loss = fwd(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    for i in range(warmup):
        step(batches[i])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    ms = []
    loss = None
    for s in range(steps):
        b = batches[warmup + s]
        if cuda:
            events[s][0].record()
            loss = step(b)
            events[s][1].record()
        else:
            t0 = time.perf_counter()
            loss = step(b)
            ms.append((time.perf_counter() - t0) * 1e3)
    if cuda:
        torch.cuda.synchronize()
        ms = [a.elapsed_time(b) for a, b in events]
    timed = batches[warmup:]
    st = stats(ms)
    median_s = st["median"] * 1e-3
    samples = args.batch
    real = statistics.fmean(b["real_tokens"] for b in timed)
    padded = statistics.fmean(b["padded_tokens"] for b in timed)
    return dict(
        mode=mode, device=torch.cuda.get_device_name() if cuda else "cpu",
        torch=torch.__version__, transformers=__import__("transformers").__version__,
        precision="bf16-autocast" if bf16 else "fp32", attention="sdpa", optimizer="AdamW(fused)" if cuda else "AdamW",
        config=dict(name=args.config, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                    num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size),
        batch=dict(mode="lengths" if args.lengths else "fixed", seq=None if args.lengths else args.seq,
                   batch=args.batch, lengths_source=args.lengths or None, mean_tokens=real),
        warmup=warmup, steps=steps, step_ms=st,
        samples_per_s=samples / median_s, tokens_per_s=real / median_s, padded_tokens_per_step=padded,
        peak_memory_bytes=torch.cuda.max_memory_allocated() if cuda else None,
        peak_reserved_bytes=torch.cuda.max_memory_reserved() if cuda else None,
        final_loss=float(loss.detach().float().cpu()))


def main(argv):
    args = parse_args(argv)
    import torch
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU (use --device cpu for a smoke run)")
    cfg = make_config(args)
    modes = ["eager", "compile"] if args.mode == "both" else [args.mode]
    runs = []
    for mode in modes:
        r = run_mode(args, mode, cfg)
        runs.append(r)
        print(f"{mode:8s} {args.config} {'lengths ' + args.lengths if args.lengths else 'seq ' + str(args.seq)} "
              f"batch {args.batch}: median {r['step_ms']['median']:.3f} ms, {r['samples_per_s']:.1f} samples/s, "
              f"{r['tokens_per_s']:.0f} tokens/s, peak memory "
              f"{(r['peak_memory_bytes'] or 0) / 2**20:.0f} MiB", flush=True)
        if args.device == "cuda":
            import gc
            gc.collect()
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": "pytorch-baseline/1", "argv": argv, "runs": runs}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
