#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention (flash backend) at the shapes of bench/cuda/bench_attention.cpp.

Runs on the GPU machine with its own PyTorch. Sequences are padded to the batch's longest length
(SDPA has no varlen form), bf16, head dim 64, no mask, dropout 0. TFLOP/s counts only the non-padded
work, the same convention as the C++ bench: forward = 4 * sum(len_i^2) * d * heads, forward+backward
= 3.5 x forward. The mixed batch draws lengths 8..128 with Python's random (seed 1234), not the C++
bench's mt19937, so the draws differ but have the same distribution; padded, every sequence costs
max_len^2 there.
Prints one JSON object per case on stdout.
Usage: python3 bench/pytorch_sdpa_baseline.py [--iters 50]
"""
import argparse
import json
import random

import torch
import torch.nn.functional as F

TOKENS = 16384
D = 64


def lengths_for(length):
    if length > 0:
        return [length] * (TOKENS // length)
    rng = random.Random(1234)
    out, total = [], 0
    while True:
        x = rng.randint(8, 128)
        if total + x > TOKENS:
            return out
        out.append(x)
        total += x


def time_case(heads, length, backward, iters):
    lens = lengths_for(length)
    b, s = len(lens), max(lens)
    q, k, v = (torch.randn(b, heads, s, D, device="cuda", dtype=torch.bfloat16, requires_grad=backward)
               for _ in range(3))
    dout = torch.randn(b, heads, s, D, device="cuda", dtype=torch.bfloat16)
    ctx = torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION)

    def run():
        with ctx:
            o = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
            if backward:
                torch.autograd.grad(o, (q, k, v), dout)

    for _ in range(5):
        run()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        run()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / iters
    flops = 4.0 * sum(l * l for l in lens) * D * heads * (3.5 if backward else 1.0)
    return {
        "impl": "torch_sdpa_flash", "heads": heads, "len": length or "mixed8-128", "pass": "fwd+bwd" if backward else "fwd",
        "sequences": b, "padded_to": s, "tokens": sum(lens), "ms": ms, "tflops_nonpadded": flops / ms * 1e-9,
        "torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    for heads in (12, 16):
        for length in (128, 512, 0):
            for backward in (False, True):
                print(json.dumps(time_case(heads, length, backward, args.iters)), flush=True)


if __name__ == "__main__":
    main()
