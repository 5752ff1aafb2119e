#!/usr/bin/env python3
"""ONNX Runtime's own per-node profile of the ResNet-50 culture model in evaluation, to set beside
`artculture bench eval_layers` (our convolutions one at a time): which layers a gap between the two
comes from. The model is the one `bench_pytorch.py --mode ort` times (exported once by it), the
session set up the same way (all graph optimisations, `--threads` intra-op threads), with
`enable_profiling` on; the first `--warmup` runs are left out of the figures.

    ~/torchvenv/bin/python scripts/ort_profile.py [--batch 1] [--threads 2] [--runs 12]

Prints each node's mean kernel time per run (microseconds), largest first, and the totals by
operator. Profiling adds a few per cent to every node.
"""
import argparse
import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_pytorch  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--arch", default="resnet50", choices=["alexnet", "resnet50", "vgg16_bn"])
    a = ap.parse_args()
    bench_pytorch.ARCH = a.arch
    model = bench_pytorch.onnx_file()

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(os.path.dirname(model), f"ort-profile-b{a.batch}")
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((a.batch, 3, 224, 224), dtype=np.float32)
    for _ in range(a.warmup + a.runs):
        sess.run(None, {"x": x})
    trace = sess.end_profiling()
    with open(trace) as f:
        events = json.load(f)
    os.remove(trace)

    # Each run's node events in order; the warm-up runs are the first `warmup` of each node's.
    per_node = collections.defaultdict(list)
    op = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"])
            op[e["name"]] = e["args"].get("op_name", "?")
    mean = {n: sum(d[a.warmup:]) / max(1, len(d) - a.warmup) for n, d in per_node.items()}
    by_op = collections.defaultdict(float)
    for n, us in mean.items():
        by_op[op[n]] += us
    print(f"ONNX Runtime {ort.__version__}, {a.arch}, batch {a.batch}, {a.threads} threads, "
          f"mean of {a.runs} runs: {sum(mean.values()) / 1e3:.1f} ms in kernels")
    for o, us in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"  {o:>20} {us / 1e3:8.2f} ms")
    for n, us in sorted(mean.items(), key=lambda kv: -kv[1]):
        print(f"{us / 1e3:8.3f} ms  {op[n]:>10}  {n.removesuffix('_kernel_time')}")


if __name__ == "__main__":
    main()
