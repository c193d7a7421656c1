#!/usr/bin/env python3
"""Reference values for engine/train/metrics.cpp from the libraries Hugging Face's examples use.

Draws random cases (classification ids, regression scores with ties, NER tag sequences mixing IOB1,
IOB2 and stray I- tags), scores them with scikit-learn, SciPy and seqeval, and writes inputs and
results to tests/fixtures/metrics_reference.json, which tests/test_metrics.cpp reads.

Run in a throwaway virtual environment (nothing here is a dependency of the engine):
    python3 -m venv /tmp/venv-ref && /tmp/venv-ref/bin/pip install scikit-learn scipy seqeval
    /tmp/venv-ref/bin/python tools/reference_metrics.py
"""
import importlib.metadata
import json
import math
import os
import random

from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from sklearn.metrics import accuracy_score, matthews_corrcoef
from sklearn.metrics import f1_score as sk_f1

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "metrics_reference.json")


def nan_to_none(x):
    return None if isinstance(x, float) and math.isnan(x) else x


def classification_case(rng, n, classes, pred_classes, constant_pred=False):
    gold = [rng.randrange(classes) for _ in range(n)]
    # Mostly right, sometimes a class that never appears in gold (macro F1 must count it).
    pred = [g if rng.random() < 0.6 else rng.randrange(pred_classes) for g in gold]
    if constant_pred:
        pred = [1] * n  # MCC undefined: sklearn says 0
    return {
        "gold": gold,
        "pred": pred,
        "accuracy": accuracy_score(gold, pred),
        "macro_f1": sk_f1(gold, pred, average="macro", zero_division=0),
        "mcc": float(matthews_corrcoef(gold, pred)),
    }


def regression_case(rng, n, constant=False):
    x = [round(rng.uniform(0, 5), 1) for _ in range(n)]  # one decimal: many ties
    y = [3.0] * n if constant else [round(v + rng.gauss(0, 1.0), 1) for v in x]
    return {
        "x": x,
        "y": y,
        "pearson": nan_to_none(float(pearsonr(x, y)[0])),
        "spearman": nan_to_none(float(spearmanr(x, y)[0])),
    }


TAGS = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-MISC", "I-MISC"]


def ner_case(rng, sentences):
    gold, pred = [], []
    for _ in range(sentences):
        length = rng.randint(1, 12)
        g = [rng.choice(TAGS) for _ in range(length)]
        p = [t if rng.random() < 0.7 else rng.choice(TAGS) for t in g]
        gold.append(g)
        pred.append(p)
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    by_type = {
        k: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "support": int(v["support"])}
        for k, v in report.items()
        if k not in ("micro avg", "macro avg", "weighted avg")
    }
    return {
        "gold": gold,
        "pred": pred,
        "precision": precision_score(gold, pred),
        "recall": recall_score(gold, pred),
        "f1": f1_score(gold, pred),
        "by_type": by_type,
    }


def main():
    rng = random.Random(20240607)
    fixture = {
        "generator": "tools/reference_metrics.py",
        "versions": {name: importlib.metadata.version(name) for name in ("scikit-learn", "scipy", "seqeval")},
        "classification": [classification_case(rng, 200, 4, 5), classification_case(rng, 57, 2, 2),
                           classification_case(rng, 31, 7, 7), classification_case(rng, 12, 3, 3, constant_pred=True)],
        "regression": [regression_case(rng, 50), regression_case(rng, 9), regression_case(rng, 6, constant=True)],
        "ner": [ner_case(rng, 40), ner_case(rng, 5)],
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
