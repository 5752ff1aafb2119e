#!/usr/bin/env python3
"""A whole training epoch as a user runs it, artculture against the equivalent PyTorch script,
interleaved: decode, augment, steps, validation and checkpoint writes, not only the step.

Both sides train ResNet-50 with the study's three-layer head from scratch at 224 px, batch 16,
SGD with momentum, on the same generated folder (4 cultures x 20 images of 256 px: an 80/10/10
split of 64/8/8). artculture is the `train` command on a workspace that imported the folder;
PyTorch is `torchvision.datasets.ImageFolder`, `RandomResizedCrop(224)` + flip + normalise, a
`DataLoader` with 2 workers, validation each epoch, and `torch.save` of the last (with optimiser
state) and best checkpoints, as the study's code does. An epoch's time on each side is the
difference between a 2-epoch and a 1-epoch process, so start-up, model building and the test
pass cancel out. PyTorch runs twice: as the study's script is written (NCHW), and with the model
and each batch in the channels-last memory format, PyTorch's recommended CPU setting (`torch
channels-last`; the table compares us with the faster). With `--ours-bf16`, our epoch under
`--precision bf16` joins the rotation and the ratio of our bf16 epoch to our f32 one is printed
too.

    cargo build --release
    ~/torchvenv/bin/python scripts/bench_epoch.py --rounds 2
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def torch_child(data, epochs, threads, out, channels_last=False):
    import torch
    import torchvision
    from torchvision import transforms

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_t = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])
    eval_t = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm])
    full = torchvision.datasets.ImageFolder(data)
    # 80/10/10 per class, as artculture's stratified split.
    by_class = {}
    for i, (_, c) in enumerate(full.samples):
        by_class.setdefault(c, []).append(i)
    parts = {"train": [], "val": [], "test": []}
    for idx in by_class.values():
        n = len(idx)
        nv, nt = round(n * 0.1), round(n * 0.1)
        parts["val"] += idx[:nv]
        parts["test"] += idx[nv:nv + nt]
        parts["train"] += idx[nv + nt:]
    train = torch.utils.data.Subset(torchvision.datasets.ImageFolder(data, train_t), parts["train"])
    val = torch.utils.data.Subset(torchvision.datasets.ImageFolder(data, eval_t), parts["val"])
    train_dl = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, num_workers=2)
    val_dl = torch.utils.data.DataLoader(val, batch_size=16, num_workers=2)
    m = torchvision.models.resnet50()
    m.fc = torch.nn.Sequential(torch.nn.Linear(2048, 1024), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(1024, 256),
                               torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(256, len(full.classes)))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    m = m.to(memory_format=layout)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, 7, 0.1)
    best = -1.0
    for _ in range(epochs):
        m.train()
        for x, y in train_dl:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x.to(memory_format=layout)), y).backward()
            opt.step()
        m.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_dl:
                correct += (m(x.to(memory_format=layout)).argmax(1) == y).sum().item()
        sched.step()
        acc = correct / len(val)
        torch.save({"model": m.state_dict(), "optimizer": opt.state_dict()}, os.path.join(out, "last.pt"))
        if acc > best:
            best = acc
            torch.save(m.state_dict(), os.path.join(out, "best.pt"))


def timed(cmd, env):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "artculture"))
    ap.add_argument("--ours-bf16", action="store_true",
                    help="also time our epoch under --precision bf16 (issue 25's bar: <= 0.6x of our f32 epoch)")
    ap.add_argument("--torch-child", nargs=3, metavar=("DATA", "EPOCHS", "OUT"))
    ap.add_argument("--channels-last", action="store_true", help="(with --torch-child) the model and batches channels-last")
    a = ap.parse_args()
    if a.torch_child:
        data, epochs, out = a.torch_child
        return torch_child(data, int(epochs), a.threads, out, a.channels_last)
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    tmp = tempfile.mkdtemp(prefix="bench-epoch-")
    src, ws = os.path.join(tmp, "src"), os.path.join(tmp, "ws")
    subprocess.run([a.binary, "model", "synth-folder", src, "--cultures", "4", "--per-class", "20", "--size", "256"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([a.binary, "--workspace", ws, "import", "folder", src], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    bench = json.loads(subprocess.run([a.binary, "bench", "--child", "--reps", "1", "forward1"], check=True, capture_output=True,
                                      text=True, env=env).stdout.splitlines()[-1])

    def ours(epochs, precision="f32"):
        return timed([a.binary, "--precision", precision, "--workspace", ws, "train", "--arch", "resnet50", "--method",
                      "scratch", "--epochs", str(epochs), "--batch", "16", "--image-size", "224"], env)

    def ours_bf16(epochs):
        return ours(epochs, "bf16")

    def torch(epochs, layout=()):
        return timed([sys.executable, __file__, "--threads", str(a.threads), *layout, "--torch-child", src, str(epochs), tmp], env)

    def torch_cl(epochs):
        return torch(epochs, ("--channels-last",))

    epochs = {"ours": [], "torch": [], "torch_cl": [], "ours_bf16": []}
    sides = [("ours", ours), ("torch", torch), ("torch_cl", torch_cl)] + ([("ours_bf16", ours_bf16)] if a.ours_bf16 else [])
    for r in range(a.rounds):
        # Each side first in turn: no side always runs on a machine the one before warmed.
        for name, run in sides[r % len(sides):] + sides[:r % len(sides)]:
            one, two = run(1), run(2)
            epochs[name].append(two - one)
            print(f"round {r + 1} {name}: 1 epoch {one:.1f} s, 2 epochs {two:.1f} s, epoch {two - one:.1f} s", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    o, t, tc = (statistics.median(epochs[k]) for k in ("ours", "torch", "torch_cl"))
    import torch as _torch
    print(f"CPU: {bench.get('cpu')}; artculture kernels: {bench.get('isa')}, gemm {bench.get('gemm')}; "
          f"PyTorch {_torch.__version__} {_torch.backends.cpu.get_cpu_capability()}; {a.threads} threads; {a.rounds} rounds")
    print()
    print("| workload | artculture | PyTorch | PyTorch channels-last | artculture / faster PyTorch (time) |")
    print("|---|---|---|---|---|")
    print(f"| a training epoch (64 train + 8 val images, 224 px, batch 16, checkpoints) | {o:.1f} s | {t:.1f} s | {tc:.1f} s "
          f"| {o / min(t, tc):.2f}x |")
    if a.ours_bf16:
        b = statistics.median(epochs["ours_bf16"])
        print()
        print("| workload | artculture f32 | artculture bf16 | bf16 / f32 (time) |")
        print("|---|---|---|---|")
        print(f"| a training epoch (as above) | {o:.1f} s | {b:.1f} s | {b / o:.2f}x |")


if __name__ == "__main__":
    main()
