"""Entropy-constrained weight sharing (``--share-rate``) against plain k-means: the same checkpoint
compressed with the same fixed knobs once per rate, each file's bytes (and its codes' bytes), ratio and
the decoded file's test accuracy.

Usage: python benchmarks/share_rate.py CHECKPOINT [--rates 0,0.01,0.02,0.04] [--knobs "..."]
writes benchmarks/results/share_rate_NAME.json and prints the table."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from slimzip.codec import decode_model, model_table
from slimzip.container import read_container
from slimzip.inspection import inspect_container
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
KNOBS = ("--channel-ratio 0.675 --channel-scope sensitivity --sparsity 0.956 --bits-conv 4 --bits-fc 4 "
         "--raw-dtype uint8")  # the first command's winner on its checkpoint (README), held fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--rates", default="0,0.01,0.02,0.04")
    parser.add_argument("--knobs", default=KNOBS, help="the fixed knobs, as compress options")
    parser.add_argument("--out", default="runs/share_rate")
    args = parser.parse_args()
    name = Path(args.checkpoint).name
    rows = [_run(args, float(rate), ROOT / args.out / f"{name}-rate{rate}.slz") for rate in args.rates.split(",")]
    print(f"{'share rate':>10} {'file B':>7} {'codes B':>7} {'ratio':>7} {'test':>7} {'seconds':>7}")
    for r in rows:
        print(f"{r['share_rate']:>10g} {r['file_bytes']:>7,} {r['codes_bytes']:>7,} {r['compression_ratio']:>7.1f} "
              f"{100 * r['test_accuracy']:>6.2f}% {r['cost']['wall_seconds']:>7.0f}")
    path = ROOT / "benchmarks" / "results" / f"share_rate_{name}.json"
    path.write_text(json.dumps({"machine": {"cpu": cpu_name()}, "checkpoint": args.checkpoint, "knobs": args.knobs,
                                "command": "python benchmarks/share_rate.py " + " ".join(sys.argv[1:]),
                                "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


def _run(args, rate: float, out: Path) -> dict:
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "slimzip", "compress", args.checkpoint, *args.knobs.split(),
                           "--share-rate", str(rate), "--out", str(out), "--json", "--quiet"],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(done.stdout)
    container = read_container(out)
    parts = inspect_container(container, model_table(container, decode_model(container)))["components"]
    return {"model": result.get("model"), "share_rate": rate, "file": str(out), "file_bytes": result["file_bytes"],
            "codes_bytes": parts["codes"], "compression_ratio": result["compression_ratio"],
            "test_accuracy": result["test_accuracy"], "val_accuracy": result.get("val_accuracy"),
            "cost": {"wall_seconds": round(time.perf_counter() - t0, 1)}}


if __name__ == "__main__":
    main()
