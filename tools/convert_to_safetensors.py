#!/usr/bin/env python3
"""Converts a PyTorch pickle checkpoint (pytorch_model.bin) to model.safetensors.

The engine never unpickles anything: a pickle can run code. This script does, with PyTorch's
weights_only loader, in your Python environment, once.

Usage: python3 tools/convert_to_safetensors.py pytorch_model.bin model.safetensors
Needs torch and safetensors (pip install torch safetensors).
"""
import sys

import torch
from safetensors.torch import save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, sys.argv[2], metadata={"format": "pt"})
    print(f"wrote {len(tensors)} tensors to {sys.argv[2]}", file=sys.stderr)


if __name__ == "__main__":
    main()
