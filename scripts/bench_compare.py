#!/usr/bin/env python3
"""artculture against PyTorch on the same model workloads, interleaved: each round runs every
workload once in artculture and once in PyTorch (each in its own process), and the table gives
the median over rounds of each side's per-run median, with the ratio. Paste it into
BENCHMARKS.md.

    cargo build --release
    ~/torchvenv/bin/python scripts/bench_compare.py --rounds 3 --reps 3 [WORKLOAD ...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

WORKLOADS = ["forward1", "forward16", "train16", "train16_forward", "transfer_epoch", "pipeline"]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def one(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workloads", nargs="*", help=f"some of {WORKLOADS} (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "artculture"))
    ap.add_argument("--arch", default="resnet50", choices=["resnet50", "vgg16_bn", "alexnet"],
                    help="the model of the model workloads, with the culture head on both sides")
    a = ap.parse_args()
    a.workloads = a.workloads or WORKLOADS
    unknown = [w for w in a.workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose from {WORKLOADS}")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    results = {w: {"ours": [], "torch": []} for w in a.workloads}
    for r in range(a.rounds):
        for w in a.workloads:
            ours = [a.binary, "bench", "--child", w, "--reps", str(a.reps), "--arch", a.arch]
            torch = [sys.executable, os.path.join(HERE, "bench_pytorch.py"), "--child", w, "--reps", str(a.reps),
                     "--threads", str(a.threads), "--arch", a.arch]
            for side, cmd in (("ours", ours), ("torch", torch)) if r % 2 == 0 else (("torch", torch), ("ours", ours)):
                v = one(cmd, env)
                results[w][side].append(v)
                print(f"round {r + 1} {w} {side}: {v['seconds']:.4f} s, {v['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    first = next(iter(results.values()))
    ours0, torch0 = first["ours"][0], first["torch"][0]
    print(f"CPU: {ours0.get('cpu', '?')}; artculture kernels: {ours0.get('isa', '?')}, gemm {ours0.get('gemm', '?')}; "
          f"PyTorch {torch0.get('isa', '?')}; {a.threads} threads; model {a.arch}")
    print()
    print("| workload | artculture | PyTorch | artculture / PyTorch (time) | peak memory, ours / PyTorch |")
    print("|---|---|---|---|---|")
    for w, sides in results.items():
        t = {s: statistics.median(v["seconds"] for v in runs) for s, runs in sides.items()}
        m = {s: statistics.median(v["peak_rss_mib"] for v in runs) for s, runs in sides.items()}
        fmt = lambda s: f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"
        print(f"| {w} | {fmt(t['ours'])} | {fmt(t['torch'])} | {t['ours'] / t['torch']:.2f}x | "
              f"{m['ours']:,.0f} / {m['torch']:,.0f} MiB ({m['ours'] / m['torch']:.2f}x) |")


if __name__ == "__main__":
    main()
