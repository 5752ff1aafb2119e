#!/usr/bin/env python3
"""Makes the PyTorch parity fixtures in tests/fixtures/parity/ (run from the repo root).

    python3 -m venv ~/torchvenv && ~/torchvenv/bin/pip install torch torchvision
    ~/torchvenv/bin/python scripts/make_parity_fixtures.py
    ~/torchvenv/bin/python scripts/make_parity_fixtures.py --gradcam   # tests/fixtures/parity/gradcam.json

Weights and inputs are not stored: both sides generate them from the same formula
(`det_values` here, `det_values` in tests/common/mod.rs): a splitmix64 stream seeded by the
FNV-1a hash of the tensor's name. The fixtures hold PyTorch's outputs only, as summaries
small enough to commit: logits in full, feature maps and batch-norm statistics as sums,
norms, a projection on a deterministic vector and their first values, and for every
parameter its gradient's sum, norm and projection, computed in float64.
"""
import json
import math
import sys

import numpy as np
import torch
import torchvision

MASK = (1 << 64) - 1


def fnv1a(name: str) -> int:
    h = 0xCBF29CE484222325
    for b in name.encode():
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def det_values(name: str, n: int) -> np.ndarray:
    """n float64 values in [-1, 1): splitmix64(fnv1a(name) + i)."""
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a(name)) + np.arange(n, dtype=np.uint64)
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53) * 2.0 - 1.0


def det_tensor(name: str, shape) -> np.ndarray:
    """The deterministic value of a parameter or buffer, scaled by its role."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = det_values(name, n).reshape(shape)
    if name.endswith("running_var"):
        return 0.75 + 0.5 * np.abs(u)
    if name.endswith("running_mean"):
        return 0.1 * u
    if len(shape) >= 2:
        fan_in = n // shape[0]
        return u * math.sqrt(6.0 / fan_in)
    if name.endswith("bias"):
        return 0.05 * u
    return 1.0 + 0.1 * u  # batch-norm weight


def build(arch: str):
    if arch == "resnet50":
        return torchvision.models.resnet50(), (2, 3, 64, 64)
    if arch == "vgg16_bn":
        return torchvision.models.vgg16_bn(dropout=0.0), (2, 3, 32, 32)
    if arch == "alexnet":
        return torchvision.models.alexnet(dropout=0.0), (2, 3, 63, 63)
    raise SystemExit(f"unknown arch {arch}")


def features_of(model, arch, x):
    if arch == "resnet50":
        m = model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return model.features(x)


def summary(t: torch.Tensor, proj_name: str) -> dict:
    v = t.detach().double().flatten().numpy()
    p = det_values(proj_name, v.size)
    return {
        "shape": list(t.shape),
        "sum": float(v.sum()),
        "norm": float(np.sqrt((v * v).sum())),
        "proj": float((v * p).sum()),
        "head": [float(a) for a in v[:16]],
    }


def deterministic_model(arch: str, dtype):
    model, in_shape = build(arch)
    model = model.to(dtype)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                v.copy_(torch.from_numpy(det_tensor(k, tuple(v.shape))))
    return model, in_shape


def fixture(arch: str) -> dict:
    torch.set_num_threads(2)
    model, in_shape = deterministic_model(arch, torch.float32)
    x64 = torch.from_numpy(det_values("input", int(np.prod(in_shape))).reshape(in_shape))
    out = {"arch": arch, "input_shape": list(in_shape), "torch": torch.__version__}

    # Evaluation mode, float32.
    m32 = model.eval()
    with torch.no_grad():
        x = x64.float()
        out["eval_logits"] = [float(a) for a in m32(x).flatten()]
        out["eval_features"] = summary(features_of(m32, arch, x), "proj.features")

    # Training mode, float32: outputs and the running statistics after one forward.
    m32, _ = deterministic_model(arch, torch.float32)
    m32.train()
    with torch.no_grad():
        out["train_logits"] = [float(a) for a in m32(x64.float()).flatten()]
    out["running_stats"] = {
        k: summary(v, "proj." + k)
        for k, v in m32.state_dict().items()
        if k.endswith("running_mean") or k.endswith("running_var")
    }

    # Gradients in float64, training mode, from a fresh copy of the weights.
    m64, _ = deterministic_model(arch, torch.float64)
    m64.train()
    logits = m64(x64)
    r = torch.from_numpy(det_values("loss", logits.numel()).reshape(logits.shape))
    loss = (logits * r).sum()
    loss.backward()
    out["loss64"] = float(loss)
    out["grads64"] = {k: summary(p.grad, "proj." + k) for k, p in m64.named_parameters()}
    return out


def main():
    if "--gradcam" in sys.argv:
        return  # handled below, once gradcam_fixture is defined
    archs = sys.argv[1:] or ["resnet50", "vgg16_bn", "alexnet"]
    for arch in archs:
        f = fixture(arch)
        path = f"tests/fixtures/parity/{arch}.json"
        with open(path, "w") as fh:
            json.dump(f, fh, separators=(",", ":"))
        print(f"wrote {path}: loss64={f['loss64']:.6e}")


if __name__ == "__main__":
    main()


def gradcam_fixture():
    """Grad-CAM and the channel-sum map of a ResNet-50 with a small culture head (hidden sizes
    16 and 8, 3 classes), deterministic weights under artculture's names (`head.0` ...)."""
    torch.set_num_threads(2)
    model = torchvision.models.resnet50()
    model.fc = torch.nn.Sequential(torch.nn.Linear(2048, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model = model.double().eval()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                ours = k.replace("fc.", "head.")
                v.copy_(torch.from_numpy(det_tensor(ours, tuple(v.shape))))
    shape = (1, 3, 64, 64)
    x = torch.from_numpy(det_values("input", int(np.prod(shape))).reshape(shape))
    feats = features_of(model, "resnet50", x).detach().requires_grad_(True)
    logits = model.fc(torch.flatten(model.avgpool(feats), 1))
    out = {"input_shape": list(shape), "hidden": [16, 8], "classes": 3, "logits": logits[0].tolist()}

    def norm(m):
        m = m.flatten()
        lo, hi = m.min(), m.max()
        return ((m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)).tolist()

    out["sum"] = norm(feats.detach().sum(1)[0])
    out["gradcam"] = []
    for c in range(3):
        g, = torch.autograd.grad(logits[0, c], feats, retain_graph=True)
        w = g.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((w * feats).sum(1))[0].detach()
        out["gradcam"].append({"class": c, "raw": cam.flatten().tolist(), "normalised": norm(cam)})
    with open("tests/fixtures/parity/gradcam.json", "w") as f:
        json.dump(out, f)
    print("wrote tests/fixtures/parity/gradcam.json")


if __name__ == "__main__" and "--gradcam" in sys.argv:
    gradcam_fixture()
