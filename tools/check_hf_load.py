#!/usr/bin/env python3
"""Checks that a model directory the engine saved loads into Hugging Face transformers and gives
the logits the engine gives.

Usage: python3 tools/check_hf_load.py MODEL_DIR ENGINE_BINARY [TEXT ...]
Runs `ENGINE_BINARY predict --model MODEL_DIR --backend cpu` on the texts (a tab separates a pair),
loads MODEL_DIR with AutoModelForSequenceClassification / AutoModelForTokenClassification (as the
saved config.json's architectures say) and AutoTokenizer, and compares logits (classification,
regression) or tags (token classification). Exits non-zero on a mismatch. Needs torch and
transformers (e.g. in a throwaway venv).
"""
import json
import subprocess
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

DEFAULT_TEXTS = ["a gripping , funny and thoroughly moving film", "the plot is thin and the acting worse",
                 "it's fine.\tit is fine .", "Ünïcödé, CJK 漢字 and emoji 🙂 work too"]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model_dir, engine = sys.argv[1], sys.argv[2]
    texts = sys.argv[3:] or DEFAULT_TEXTS
    config = json.load(open(f"{model_dir}/config.json"))
    tokens = config.get("architectures", [""])[0] == "BertForTokenClassification"
    out = subprocess.run([engine, "predict", "--model", model_dir, "--backend", "cpu"], input="\n".join(texts) + "\n",
                         capture_output=True, text=True, check=True).stdout.splitlines()
    engine_rows = [json.loads(line) for line in out]
    tok = AutoTokenizer.from_pretrained(model_dir)
    cls = AutoModelForTokenClassification if tokens else AutoModelForSequenceClassification
    model = cls.from_pretrained(model_dir).eval()
    worst = 0.0
    for text, row in zip(texts, engine_rows):
        a, _, b = text.partition("\t")
        enc = tok(a.split() if tokens else a, (b or None) if not tokens else None, is_split_into_words=tokens,
                  truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0]
        if tokens:
            words = enc.word_ids()
            tags, seen = [], set()
            for i, w in enumerate(words):
                if w is not None and w not in seen:
                    seen.add(w)
                    tags.append(model.config.id2label[int(logits[i].argmax())])
            assert tags == row["tags"], f"{text!r}: transformers {tags} engine {row['tags']}"
            print(f"{text[:40]!r:44} transformers and engine tags {tags}")
        else:
            ref = logits.tolist()
            got = row["logits"] if "logits" in row else [row["value"]]
            err = max(abs(x - y) for x, y in zip(ref, got)) / max(1e-6, max(abs(x) for x in ref))
            worst = max(worst, err)
            print(f"{text[:40]!r:44} transformers {[round(x, 5) for x in ref]} engine {[round(x, 5) for x in got]}")
    if tokens:
        print(f"{len(texts)} inputs; every tag equal")
    else:
        print(f"{len(texts)} inputs; largest relative logit difference {worst:.2e}")
    if worst > 1e-4:
        sys.exit("MISMATCH")


if __name__ == "__main__":
    main()
