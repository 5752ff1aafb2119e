#!/usr/bin/env python3
"""CLIP ViT-B/32 image embedding, 1,000 images at 224 px in batches of 16: artculture against
Hugging Face `transformers` (PyTorch fp32), interleaved, each run in its own process (so its
peak memory is its own), medians of --rounds rounds. Both use ViT-B/32's shapes with seeded
weights (the same arithmetic as the published weights; nothing is downloaded).

    python scripts/bench_clip.py --bin target/release/artculture [--rounds 3] [--threads 2]
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


def peer(n: int, threads: int) -> dict:
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=512)).eval()
    x = torch.randn(16, 3, 224, 224)
    with torch.inference_mode():
        model(pixel_values=x[:2])
        t = time.perf_counter()
        done = 0
        while done < n:
            b = min(16, n - done)
            model(pixel_values=x[:b]).image_embeds
            done += b
        secs = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"images": n, "seconds": secs, "images_per_second": n / secs, "peak_rss_mib": rss,
            "torch": torch.__version__}


def cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags"))
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
        return f"{model} ({', '.join(isa)})"
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/artculture")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.peer:
        print(json.dumps(peer(a.images, a.threads)))
        return
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    ours, theirs = [], []
    for r in range(a.rounds):
        out = subprocess.run([a.bin, "bench", "clip_embed", "--child", "--clip-images", str(a.images)],
                             capture_output=True, text=True, env=env, check=True)
        line = json.loads(out.stdout.strip().splitlines()[-1])
        ours.append({**line["clip"], "peak_rss_mib": line["peak_rss_mib"]})
        out = subprocess.run([sys.executable, __file__, "--peer", "--images", str(a.images), "--threads", str(a.threads)],
                             capture_output=True, text=True, check=True)
        theirs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"round {r + 1}: artculture {ours[-1]['seconds']:.1f} s, transformers {theirs[-1]['seconds']:.1f} s", file=sys.stderr)
    med = lambda rows, k: statistics.median(x[k] for x in rows)
    print(json.dumps({
        "cpu": cpu(), "threads": a.threads, "images": a.images, "rounds": a.rounds,
        "artculture": {"seconds": med(ours, "seconds"), "peak_rss_mib": med(ours, "peak_rss_mib")},
        "transformers": {"seconds": med(theirs, "seconds"), "peak_rss_mib": med(theirs, "peak_rss_mib"),
                         "torch": theirs[0]["torch"]},
        "time_ratio": med(ours, "seconds") / med(theirs, "seconds"),
        "memory_ratio": med(ours, "peak_rss_mib") / med(theirs, "peak_rss_mib"),
    }, indent=1))


if __name__ == "__main__":
    main()
