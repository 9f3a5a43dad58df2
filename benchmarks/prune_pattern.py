"""Structure in the sparsity pattern (``--prune-pattern``): the same checkpoint compressed with the same fixed
knobs once per (pattern, sparsity), each file's bytes split into codes and indices (the kept weights'
positions), its ratio and the decoded file's validation and test accuracy. ``row`` keeps or removes whole
kernel rows (and runs of 4 linear inputs): its positions code in fewer bits, its accuracy at the same
sparsity is what it costs.

Usage: python benchmarks/prune_pattern.py CHECKPOINT [--sparsities 0.6,0.7] [--patterns weight,row]
       [--knobs "..."] [--name NAME]
writes benchmarks/results/prune_pattern_NAME.json and prints the table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from machine import cpu_name  # benchmarks/machine.py
from share_rate import ROOT, compress_fixed  # benchmarks/share_rate.py: one fixed-knob compress, its JSON
KNOBS = "--bits-conv 4 --bits-fc 2 --raw-dtype uint8 --scope global --retrain-epochs 1 --prune-steps 3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--sparsities", default="0.6,0.7")
    parser.add_argument("--patterns", default="weight,row")
    parser.add_argument("--knobs", default=KNOBS, help="the fixed knobs, as compress options")
    parser.add_argument("--name", help="the results file's suffix (default: the checkpoint's directory name)")
    parser.add_argument("--out", default="runs/prune_pattern")
    args = parser.parse_args()
    name = args.name or Path(args.checkpoint).name
    rows = [_run(args, pattern, float(s), ROOT / args.out / f"{name}-{pattern}-s{s}.slz")
            for s in args.sparsities.split(",") for pattern in args.patterns.split(",")]
    print(f"{'pattern':>8} {'sparsity':>8} {'file B':>8} {'codes B':>8} {'indices B':>9} {'ratio':>6} {'val':>7} "
          f"{'test':>7} {'seconds':>7}")
    for r in rows:
        print(f"{r['pattern']:>8} {r['sparsity']:>8g} {r['file_bytes']:>8,} {r['codes_bytes']:>8,} "
              f"{r['indices_bytes']:>9,} {r['compression_ratio']:>6.1f} {100 * r['val_accuracy']:>6.2f}% "
              f"{100 * r['test_accuracy']:>6.2f}% {r['cost']['wall_seconds']:>7.0f}")
    path = ROOT / "benchmarks" / "results" / f"prune_pattern_{name}.json"
    path.write_text(json.dumps({"machine": {"cpu": cpu_name()}, "checkpoint": args.checkpoint, "knobs": args.knobs,
                                "command": "python benchmarks/prune_pattern.py " + " ".join(sys.argv[1:]),
                                "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


def _run(args, pattern: str, sparsity: float, out: Path) -> dict:
    result = compress_fixed(args.checkpoint, args.knobs, out, "--sparsity", str(sparsity), "--prune-pattern", pattern)
    parts = result["components"]
    model = json.loads((Path(args.checkpoint) / "model.json").read_text())["config"]["model"]["name"]
    print(f"{pattern} at sparsity {sparsity:g}: {result['file_bytes']:,} B, test {result['test_accuracy']:.4f}",
          flush=True)
    return {"model": model, "pattern": pattern, "sparsity": sparsity, "file": str(out),
            "file_bytes": result["file_bytes"], "codes_bytes": parts["codes"], "indices_bytes": parts["indices"],
            "compression_ratio": result["compression_ratio"], "val_accuracy": result.get("val_accuracy"),
            "test_accuracy": result["test_accuracy"], "cost": {"wall_seconds": result["wall_seconds"]}}


if __name__ == "__main__":
    main()
