#!/usr/bin/env python3
"""Reference learning rates for engine/train/schedule.cpp from Hugging Face's own schedulers.

For each case, builds transformers.get_scheduler on a one-parameter SGD optimizer and records the
learning rate every optimizer step uses (0-based, read before the step as the Trainer's loop does:
optimizer.step() then lr_scheduler.step()), for steps 0..total+2, and the warmup steps
TrainingArguments derives from a ratio. Writes tests/fixtures/schedule_reference.json, read by
tests/test_schedule.cpp. Needs torch and transformers (e.g. the /work/venv-hf environment):
    /work/venv-hf/bin/python tools/reference_schedules.py
"""
import importlib.metadata
import json
import os
import types

import torch
from transformers import TrainingArguments, get_scheduler

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "schedule_reference.json")

CASES = [  # (kind, base lr, warmup steps, total steps)
    ("linear", 5e-5, 0, 10),
    ("linear", 2e-5, 3, 17),
    ("linear", 1e-3, 17, 17),
    ("cosine", 3e-5, 0, 9),
    ("cosine", 1e-4, 4, 23),
    ("constant", 1e-3, 5, 12),
    ("constant_with_warmup", 7e-4, 6, 13),
]

RATIOS = [(0.07, 100), (0.1, 1000), (0.06, 2105), (0.0, 50), (0.5, 3), (0.33, 7)]


def learning_rates(kind, lr, warmup, total):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = get_scheduler(kind, optimizer, num_warmup_steps=warmup, num_training_steps=total)
    rates = []
    for _ in range(total + 3):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def warmup_from_ratio(ratio, total):
    # TrainingArguments' own method on a stand-in object: building real TrainingArguments needs
    # accelerate, and only this one attribute is read.
    return TrainingArguments.get_warmup_steps(types.SimpleNamespace(warmup_steps=ratio), total)


def main():
    fixture = {
        "generator": "tools/reference_schedules.py",
        "versions": {name: importlib.metadata.version(name) for name in ("transformers", "torch")},
        "schedules": [
            {"kind": k, "base_lr": lr, "warmup_steps": w, "total_steps": t, "lr": learning_rates(k, lr, w, t)}
            for k, lr, w, t in CASES
        ],
        "warmup_ratios": [{"ratio": r, "total_steps": t, "warmup_steps": warmup_from_ratio(r, t)} for r, t in RATIOS],
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
