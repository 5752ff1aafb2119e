#!/usr/bin/env python3
"""Makes tests/fixtures/schedules.json: learning-rate sequences from torch.optim.lr_scheduler and
parameter trajectories from torch.optim.SGD, for tests/optim.rs. Run from the repo root with
PyTorch in a venv (see scripts/make_parity_fixtures.py)."""
import json
import math

import torch


def lr_sequence(make_sched, metrics, base_lr=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make_sched(opt)
    out = []
    for m in metrics:
        opt.step()
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(m)
        else:
            sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def main():
    noisy = [1.0 / (1 + 0.1 * i) + 0.05 * math.sin(i * 1.7) for i in range(40)]
    flat = [1.0] * 12 + [0.5] + [0.5] * 20
    rising = [0.1 * i + 0.03 * math.cos(i) for i in range(30)]
    cases = []
    for step, gamma in [(7, 0.1), (3, 0.5), (1, 0.9)]:
        cases.append({
            "kind": "step", "step_size": step, "gamma": gamma, "base_lr": 0.1, "metrics": noisy,
            "lrs": lr_sequence(lambda o: torch.optim.lr_scheduler.StepLR(o, step, gamma), noisy),
        })
    for mode, metrics, kw in [
        ("min", noisy, dict(factor=0.5, patience=2, threshold=1e-2, threshold_mode="rel", cooldown=1, min_lr=1e-3)),
        ("min", flat, dict(factor=0.1, patience=10)),
        ("max", rising, dict(factor=0.3, patience=0, threshold=0.05, threshold_mode="abs", cooldown=2)),
        ("min", noisy, dict(factor=0.1, patience=3, min_lr=0.0005, eps=1e-3)),
    ]:
        full = dict(factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8)
        full.update(kw)
        cases.append({
            "kind": "plateau", "mode": mode, **full, "base_lr": 0.1, "metrics": metrics,
            "lrs": lr_sequence(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode=mode, **full), metrics),
        })

    sgd = []
    for cfg in [
        dict(lr=0.1, momentum=0.0, weight_decay=0.0, nesterov=False, dampening=0.0),
        dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=False, dampening=0.0),
        dict(lr=0.05, momentum=0.9, weight_decay=1e-3, nesterov=True, dampening=0.0),
        dict(lr=0.02, momentum=0.5, weight_decay=0.0, nesterov=False, dampening=0.3),
    ]:
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64))
        opt = torch.optim.SGD([w], **cfg)
        traj = []
        for _ in range(6):
            opt.zero_grad()
            loss = (w ** 4).sum() + (w[0] * w[1])
            loss.backward()
            opt.step()
            traj.append(w.detach().tolist())
        sgd.append({**cfg, "start": [1.0, -2.0, 0.5, 3.0], "trajectory": traj})

    with open("tests/fixtures/schedules.json", "w") as f:
        json.dump({"torch": torch.__version__, "schedulers": cases, "sgd": sgd}, f, indent=1)
    print("wrote tests/fixtures/schedules.json")


if __name__ == "__main__":
    main()
