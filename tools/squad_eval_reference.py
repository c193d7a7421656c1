#!/usr/bin/env python3
"""Scores predictions.json (and null_odds.json) against a SQuAD JSON file with the reference
metrics of tools/make_qa_fixture.py: transformers 4.x squad_metrics.squad_evaluate for v2 (null odds
as the no-answer probabilities, threshold 1.0, as evaluate-v2.0.py --na-prob-file does), and
evaluate-v1.1.py's rules for v1.1. An independent check of the numbers `engine eval --task qa`
reports for the same predictions.

Usage: python tools/squad_eval_reference.py DATA.json predictions.json [null_odds.json] \
           --squad-metrics PATH/squad_metrics.py
Without null_odds.json: evaluate-v1.1.py's exact_match and f1 over the questions that have an answer
(for a v2 file, how good the spans are when the model must answer).
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_qa_fixture import load_squad_metrics, read_examples, v11_metrics  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("predictions")
    ap.add_argument("null_odds", nargs="?")
    ap.add_argument("--squad-metrics", required=True)
    args = ap.parse_args()
    examples = read_examples(args.data)
    preds = json.load(open(args.predictions, encoding="utf-8"))
    if args.null_odds:
        sm = load_squad_metrics(args.squad_metrics)

        class Ex:
            def __init__(self, e):
                self.qas_id = e["id"]
                self.answers = [{"text": t} for t in e["answers"]["text"]]

        odds = json.load(open(args.null_odds))
        print(json.dumps(dict(sm["squad_evaluate"]([Ex(e) for e in examples], preds, odds, 1.0))))
    else:
        answerable = [e for e in examples if e["answers"]["text"]]
        print(json.dumps(dict(v11_metrics(answerable, preds), questions=len(answerable))))


if __name__ == "__main__":
    main()
