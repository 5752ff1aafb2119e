#!/usr/bin/env python3
"""artculture against its peers at their best settings on the same model workloads, interleaved:
each round runs every workload once in artculture and once in each peer (each in its own
process, the order turning round by round), and the table gives the median over rounds of each
side's per-run median, with the ratio to the best peer. Peers (`--peers`, default all):
PyTorch fp32 and PyTorch bf16 autocast, each in its default (NCHW) and its channels-last memory
format (`_cl`, PyTorch's recommended CPU setting: faster for training and batches, slower for
fp32 at batch 1), ONNX Runtime fp32 (evaluation workloads only). The bf16 column sets ours
against the faster of autocast's two layouts. The CPU and its ISA (AVX-512, AVX512-BF16, AMX)
are named above the table. Paste it into BENCHMARKS.md.

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
    ap.add_argument("--peers", default="fp32,fp32_cl,bf16,bf16_cl,ort",
                    help="comma-separated: fp32, fp32_cl, bf16 (autocast), bf16_cl, ort")
    ap.add_argument("--ours-bf16", action="store_true",
                    help="also run artculture with --precision bf16 (a column 'artculture bf16', set against PyTorch's autocast)")
    ap.add_argument("--arch", default="resnet50", choices=["resnet50", "vgg16_bn", "alexnet"],
                    help="the model of the model workloads, with the culture head on both sides")
    a = ap.parse_args()
    a.workloads = a.workloads or WORKLOADS
    unknown = [w for w in a.workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workloads {unknown}; choose from {WORKLOADS}")
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    peers = [p for p in a.peers.split(",") if p]
    bad = [p for p in peers if p not in PEERS]
    if bad:
        ap.error(f"unknown peers {bad}; choose from {list(PEERS)}")
    ours_sides = ["ours"] + (["ours_bf16"] if a.ours_bf16 else [])
    results = {w: {side: [] for side in ours_sides + peers} for w in a.workloads}
    for r in range(a.rounds):
        for w in a.workloads:
            cmds = [("ours", [a.binary, "bench", "--child", w, "--reps", str(a.reps), "--arch", a.arch])]
            if a.ours_bf16:
                cmds.append(("ours_bf16", cmds[0][1] + ["--precision", "bf16"]))
            for p in peers:
                if p == "ort" and w not in ORT_WORKLOADS:
                    continue
                cmds.append((p, [sys.executable, os.path.join(HERE, "bench_pytorch.py"), "--child", w, "--reps",
                                 str(a.reps), "--threads", str(a.threads), "--arch", a.arch, "--mode", p]))
            # Each round starts with a different side, so no side always runs first (or last).
            k = r % len(cmds)
            for side, cmd in cmds[k:] + cmds[:k]:
                v = one(cmd, env)
                results[w][side].append(v)
                print(f"round {r + 1} {w} {side}: {v['seconds']:.4f} s, {v['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    ours0 = next(iter(results.values()))["ours"][0]
    print(f"CPU: {ours0.get('cpu', '?')} ({cpu_flags()}); artculture kernels: {ours0.get('isa', '?')}, "
          f"gemm {ours0.get('gemm', '?')}; {a.threads} threads; model {a.arch}; {versions(results)}")
    print()
    head = " | ".join(PEERS[p] for p in peers)
    bf16_head = " | artculture bf16 | bf16 ours / autocast (time, memory)" if a.ours_bf16 else ""
    print(f"| workload | artculture | {head} | ours / best peer (time) | peak memory, ours / best peer's{bf16_head} |")
    print("|---|---|" + "---|" * len(peers) + "---|---|" + ("---|---|" if a.ours_bf16 else ""))
    fmt = lambda s: f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"
    for w, sides in results.items():
        t = {s: statistics.median(v["seconds"] for v in runs) for s, runs in sides.items() if runs}
        m = {s: statistics.median(v["peak_rss_mib"] for v in runs) for s, runs in sides.items() if runs}
        cells = [fmt(t[p]) if p in t else "-" for p in peers]
        best = min((p for p in peers if p in t), key=lambda p: t[p], default=None)
        if best is None:
            print(f"| {w} | {fmt(t['ours'])} | " + " | ".join(cells) + " | - | - |")
            continue
        bf16_cells = ""
        if a.ours_bf16 and "ours_bf16" in t:
            ac = min((p for p in ("bf16", "bf16_cl") if p in t), key=lambda p: t[p], default=None)
            vs = (f"{t['ours_bf16'] / t[ac]:.2f}x ({PEERS[ac]}), {m['ours_bf16']:,.0f} / {m[ac]:,.0f} MiB "
                  f"({m['ours_bf16'] / m[ac]:.2f}x)" if ac else "-")
            bf16_cells = f" {fmt(t['ours_bf16'])} | {vs} |"
        print(f"| {w} | {fmt(t['ours'])} | " + " | ".join(cells) +
              f" | {t['ours'] / t[best]:.2f}x ({PEERS[best]}) | {m['ours']:,.0f} / {m[best]:,.0f} MiB ({m['ours'] / m[best]:.2f}x) |" + bf16_cells)


PEERS = {
    "fp32": "PyTorch fp32",
    "fp32_cl": "PyTorch fp32 channels-last",
    "bf16": "PyTorch bf16 autocast",
    "bf16_cl": "PyTorch bf16 autocast channels-last",
    "ort": "ONNX Runtime fp32",
}
ORT_WORKLOADS = ["forward1", "forward16"]


def cpu_flags():
    """The ISA extensions that decide the peers' fastest paths, as /proc/cpuinfo lists them."""
    try:
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        return "flags unknown"
    named = [f for f in ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"] if f in flags]
    return ", ".join(named) or "no AVX2"


def versions(results):
    seen = {}
    for sides in results.values():
        for runs in sides.values():
            for v in runs:
                for k in ("torch", "onnxruntime"):
                    if k in v:
                        seen[k] = v[k]
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))


if __name__ == "__main__":
    main()
