#!/usr/bin/env python3
"""Makes the peft (LoRA) parity fixture in tests/fixtures/peft_tiny_lora/.

The base model is the tiny random BertForSequenceClassification of tests/fixtures/hf_tiny_cls
(tools/make_hf_fixture.py). peft wraps it with LoRA adapters on every linear layer of the encoder
(r 4, alpha 8, so scale 2), as `get_peft_model(model, LoraConfig(task_type="SEQ_CLS", ...))` does;
B is then drawn at random (peft starts it at zero, which would leave A without gradient and the
adapters without effect) and A and the classifier are redrawn, all with a large spread, so every
path carries signal. peft saves the adapter directory (adapter_config.json, adapter_model.safetensors:
what the engine must load). For the batch of hf_tiny_cls/inputs.json, in eval mode (dropout off)
and float64, expected.safetensors holds the logits, the loss and the gradient of every trainable
parameter under the engine's names ("grad.bert.encoder.layer.0.attention.self.query.lora_A.weight",
"grad.classifier.weight", ...). tests/test_lora_peft.cpp loads base + adapter on the CPU backend
and compares.

Usage (needs torch, transformers, peft and safetensors):
    /work/venv-hf/bin/python tools/make_peft_fixture.py     # writes tests/fixtures/peft_tiny_lora/
"""
import json
import os
import sys

import peft
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import BertForSequenceClassification

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_cls")
OUT = os.path.join(ROOT, "tests", "fixtures", "peft_tiny_lora")
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]


def engine_name(peft_name):
    """base_model.model.X.lora_A.default.weight -> X.lora_A.weight; the classifier's copy likewise."""
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".modules_to_save.default.", ".").replace(".default.", ".")


def main():
    torch.manual_seed(2024)
    model = BertForSequenceClassification.from_pretrained(BASE, attn_implementation="eager")
    config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, lora_dropout=0.1, target_modules=TARGETS)
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(OUT)
    # The base named as the repository names it (not this machine's path); no model card.
    config_path = os.path.join(OUT, "adapter_config.json")
    with open(config_path) as f:
        saved = json.load(f)
    saved["base_model_name_or_path"] = os.path.relpath(BASE, ROOT)
    with open(config_path, "w") as f:
        json.dump(saved, f, indent=2, sort_keys=True)
    os.remove(os.path.join(OUT, "README.md"))

    with open(os.path.join(BASE, "inputs.json")) as f:
        seqs = json.load(f)["sequences"]
    max_len = max(len(s["ids"]) for s in seqs)
    pad = lambda v: v + [0] * (max_len - len(v))
    ids = torch.tensor([pad(s["ids"]) for s in seqs])
    types = torch.tensor([pad(s["type_ids"]) for s in seqs])
    mask = torch.tensor([pad([1] * len(s["ids"])) for s in seqs])
    labels = torch.tensor([s["label"] for s in seqs])

    model = model.double().eval()
    out = model(input_ids=ids, token_type_ids=types, attention_mask=mask, labels=labels)
    out.loss.backward()
    expected = {"logits": out.logits.detach().contiguous(), "loss": out.loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            expected["grad." + engine_name(name)] = p.grad.detach().contiguous()
    save_file(expected, os.path.join(OUT, "expected.safetensors"))
    print(f"peft_tiny_lora: loss {out.loss.item():.6f}, {len(expected) - 2} gradients, "
          f"peft {peft.__version__}, torch {torch.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
