#!/usr/bin/env python3
"""Cross-checks the engine's safetensors reader and writer against Hugging Face `safetensors`.

  make-fixtures [DIR]   writes small files made by safetensors.torch.save_file, with a JSON of the
                        exact values next to each, for tests/test_safetensors.cpp to read
                        (default DIR: tests/fixtures/safetensors next to this script's repo).
  verify FILE JSON      loads FILE (e.g. one the engine wrote) with safetensors and checks dtype,
                        shape, metadata and every value against JSON, written in the same format.

JSON format: {"metadata": {str: str}, "tensors": {name: {"dtype": "F32", "shape": [..],
"values": [flat list, row-major]}}}. Float values are the exact stored values (bf16/f16 widened
to float64, which is exact), so comparisons are equalities, not tolerances.
Needs torch and safetensors (e.g. /work/venv-hf/bin/python); never needed at test time.
"""
import json
import math
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

TORCH_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
NAME_OF = {v: k for k, v in TORCH_DTYPES.items()}


def flat_values(t):
    """Row-major list of Python numbers holding the exact stored values."""
    if t.dtype.is_floating_point:
        return [float(x) for x in t.to(torch.float64).flatten().tolist()]
    if t.dtype == torch.bool:
        return [int(x) for x in t.flatten().tolist()]
    return [int(x) for x in t.flatten().tolist()]


def describe(tensors, metadata):
    return {
        "metadata": metadata,
        "tensors": {name: {"dtype": NAME_OF[t.dtype], "shape": list(t.shape), "values": flat_values(t)}
                    for name, t in tensors.items()},
    }


def random_tensor(gen, dtype, shape):
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=gen, dtype=torch.float64) * 3).to(dtype)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).to(torch.bool)
    info = torch.iinfo(dtype)
    lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
    return torch.randint(lo, hi, shape, generator=gen, dtype=torch.int64).to(dtype)


def make_fixtures(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    # Every dtype the engine reads, odd shapes, a scalar and an empty tensor.
    mixed = {
        "embeddings.word_embeddings.weight": random_tensor(gen, torch.float32, (5, 3)),
        "encoder.layer.0.attention.self.query.weight": random_tensor(gen, torch.bfloat16, (3, 3)),
        "encoder.layer.0.output.dense.bias": random_tensor(gen, torch.float16, (7,)),
        "position_ids": torch.arange(6, dtype=torch.int64).reshape(1, 6),
        "token_type_ids": random_tensor(gen, torch.int32, (2, 2)),
        "double": random_tensor(gen, torch.float64, (2, 1, 2)),
        "bytes": random_tensor(gen, torch.uint8, (3,)),
        "mask": random_tensor(gen, torch.bool, (4,)),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros((0, 4), dtype=torch.float32),
    }
    # Only the dtypes the engine writes, and one metadata key (HF orders several keys by hash), so
    # the engine's writer must reproduce this file byte for byte.
    engine_dtypes = {
        "b.weight": random_tensor(gen, torch.float32, (2, 3)),
        "a.weight": random_tensor(gen, torch.float32, (4,)),
        "ids": random_tensor(gen, torch.int32, (3,)),
        "z.half": random_tensor(gen, torch.float16, (5,)),
        "c.bf": random_tensor(gen, torch.bfloat16, (2, 2)),
        "a.bf": random_tensor(gen, torch.bfloat16, (3,)),
    }
    for stem, tensors in (("python_mixed", mixed), ("python_engine_dtypes", engine_dtypes)):
        metadata = {"format": "pt"}
        path = os.path.join(out_dir, stem + ".safetensors")
        save_file(tensors, path, metadata=metadata)
        with open(os.path.join(out_dir, stem + ".json"), "w") as f:
            json.dump(describe(tensors, metadata), f, indent=1)
            f.write("\n")
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def same_value(got, want):
    if isinstance(want, float) and math.isnan(want):
        return math.isnan(got)
    return got == want


def verify(path, json_path):
    with open(json_path) as f:
        want = json.load(f)
    problems = []
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata != want.get("metadata", {}):
            problems.append(f"metadata {metadata} != {want.get('metadata', {})}")
        names = set(f.keys())
        if names != set(want["tensors"]):
            problems.append(f"tensor names {sorted(names)} != {sorted(want['tensors'])}")
        for name in sorted(names & set(want["tensors"])):
            t, w = f.get_tensor(name), want["tensors"][name]
            if NAME_OF.get(t.dtype) != w["dtype"]:
                problems.append(f"{name}: dtype {t.dtype} != {w['dtype']}")
            if list(t.shape) != w["shape"]:
                problems.append(f"{name}: shape {list(t.shape)} != {w['shape']}")
            got = flat_values(t)
            bad = [i for i, (g, e) in enumerate(zip(got, w["values"])) if not same_value(g, e)]
            if len(got) != len(w["values"]) or bad:
                problems.append(f"{name}: {len(bad)} values differ, first at {bad[:1]}")
    for p in problems:
        print("MISMATCH", p)
    print(f"{path}: {len(want['tensors'])} tensors, {'OK' if not problems else 'FAILED'}")
    return 0 if not problems else 1


def main(argv):
    if len(argv) >= 1 and argv[0] == "make-fixtures":
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        make_fixtures(argv[1] if len(argv) > 1 else os.path.join(repo, "tests", "fixtures", "safetensors"))
        return 0
    if len(argv) == 3 and argv[0] == "verify":
        return verify(argv[1], argv[2])
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
