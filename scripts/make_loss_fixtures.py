#!/usr/bin/env python3
"""Makes tests/fixtures/val_loss.json: validation splits (f32 logits and labels) with the loss
PyTorch reports for them, `F.cross_entropy(logits, labels)` (mean over the split), for
tests/optim.rs. Includes saturated models that are confidently wrong, where a loss computed
from clamped probabilities would stop at -ln(1e-12). Run from the repo root with PyTorch in a
venv (see scripts/make_parity_fixtures.py)."""
import json

import torch
import torch.nn.functional as F


def case(name, logits, labels):
    logits = torch.tensor(logits, dtype=torch.float32)
    labels = torch.tensor(labels, dtype=torch.int64)
    return {
        "name": name,
        "logits": logits.tolist(),
        "labels": labels.tolist(),
        "loss": F.cross_entropy(logits, labels).item(),
        "top1": (logits.argmax(1) == labels).float().mean().item(),
    }


def main():
    g = torch.Generator().manual_seed(0)
    cases = []
    rnd = torch.randn(40, 11, generator=g) * 3
    cases.append(case("random 11 classes", rnd.tolist(), torch.randint(0, 11, (40,), generator=g).tolist()))
    # 12 images, wrong on 8 with a saturated softmax (the example), by margins 30..100.
    sat, labels = [], []
    for i in range(12):
        row = [0.0] * 3
        pred = i % 3
        row[pred] = 30.0 + 7.0 * i
        sat.append(row)
        labels.append(pred if i < 4 else (pred + 1) % 3)
    cases.append(case("saturated, wrong on 8 of 12", sat, labels))
    cases.append(case("huge logits", [[1000.0, -1000.0, 0.0], [-500.0, 500.0, 499.0]], [2, 2]))
    with open("tests/fixtures/val_loss.json", "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
