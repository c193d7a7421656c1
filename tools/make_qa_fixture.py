#!/usr/bin/env python3
"""Reference fixtures for extractive question answering (tests/test_qa.cpp), made with Hugging Face.

Reads the SQuAD v2.0 dev subset in ../shared/data (never copied into the repo: the fixtures hold only
what the reference computes from it) and writes tests/fixtures/qa/:

  windows.json      run_qa.py's preprocessing by transformers' fast tokenizer (BertTokenizer, which is
                    the tokenizers-backed one in transformers 5; uncased BERT vocabulary,
                    truncation="only_second", return_overflowing_tokens, return_offsets_mapping,
                    stride): for every question of the file at (max_length 384, stride 128),
                    (128, 32) and (64, 16), each window's gold start/end token
                    as prepare_train_features labels it (padding off); and for a spread subset of
                    questions at (384, 128), (128, 32) and (64, 16), each window's ids, token type
                    ids and character offsets (null outside the context, as
                    prepare_validation_features sets them).
  postprocess.json  random float32 logits for the windows of a subset of questions at (128, 32) and
                    the answers utils_qa.postprocess_qa_predictions gives for them (v1 and v2,
                    null_score_diff_threshold 0 and 1.5): text and, for v2, null odds. The function is
                    written out below from run_qa.py's utils_qa.py (transformers' examples are not
                    in the package).
  metrics.json      predictions of several kinds (gold, partial, empty, unrelated) with random
                    no-answer probabilities, and the official metrics: v2 from transformers 4.x
                    squad_metrics.squad_evaluate (pass --squad-metrics: the squad_metrics.py of a
                    transformers 4.x wheel; its two package-relative imports are replaced, nothing
                    else), v1.1 from evaluate-v1.1.py's rules written out below.

Usage (a venv with transformers, numpy):
  python tools/make_qa_fixture.py --squad ../shared/data/squad_v2_dev_subset/dev-v2.0-first5articles.json \
      --vocab ../shared/data/vocab/bert-base-uncased/vocab.txt --squad-metrics PATH/squad_metrics.py \
      --out tests/fixtures/qa
"""
import argparse
import collections
import json
import os
import re
import string

import numpy as np
from transformers import BertTokenizer


def read_examples(path):
    data = json.load(open(path, encoding="utf-8"))
    out = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = [] if qa.get("is_impossible") else qa["answers"]
                out.append({"id": qa["id"], "question": qa["question"], "context": para["context"],
                            "answers": {"text": [a["text"] for a in answers],
                                        "answer_start": [a["answer_start"] for a in answers]}})
    return out


def tokenize(tok, examples, max_length, stride):
    return tok([e["question"].lstrip() for e in examples], [e["context"] for e in examples],
               truncation="only_second", max_length=max_length, stride=stride, return_overflowing_tokens=True,
               return_offsets_mapping=True, padding=False)


def train_labels(tok, examples, enc):
    """run_qa.py prepare_train_features' labelling (padding off)."""
    out = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tok.cls_token_id)
        sequence_ids = enc.sequence_ids(i)
        answers = examples[enc["overflow_to_sample_mapping"][i]]["answers"]
        if len(answers["answer_start"]) == 0:
            out.append([cls_index, cls_index])
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start_index = 0
        while sequence_ids[token_start_index] != 1:
            token_start_index += 1
        token_end_index = len(input_ids) - 1
        while sequence_ids[token_end_index] != 1:
            token_end_index -= 1
        if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
            out.append([cls_index, cls_index])
            continue
        while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
            token_start_index += 1
        start = token_start_index - 1
        while offsets[token_end_index][1] >= end_char:
            token_end_index -= 1
        out.append([start, token_end_index + 1])
    return out


def context_offsets(enc, i):
    """prepare_validation_features: offsets of non-context tokens set to None."""
    seq = enc.sequence_ids(i)
    return [list(o) if seq[k] == 1 else None for k, o in enumerate(enc["offset_mapping"][i])]


