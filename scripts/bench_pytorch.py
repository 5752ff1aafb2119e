#!/usr/bin/env python3
"""PyTorch (and ONNX Runtime) on the workloads of `artculture bench`, same shapes and threads, for
side-by-side figures in BENCHMARKS.md (one JSON line per workload, each in its own process for
peak memory). `--mode` picks the peer at one of its best settings:
  fp32   PyTorch's default;
  bf16   PyTorch's CPU autocast, `torch.autocast("cpu", dtype=torch.bfloat16)` around the forward
         and the loss (convolutions and linear layers in bf16, f32 master weights): the one switch
         a speed-minded PyTorch user flips;
  fp32_cl, bf16_cl
         the same with the model and its input in channels-last memory format
         (`.to(memory_format=torch.channels_last)`), which PyTorch's CPU performance guide
         recommends: oneDNN's convolutions run NHWC without reordering each tensor (on a 2-core
         AVX512-BF16 EPYC, 2026-12-06: training step 1.34 against 1.51-1.83 s in bf16, 2.69
         against 3.75 s in fp32; but fp32 at batch 1 slower, 70-74 against 61-69 ms);
  ort    ONNX Runtime (evaluation only: forward1, forward16) on the model exported by
         `torch.onnx.export`, all graph optimisations on; the timed process imports no torch.

    python3 -m venv ~/torchvenv && ~/torchvenv/bin/pip install torch torchvision pillow onnx onnxruntime
    ~/torchvenv/bin/python scripts/bench_pytorch.py [WORKLOAD ...] [--reps N] [--threads 2] [--mode fp32|bf16|fp32_cl|bf16_cl|ort]
"""
import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import time

WORKLOADS = ["forward1", "forward16", "train16", "train16_forward", "transfer_epoch", "pipeline"]


def timed(reps, f):
    f()
    t = []
    for _ in range(max(1, reps)):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return statistics.median(t)


ARCH = "resnet50"
EMBED = {"resnet50": 2048, "vgg16_bn": 4096, "alexnet": 4096}


def culture_head(embed):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(embed, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256), torch.nn.ReLU(), torch.nn.Linear(256, 11))


def culture_model():
    """torchvision's model with its last layer replaced by the culture head, as artculture builds it."""
    import torchvision

    m = getattr(torchvision.models, ARCH)()
    if ARCH == "resnet50":
        m.fc = culture_head(2048)
    else:
        m.classifier[6] = culture_head(4096)
    return m


MODE = "fp32"
# Evaluation workloads ONNX Runtime runs; the others are training.
ORT_WORKLOADS = ["forward1", "forward16"]


def autocast():
    """The bf16 autocast context for MODE bf16, a no-op context otherwise."""
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if MODE.startswith("bf16") else contextlib.nullcontext()


def laid_out(*tensors_or_modules):
    """The model and its input in channels-last memory format for the `_cl` modes, as they are
    otherwise."""
    import torch

    if not MODE.endswith("_cl"):
        return tensors_or_modules
    return tuple(t.to(memory_format=torch.channels_last) for t in tensors_or_modules)


def onnx_file():
    """The culture model exported to ONNX once per architecture (dynamic batch), in a process of
    its own so the timed one never imports torch."""
    import os
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"artculture-bench-{ARCH}.onnx")
    if not os.path.exists(path):
        code = (
            "import sys, torch; sys.path.insert(0, %r); import bench_pytorch as b; b.ARCH = %r; "
            "m = b.culture_model().eval(); "
            "torch.onnx.export(m, torch.randn(1, 3, 224, 224), %r, input_names=['x'], output_names=['logits'], "
            "dynamic_axes={'x': {0: 'n'}, 'logits': {0: 'n'}}, opset_version=17, dynamo=False)"
        ) % (os.path.dirname(os.path.abspath(__file__)), ARCH, path + ".tmp")
        subprocess.run([sys.executable, "-c", code], check=True)
        os.replace(path + ".tmp", path)
    return path


