#!/usr/bin/env python3
"""Checks that a LoRA adapter directory the engine saved loads into Hugging Face peft and gives the
logits the engine gives.

Usage: python3 tools/check_peft_load.py BASE_DIR ADAPTER_DIR ENGINE_BINARY [TEXT ...]
Runs `ENGINE_BINARY predict --model BASE_DIR --adapter ADAPTER_DIR --backend cpu` on the texts (a tab
separates a pair), then builds
    PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(BASE_DIR, ...), ADAPTER_DIR)
(the labels from ADAPTER_DIR/config.json, which the engine writes) with the tokenizer of ADAPTER_DIR,
and compares the logits. Exits non-zero when the largest relative difference exceeds 1e-4.
Needs torch, transformers and peft (e.g. /work/venv-hf).
"""
import json
import subprocess
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

DEFAULT_TEXTS = ["a gripping , funny and thoroughly moving film", "the plot is thin and the acting worse",
                 "it's fine.\tit is fine .", "Ünïcödé, CJK 漢字 and emoji 🙂 work too"]


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    base_dir, adapter_dir, engine = sys.argv[1], sys.argv[2], sys.argv[3]
    texts = sys.argv[4:] or DEFAULT_TEXTS
    labels = json.load(open(f"{adapter_dir}/config.json"))["id2label"]
    out = subprocess.run([engine, "predict", "--model", base_dir, "--adapter", adapter_dir, "--backend", "cpu",
                          "--quiet"], input="\n".join(texts) + "\n", capture_output=True, text=True,
                         check=True).stdout.splitlines()
    engine_rows = [json.loads(line) for line in out]
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    base = AutoModelForSequenceClassification.from_pretrained(
        base_dir, num_labels=len(labels), id2label={int(k): v for k, v in labels.items()})
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    worst = 0.0
    for text, row in zip(texts, engine_rows):
        a, _, b = text.partition("\t")
        enc = tok(a, b or None, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            ref = model(**enc).logits[0].tolist()
        got = row["logits"]
        err = max(abs(x - y) for x, y in zip(ref, got)) / max(1e-6, max(abs(x) for x in ref))
        worst = max(worst, err)
        print(f"{text[:40]!r:44} peft {[round(x, 5) for x in ref]} engine {[round(x, 5) for x in got]}")
    print(f"{len(texts)} inputs; largest relative logit difference {worst:.2e}")
    if worst > 1e-4:
        sys.exit("MISMATCH")


if __name__ == "__main__":
    main()