def postprocess(examples, features, all_start, all_end, version_2, n_best_size=20, max_answer_length=30,
                null_score_diff_threshold=0.0):
    """utils_qa.postprocess_qa_predictions (run_qa.py), written out step by step."""
    features_per_example = collections.defaultdict(list)
    for i, f in enumerate(features):
        features_per_example[f["example"]].append(i)
    predictions, null_odds = {}, {}
    for example_index, example in enumerate(examples):
        min_null_prediction = None
        prelim = []
        for fi in features_per_example[example_index]:
            start_logits, end_logits = all_start[fi], all_end[fi]
            offset_mapping = features[fi]["offsets"]
            feature_null_score = start_logits[0] + end_logits[0]
            if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
                min_null_prediction = {"offsets": (0, 0), "score": feature_null_score,
                                       "start_logit": start_logits[0], "end_logit": end_logits[0]}
            start_indexes = np.argsort(start_logits)[-1: -n_best_size - 1: -1].tolist()
            end_indexes = np.argsort(end_logits)[-1: -n_best_size - 1: -1].tolist()
            for s in start_indexes:
                for e in end_indexes:
                    if (s >= len(offset_mapping) or e >= len(offset_mapping) or offset_mapping[s] is None
                            or len(offset_mapping[s]) < 2 or offset_mapping[e] is None or len(offset_mapping[e]) < 2):
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    prelim.append({"offsets": (offset_mapping[s][0], offset_mapping[e][1]),
                                   "score": start_logits[s] + end_logits[e],
                                   "start_logit": start_logits[s], "end_logit": end_logits[e]})
        if version_2 and min_null_prediction is not None:
            prelim.append(min_null_prediction)
            null_score = min_null_prediction["score"]
        preds = sorted(prelim, key=lambda x: x["score"], reverse=True)[:n_best_size]
        if version_2 and min_null_prediction is not None and not any(p["offsets"] == (0, 0) for p in preds):
            preds.append(min_null_prediction)
        context = example["context"]
        for p in preds:
            o = p.pop("offsets")
            p["text"] = context[o[0]: o[1]]
        if len(preds) == 0 or (len(preds) == 1 and preds[0]["text"] == ""):
            preds.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
        if not version_2:
            predictions[example["id"]] = preds[0]["text"]
        else:
            i = 0
            while preds[i]["text"] == "":
                i += 1
            best = preds[i]
            score_diff = null_score - best["start_logit"] - best["end_logit"]
            null_odds[example["id"]] = float(score_diff)
            predictions[example["id"]] = "" if score_diff > null_score_diff_threshold else best["text"]
    return predictions, null_odds


def load_squad_metrics(path):
    """transformers 4.x squad_metrics.py with its two package-relative imports replaced."""
    src = open(path, encoding="utf-8").read()
    src = src.replace("from ...models.bert import BasicTokenizer", "BasicTokenizer = None")
    src = src.replace("from ...utils import logging", "import logging\nlogging.get_logger = logging.getLogger")
    module = {"__name__": "squad_metrics"}
    exec(compile(src, path, "exec"), module)
    return module