def run_ort(name, reps, threads):
    import numpy as np
    import onnxruntime as ort

    n = 1 if name == "forward1" else 16
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_file(), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((n, 3, 224, 224), dtype=np.float32)
    s = timed(reps, lambda: sess.run(None, {"x": x}))
    return {"workload": name, "seconds": s, "images_per_s": n / s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "onnxruntime": ort.__version__, "isa": "mlas", "arch": ARCH, "mode": "ort"}


def run_one(name, reps):
    import torch

    v = {"workload": name}
    if name in ("forward1", "forward16"):
        n = 1 if name == "forward1" else 16
        m, x = laid_out(culture_model().eval(), torch.randn(n, 3, 224, 224))
        with torch.inference_mode(), autocast():
            s = timed(reps, lambda: m(x))
        v.update(seconds=s, images_per_s=n / s)
    elif name == "train16":
        m, x = laid_out(culture_model().train(), torch.randn(16, 3, 224, 224))
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        y = torch.arange(16) % 11

        def step():
            opt.zero_grad()
            with autocast():
                loss = torch.nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()

        s = timed(reps, step)
        v.update(seconds=s, images_per_s=16 / s)
    elif name == "train16_forward":
        # The forward half of a training step: graph recorded, no backward.
        m, x = laid_out(culture_model().train(), torch.randn(16, 3, 224, 224))
        y = torch.arange(16) % 11
        def forward():
            with autocast():
                return torch.nn.functional.cross_entropy(m(x), y)

        s = timed(reps, forward)
        v.update(seconds=s, images_per_s=16 / s)
    elif name == "transfer_epoch":
        head = culture_head(EMBED[ARCH])
        opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        emb, labels = torch.randn(5300, EMBED[ARCH]), torch.arange(5300) % 11

        def epoch():
            for lo in range(0, 5300, 16):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(head(emb[lo:lo + 16]), labels[lo:lo + 16]).backward()
                opt.step()

        s = timed(reps, epoch)
        v.update(seconds=s, images_per_s=5300 / s)
    elif name == "pipeline":
        import numpy as np
        from PIL import Image
        from torchvision import transforms

        rng = np.random.default_rng(0)
        blobs = []
        for _ in range(64):
            b = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (256, 340, 3), dtype=np.uint8)).save(b, "JPEG", quality=90)
            blobs.append(b.getvalue())
        t = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

        def run():
            for i in range(0, 64, 16):
                torch.stack([t(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs[i:i + 16]])

        s = timed(reps, run)
        v.update(seconds=s, images_per_s=64 / s)
    v["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    v["torch"] = torch.__version__
    return v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("only", nargs="*", choices=WORKLOADS + [[]], default=[])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", choices=sorted(EMBED), default="resnet50")
    ap.add_argument("--mode", choices=["fp32", "bf16", "fp32_cl", "bf16_cl", "ort"], default="fp32")
    ap.add_argument("--child", action="store_true")
    a = ap.parse_args()
    global ARCH, MODE
    ARCH, MODE = a.arch, a.mode
    names = a.only or WORKLOADS
    if a.child and MODE == "ort":
        for n in names:
            if n not in ORT_WORKLOADS:
                sys.exit(f"ONNX Runtime runs only {ORT_WORKLOADS}, not {n}")
            print(json.dumps(run_ort(n, a.reps, a.threads)), flush=True)
        return
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        for n in names:
            v = run_one(n, a.reps)
            v["isa"] = torch.backends.cpu.get_cpu_capability()
            v["arch"], v["mode"] = ARCH, MODE
            print(json.dumps(v), flush=True)
        return
    for n in names:
        out = subprocess.run([sys.executable, __file__, "--child", "--reps", str(a.reps), "--threads", str(a.threads), "--arch", a.arch, "--mode", a.mode, n], capture_output=True, text=True)
        sys.stdout.write(out.stdout if out.returncode == 0 else f'{{"workload": "{n}", "error": {json.dumps(out.stderr[-500:])}}}\n')


if __name__ == "__main__":
    main()
