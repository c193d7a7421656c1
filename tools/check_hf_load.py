#!/usr/bin/env python3
"""Checks that a model directory the engine saved loads into Hugging Face transformers and gives
the logits the engine gives.

Usage: python3 tools/check_hf_load.py MODEL_DIR ENGINE_BINARY [TEXT ...]
Runs `ENGINE_BINARY predict --model MODEL_DIR --backend cpu` on the texts (a tab separates a pair),
loads MODEL_DIR with AutoModelForSequenceClassification / AutoModelForTokenClassification (as the
saved config.json's architectures say) and AutoTokenizer, and compares logits (classification,
regression) or tags (token classification). A question answering model (BertForQuestionAnswering)
loads with AutoModelForQuestionAnswering instead: the engine answers JSON lines {question, context}
with small windows (--max-length 64 --doc-stride 16, so long contexts overflow), transformers'
logits of the same windows go through run_qa.py's post-processing (tools/make_qa_fixture.py), and
the answer texts must be equal. Exits non-zero on a mismatch. Needs torch and transformers (e.g. in
a throwaway venv).
"""
import json
import os
import subprocess
import sys

import torch
from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification, AutoTokenizer)

DEFAULT_TEXTS = ["a gripping , funny and thoroughly moving film", "the plot is thin and the acting worse",
                 "it's fine.\tit is fine .", "Ünïcödé, CJK 漢字 and emoji 🙂 work too"]


QA_EXAMPLES = [
    {"question": "Who ran the race?", "context": "The race was run by Ada Lovelace in 1843, in London."},
    {"question": "  When did the Normans reach Italy?",
     "context": "The Normans came to Italy in the early 11th century as mercenaries. Over the following decades "
                "they founded states of their own in the south of the peninsula and in Sicily, and their leaders "
                "became counts, dukes and finally kings. Ünïcödé names such as Guiscard and Hauteville appear in "
                "the chronicles of the time, which were written in Latin and Greek."},
]


def check_qa(model_dir, engine):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_qa_fixture import context_offsets, postprocess
    args = ["--max-length", "64", "--doc-stride", "16"]
    out = subprocess.run([engine, "predict", "--model", model_dir, "--backend", "cpu", "--quiet"] + args,
                         input="".join(json.dumps(e) + "\n" for e in QA_EXAMPLES), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    engine_answers = [json.loads(line)["answer"] for line in out]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    enc = tok([e["question"].lstrip() for e in QA_EXAMPLES], [e["context"] for e in QA_EXAMPLES],
              truncation="only_second", max_length=64, stride=16, return_overflowing_tokens=True,
              return_offsets_mapping=True)
    features, starts, ends = [], [], []
    for i, ids in enumerate(enc["input_ids"]):
        with torch.no_grad():
            o = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([enc["token_type_ids"][i]]))
        features.append({"example": enc["overflow_to_sample_mapping"][i], "offsets": context_offsets(enc, i)})
        starts.append(o.start_logits[0].numpy())
        ends.append(o.end_logits[0].numpy())
    examples = [dict(e, id=str(k)) for k, e in enumerate(QA_EXAMPLES)]
    preds, _ = postprocess(examples, features, starts, ends, version_2=False)
    for e, got in zip(examples, engine_answers):
        print(f"{e['question'][:40]!r:44} transformers {preds[e['id']]!r} engine {got!r}")
        if preds[e["id"]] != got:
            sys.exit("MISMATCH")
    print(f"{len(examples)} questions in {len(features)} windows; every answer equal")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    model_dir, engine = sys.argv[1], sys.argv[2]
    texts = sys.argv[3:] or DEFAULT_TEXTS
    config = json.load(open(f"{model_dir}/config.json"))
    if config.get("architectures", [""])[0] == "BertForQuestionAnswering":
        return check_qa(model_dir, engine)
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
