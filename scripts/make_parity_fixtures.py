#!/usr/bin/env python3
"""Makes the PyTorch parity fixtures in tests/fixtures/parity/ (run from the repo root).

    python3 -m venv ~/torchvenv && ~/torchvenv/bin/pip install torch torchvision
    ~/torchvenv/bin/python scripts/make_parity_fixtures.py
    ~/torchvenv/bin/python scripts/make_parity_fixtures.py --gradcam   # tests/fixtures/parity/gradcam.json
    ~/torchvenv/bin/python scripts/make_parity_fixtures.py --bf16      # tests/fixtures/parity/*_bf16.json

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


def bf16_fixture(arch: str) -> dict:
    """PyTorch's CPU autocast (`torch.autocast("cpu", dtype=torch.bfloat16)`) on the f32 model:
    evaluation logits, training-mode logits, and the f32 gradients of every master weight for
    the same loss as the f64 fixture (computed in f32 from the bf16 logits, as autocast does)."""
    torch.set_num_threads(2)
    model, in_shape = deterministic_model(arch, torch.float32)
    x = torch.from_numpy(det_values("input", int(np.prod(in_shape))).reshape(in_shape)).float()
    out = {"arch": arch, "input_shape": list(in_shape), "torch": torch.__version__,
           "autocast": "torch.autocast('cpu', dtype=torch.bfloat16)"}
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    out["eval_logits"] = [float(a) for a in logits.float().flatten()]

    model, logits, loss = autocast_grads(arch, x)
    out["train_logits"] = [float(a) for a in logits.detach().float().flatten()]
    out["loss"] = float(loss)
    out["grads"] = {k: summary(p.grad, "proj." + k) for k, p in model.named_parameters()}
    # Autocast against itself: the same gradients from the input scaled by 1 +- 1e-6, which
    # flips a few of its bf16 roundings (as any change of summation order does) and through a
    # deep network moves the gradients' norms by as much as a real difference would. The
    # tests' bound for the gradients is taken from this spread, not below it.
    norms = {k: float(p.grad.double().norm()) for k, p in model.named_parameters()}
    spread = []
    for eps in (1e-6, -1e-6):
        nudged, _, _ = autocast_grads(arch, x * (1 + eps))
        d = sum((float(p.grad.double().norm()) - norms[k]) ** 2 for k, p in nudged.named_parameters())
        spread.append(math.sqrt(d / sum(v * v for v in norms.values())))
    out["grads_spread"] = {"input_scale": [1 + 1e-6, 1 - 1e-6], "norms": spread}
    return out


def autocast_grads(arch: str, x: torch.Tensor):
    """The model in training mode under autocast, its logits and the fixture's loss, with every
    master weight's f32 gradient of that loss computed."""
    model, _ = deterministic_model(arch, torch.float32)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    r = torch.from_numpy(det_values("loss", logits.numel()).reshape(logits.shape)).float()
    loss = (logits.float() * r).sum()
    loss.backward()
    return model, logits, loss


def bf16_ops_fixture() -> dict:
    """Single layers under autocast, every output value and gradient in full: a 3x3 convolution
    (no bias) + batch norm + residual add + ReLU in evaluation and in training mode, and a
    linear layer. Parameters by `det_tensor` under the names given; the residual is a bf16
    tensor, as the previous layer hands it on under autocast."""
    torch.set_num_threads(2)
    conv = torch.nn.Conv2d(8, 6, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(6)
    fc = torch.nn.Linear(40, 7)
    with torch.no_grad():
        for prefix, m in [("conv", conv), ("bn", bn), ("fc", fc)]:
            for k, v in m.state_dict().items():
                if not k.endswith("num_batches_tracked"):
                    v.copy_(torch.from_numpy(det_tensor(f"{prefix}.{k}", tuple(v.shape))))
    x = torch.from_numpy(det_values("ops.x", 2 * 8 * 9 * 9).reshape(2, 8, 9, 9)).float()
    res = torch.from_numpy(det_values("ops.residual", 2 * 6 * 9 * 9).reshape(2, 6, 9, 9)).bfloat16()
    ry = torch.from_numpy(det_values("ops.loss", 2 * 6 * 9 * 9).reshape(2, 6, 9, 9)).float()
    flat = lambda t: [float(a) for a in t.detach().float().flatten()]
    out = {"torch": torch.__version__}
    bn.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out["block_eval"] = flat(torch.relu(bn(conv(x)) + res))
    bn.train()
    xg = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.relu(bn(conv(xg)) + res)
    (y.float() * ry).sum().backward()
    out["block_train"] = flat(y)
    out["block_grads"] = {"x": flat(xg.grad), "conv.weight": flat(conv.weight.grad),
                          "bn.weight": flat(bn.weight.grad), "bn.bias": flat(bn.bias.grad)}
    xl = torch.from_numpy(det_values("ops.xl", 3 * 40).reshape(3, 40)).float().requires_grad_(True)
    rl = torch.from_numpy(det_values("ops.loss_l", 3 * 7).reshape(3, 7)).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = fc(xl)
    (z.float() * rl).sum().backward()
    out["linear"] = flat(z)
    out["linear_grads"] = {"x": flat(xl.grad), "fc.weight": flat(fc.weight.grad), "fc.bias": flat(fc.bias.grad)}
    return out


def main():
    if "--gradcam" in sys.argv:
        return  # handled below, once gradcam_fixture is defined
    if "--bf16" in sys.argv:
        for arch in [a for a in sys.argv[1:] if not a.startswith("--")] or ["resnet50", "vgg16_bn", "alexnet"]:
            path = f"tests/fixtures/parity/{arch}_bf16.json"
            with open(path, "w") as fh:
                json.dump(bf16_fixture(arch), fh, separators=(",", ":"))
            print(f"wrote {path}")
        with open("tests/fixtures/parity/bf16_ops.json", "w") as fh:
            json.dump(bf16_ops_fixture(), fh, separators=(",", ":"))
        print("wrote tests/fixtures/parity/bf16_ops.json")
        return
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