def v11_metrics(examples, preds):
    """evaluate-v1.1.py: the best over the gold answers, mean over every question, in percent."""
    def normalize(s):
        s = s.lower()
        s = "".join(ch for ch in s if ch not in set(string.punctuation))
        s = re.sub(r"\b(a|an|the)\b", " ", s)
        return " ".join(s.split())

    def f1(pred, gold):
        p, g = normalize(pred).split(), normalize(gold).split()
        common = collections.Counter(p) & collections.Counter(g)
        same = sum(common.values())
        if same == 0:
            return 0
        precision, recall = same / len(p), same / len(g)
        return 2 * precision * recall / (precision + recall)

    em = f = total = 0
    for e in examples:
        total += 1
        if e["id"] not in preds:
            continue
        golds = e["answers"]["text"]
        em += max(float(normalize(preds[e["id"]]) == normalize(g)) for g in golds)
        f += max(f1(preds[e["id"]], g) for g in golds)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f / total}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--squad", required=True)
    ap.add_argument("--vocab", required=True)
    ap.add_argument("--squad-metrics", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tok = BertTokenizer(vocab=args.vocab, do_lower_case=True)  # transformers >= 5: the fast (tokenizers) one
    examples = read_examples(args.squad)
    rng = np.random.default_rng(20261203)

    # Windows and labels.
    windows = {"squad": os.path.basename(args.squad), "labels": [], "details": []}
    for max_length, stride in [(384, 128), (128, 32), (64, 16)]:
        enc = tokenize(tok, examples, max_length, stride)
        labels = train_labels(tok, examples, enc)
        windows["labels"].append({"max_length": max_length, "stride": stride,
                                  "example": list(enc["overflow_to_sample_mapping"]), "positions": labels})
    subset = list(range(0, len(examples), 40))
    for max_length, stride in [(384, 128), (128, 32), (64, 16)]:
        sub = [examples[i] for i in subset]
        enc = tokenize(tok, sub, max_length, stride)
        for i in range(len(enc["input_ids"])):
            windows["details"].append({"max_length": max_length, "stride": stride,
                                       "example": subset[enc["overflow_to_sample_mapping"][i]],
                                       "ids": enc["input_ids"][i], "type_ids": enc["token_type_ids"][i],
                                       "offsets": context_offsets(enc, i)})
    json.dump(windows, open(os.path.join(args.out, "windows.json"), "w"), separators=(",", ":"))

    # Post-processing on random logits.
    subset = list(range(0, len(examples), 20))
    sub = [examples[i] for i in subset]
    enc = tokenize(tok, sub, 128, 32)
    features, starts, ends = [], [], []
    for i in range(len(enc["input_ids"])):
        n = len(enc["input_ids"][i])
        features.append({"example": enc["overflow_to_sample_mapping"][i], "offsets": context_offsets(enc, i)})
        s = rng.normal(0, 2, n).astype(np.float32)
        e = rng.normal(0, 2, n).astype(np.float32)
        s[0] += np.float32(rng.normal(2, 2))  # [CLS] often competitive: both v2 outcomes occur
        e[0] += np.float32(rng.normal(2, 2))
        starts.append(s)
        ends.append(e)
    post = {"max_length": 128, "stride": 32, "examples": subset,
            "logits": [[float(f"{x:.9g}") for x in np.stack([s, e], 1).reshape(-1)] for s, e in zip(starts, ends)], "cases": []}
    for version_2, threshold in [(False, 0.0), (True, 0.0), (True, 1.5)]:
        preds, odds = postprocess(sub, features, starts, ends, version_2, null_score_diff_threshold=threshold)
        post["cases"].append({"version_2": version_2, "threshold": threshold,
                              "predictions": [preds[e["id"]] for e in sub],
                              "null_odds": [odds[e["id"]] for e in sub] if version_2 else []})
    json.dump(post, open(os.path.join(args.out, "postprocess.json"), "w"), separators=(",", ":"))

    # Metrics.
    sm = load_squad_metrics(args.squad_metrics)
    preds, na_probs = {}, {}
    for e in examples:
        golds = e["answers"]["text"]
        kind = rng.integers(0, 6)
        if kind == 0 or not golds:
            p = "" if rng.random() < 0.6 else e["context"][:int(rng.integers(1, 40))]
        elif kind == 1:
            p = golds[int(rng.integers(0, len(golds)))]
        elif kind == 2:  # part of a gold answer, with its neighbours
            g = golds[0]
            start = e["answers"]["answer_start"][0]
            a = max(0, start - int(rng.integers(0, 15)))
            p = e["context"][a: start + max(1, len(g) - int(rng.integers(0, 10)))]
        elif kind == 3:
            p = "The " + golds[0].upper() + "."
        elif kind == 4:
            p = ""
        else:
            a = int(rng.integers(0, len(e["context"])))
            p = e["context"][a: a + int(rng.integers(1, 60))]
        preds[e["id"]] = p
        na_probs[e["id"]] = float(np.round(rng.normal(0, 3), 1))  # rounded: ties in the threshold walk

    class Ex:
        def __init__(self, e):
            self.qas_id = e["id"]
            self.answers = [{"text": t} for t in e["answers"]["text"]]

    v2 = sm["squad_evaluate"]([Ex(e) for e in examples], preds, na_probs, 1.0)
    answerable = [e for e in examples if e["answers"]["text"]]
    v1 = v11_metrics(answerable, preds)
    json.dump({"predictions": preds, "na_probs": na_probs, "v2": dict(v2), "v1": v1},
              open(os.path.join(args.out, "metrics.json"), "w"), indent=0, ensure_ascii=False)
    print("wrote", args.out, "windows:", [len(l["positions"]) for l in windows["labels"]], "details:",
          len(windows["details"]), "postprocess questions:", len(subset))


if __name__ == "__main__":
    main()
