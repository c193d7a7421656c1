#!/usr/bin/env python3
"""Makes the Hugging Face parity fixture for question answering in tests/fixtures/hf_tiny_qa/.

A tiny random BertForQuestionAnswering (2 layers, hidden 64, 4 heads; qa_outputs over every token)
saved as an HF model directory (config.json + model.safetensors, f32 weights), a mixed-length batch
of question/context pairs with start and end positions (inputs.json), and what transformers computes
for it in eval mode (dropout off), in float64: start and end logits of every real token (packed, no
padding, "logits" [tokens, 2]), the loss ((start CE + end CE) / 2, BertForQuestionAnswering's code
on the logits with the padding masked to -inf: see below) and the gradient of every parameter
(expected.safetensors, F64, "grad.<parameter name>").

Positions include one below 0 (HF clamps it to 0, [CLS]) and one at the padded length (HF's
ignored_index: that sequence's start or end does not count), so both of BertForQuestionAnswering's
rules are exercised. tests/test_hf_parity.cpp runs the same packed batch on the engine's CPU backend.

Usage (needs torch, transformers and safetensors):  python tools/make_hf_qa_fixture.py
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForQuestionAnswering

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (length, context starts at, start position, end position) per sequence; lengths include [CLS]/[SEP].
MAX_LEN = 14
BATCH = [(9, 4, 5, 7), (3, 2, 0, 0), (14, 6, 8, 13), (6, 3, -1, 4), (11, 5, 6, MAX_LEN), (1, 1, 0, 0)]


def main():
    torch.manual_seed(2026)
    config = BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=32, type_vocab_size=2, num_labels=2,
                        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, attn_implementation="eager")
    model = BertForQuestionAnswering(config)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "LayerNorm.weight" in pname:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    out_dir = os.path.join(ROOT, "tests", "fixtures", "hf_tiny_qa")
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)

    ids, types, mask, seqs = [], [], [], []
    for length, second, start, end in BATCH:
        seq = ([2] + torch.randint(5, 99, (length,)).tolist())[:length]
        tt = [0 if i < second else 1 for i in range(length)]
        seqs.append({"ids": seq, "type_ids": tt, "start": start, "end": end})
        ids.append(seq + [0] * (MAX_LEN - length))
        types.append(tt + [0] * (MAX_LEN - length))
        mask.append([1] * length + [0] * (MAX_LEN - length))
    with open(os.path.join(out_dir, "inputs.json"), "w") as f:
        json.dump({"sequences": seqs}, f, indent=1)

    model = model.double().eval()
    out = model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types), attention_mask=torch.tensor(mask))
    # BertForQuestionAnswering's loss, step for step, on logits whose padding is -inf: in a padded
    # batch HF's softmax also runs over the pad tokens' logits (it does not mask them), which a
    # packed batch has none of. Masked, the padded batch is the packed one.
    pad = torch.tensor(mask) == 0
    start_logits = out.start_logits.masked_fill(pad, float("-inf"))
    end_logits = out.end_logits.masked_fill(pad, float("-inf"))
    ignored_index = start_logits.size(1)
    start_positions = torch.tensor([s["start"] for s in seqs]).clamp(0, ignored_index)
    end_positions = torch.tensor([s["end"] for s in seqs]).clamp(0, ignored_index)
    loss_fct = torch.nn.CrossEntropyLoss(ignore_index=ignored_index)
    loss = (loss_fct(start_logits, start_positions) + loss_fct(end_logits, end_positions)) / 2
    loss.backward()
    rows = [torch.stack([out.start_logits[b, :n], out.end_logits[b, :n]], 1) for b, (n, _, _, _) in enumerate(BATCH)]
    expected = {"logits": torch.cat(rows).detach().contiguous(), "loss": loss.detach().reshape(1)}
    for pname, p in model.named_parameters():
        expected["grad." + pname] = p.grad.detach().contiguous()
    save_file(expected, os.path.join(out_dir, "expected.safetensors"))
    print(f"hf_tiny_qa: loss {loss.item():.6f}, {len(expected) - 2} gradients, torch {torch.__version__}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
