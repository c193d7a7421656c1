#!/usr/bin/env python3
"""Makes the Hugging Face parity fixtures in tests/fixtures/hf_tiny_{cls,reg}/.

Each fixture is a tiny random BertForSequenceClassification (2 layers, hidden 64, 4 heads) saved
as an HF model directory (config.json + model.safetensors, f32 weights), a mixed-length batch of
single sentences and pairs (inputs.json), and what transformers computes for it in eval mode
(dropout off), in float64: logits, loss and the gradient of every parameter (expected.safetensors,
F64, names "logits", "loss" and "grad.<parameter name>").

The weights are drawn with a spread far larger than BERT's initializer (0.02) and LayerNorm
parameters are perturbed, so every path carries signal and a wrong gradient cannot hide under
rounding. The engine's test (tests/test_hf_parity.cpp) loads the directory, runs the same packed
batch on its CPU backend in f32 and compares.

Usage (needs torch, transformers and safetensors, e.g. in a throwaway venv):
    python3 -m venv /tmp/hf && /tmp/hf/bin/pip install torch transformers safetensors
    /tmp/hf/bin/python tools/make_hf_fixture.py            # writes tests/fixtures/hf_tiny_*
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (length, second segment starts at) per sequence; 0 = single sentence. Lengths include [CLS]/[SEP].
BATCH = [(5, 0), (1, 0), (9, 5), (3, 0), (12, 7), (2, 0)]


def make(name, num_labels, seed):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=32, type_vocab_size=2,
                        num_labels=num_labels, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                        attn_implementation="eager")
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "LayerNorm.weight" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    out_dir = os.path.join(ROOT, "tests", "fixtures", name)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)  # f32 weights, HF names (bert.* and classifier.*)

    max_len = max(length for length, _ in BATCH)
    ids, types, mask = [], [], []
    seqs = []
    for length, second in BATCH:
        seq = [2] + torch.randint(5, 99, (max(length - 1, 0),)).tolist()
        seq = seq[:length]
        tt = [0 if (second == 0 or i < second) else 1 for i in range(length)]
        seqs.append({"ids": seq, "type_ids": tt})
        ids.append(seq + [0] * (max_len - length))
        types.append(tt + [0] * (max_len - length))
        mask.append([1] * length + [0] * (max_len - length))
    if num_labels == 1:
        labels = (torch.rand(len(BATCH), dtype=torch.float64) * 5.0).tolist()
    else:
        labels = torch.randint(0, num_labels, (len(BATCH),)).tolist()
    for s, label in zip(seqs, labels):
        s["label"] = label
    with open(os.path.join(out_dir, "inputs.json"), "w") as f:
        json.dump({"sequences": seqs}, f, indent=1)

    model = model.double().eval()
    label_tensor = torch.tensor(labels, dtype=torch.float64 if num_labels == 1 else torch.long)
    out = model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types),
                attention_mask=torch.tensor(mask), labels=label_tensor)
    out.loss.backward()
    expected = {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        expected["grad." + pname] = p.grad.detach().contiguous()
    save_file(expected, os.path.join(out_dir, "expected.safetensors"))
    print(f"{name}: loss {out.loss.item():.6f}, {len(expected) - 2} gradients, torch {torch.__version__}",
          file=sys.stderr)


if __name__ == "__main__":
    make("hf_tiny_cls", 3, 1234)
    make("hf_tiny_reg", 1, 4321)
