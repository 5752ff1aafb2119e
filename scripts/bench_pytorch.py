#!/usr/bin/env python3
"""PyTorch on the workloads of `artculture bench`, same shapes and threads, for side-by-side
figures in BENCHMARKS.md (one JSON line per workload, each in its own process for peak memory).

    python3 -m venv ~/torchvenv && ~/torchvenv/bin/pip install torch torchvision pillow
    ~/torchvenv/bin/python scripts/bench_pytorch.py [WORKLOAD ...] [--reps N] [--threads 2]
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


def run_one(name, reps):
    import torch

    v = {"workload": name}
    if name in ("forward1", "forward16"):
        n = 1 if name == "forward1" else 16
        m = culture_model().eval()
        x = torch.randn(n, 3, 224, 224)
        with torch.inference_mode():
            s = timed(reps, lambda: m(x))
        v.update(seconds=s, images_per_s=n / s)
    elif name == "train16":
        m = culture_model().train()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        x, y = torch.randn(16, 3, 224, 224), torch.arange(16) % 11

        def step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()

        s = timed(reps, step)
        v.update(seconds=s, images_per_s=16 / s)
    elif name == "train16_forward":
        # The forward half of a training step: graph recorded, no backward.
        m = culture_model().train()
        x, y = torch.randn(16, 3, 224, 224), torch.arange(16) % 11
        s = timed(reps, lambda: torch.nn.functional.cross_entropy(m(x), y))
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
    ap.add_argument("--child", action="store_true")
    a = ap.parse_args()
    global ARCH
    ARCH = a.arch
    names = a.only or WORKLOADS
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        for n in names:
            v = run_one(n, a.reps)
            v["isa"] = torch.backends.cpu.get_cpu_capability()
            v["arch"] = ARCH
            print(json.dumps(v), flush=True)
        return
    for n in names:
        out = subprocess.run([sys.executable, __file__, "--child", "--reps", str(a.reps), "--threads", str(a.threads), "--arch", a.arch, n], capture_output=True, text=True)
        sys.stdout.write(out.stdout if out.returncode == 0 else f'{{"workload": "{n}", "error": {json.dumps(out.stderr[-500:])}}}\n')


if __name__ == "__main__":
    main()
