"""CPU inference latency: dense vs channel-pruned (50% of channels removed), side by side in one run.

For VGG-16 and ResNet-56 (CIFAR-10 shapes, random weights: latency does not depend on their values),
removes 50% of each prunable layer's channels by L1 norm (``scope='layer'``; ResNet-56's residual
stream included), then times eager fp32 inference at batch 1 and 64,
alternating dense and narrowed runs so that machine noise hits both alike, and reports the median
speedup next to the MACs ratio.

Usage: python benchmarks/prune_latency.py [--quick]    (writes benchmarks/results/prune_latency.json)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from slimzip.measure import measure
from slimzip.models import create_model
from slimzip.structured import ChannelPruner, apply_plan

SHAPE = (3, 32, 32)


@torch.inference_mode()
def latency(model: torch.nn.Module, batch: int) -> float:
    x = torch.randn(batch, *SHAPE)
    t0 = time.perf_counter()
    model(x)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prune_latency.json"))
    args = parser.parse_args()
    repeats = {1: 5 if args.quick else 30, 64: 2 if args.quick else 8}
    rows = []
    for name in ("vgg16", "resnet56"):
        torch.manual_seed(0)
        dense = create_model(name).eval()
        plan = ChannelPruner(importance="l1", channel_ratio=args.ratio, scope="layer").fit(dense, SHAPE).plan_
        narrow = apply_plan(copy.deepcopy(dense), plan, SHAPE).eval()
        d, n = measure(dense, SHAPE), measure(narrow, SHAPE)
        for batch, reps in repeats.items():
            for m in (dense, narrow):
                latency(m, batch)  # warm-up
            times = {"dense": [], "narrow": []}
            for _ in range(reps):
                times["dense"].append(latency(dense, batch))
                times["narrow"].append(latency(narrow, batch))
            td, tn = statistics.median(times["dense"]), statistics.median(times["narrow"])
            rows.append({"model": name, "batch": batch, "dense_ms": round(1e3 * td, 2), "narrow_ms": round(1e3 * tn, 2),
                         "speedup": round(td / tn, 2), "macs_ratio": round(d.macs / n.macs, 2),
                         "params_ratio": round(d.params / n.params, 2), "repeats": reps})
    print(f"{'model':9} {'batch':>5} {'dense ms':>9} {'narrow ms':>10} {'speedup':>8} {'MACs ratio':>11} "
          f"{'params ratio':>13}")
    for r in rows:
        print(f"{r['model']:9} {r['batch']:>5} {r['dense_ms']:>9.2f} {r['narrow_ms']:>10.2f} {r['speedup']:>7.2f}x "
              f"{r['macs_ratio']:>10.2f}x {r['params_ratio']:>12.2f}x")
    meta = {"ratio": args.ratio, "importance": "l1", "scope": "layer", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "statistic": "median of alternating runs"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
