"""ResNet-20 on CIFAR-10 under a MACs budget, against the same search without it: the search with
recovery (the frontier, distilled proxy fine-tunes on 10,000 images, recovery on the whole split) run
once more with ``--max-macs`` (default: half the dense model's MACs) at the 1-point target. Every walk
starts at the least channel ratio whose narrowed model fits (found before any training); candidates over
the budget are refused before they are trained. The run resumes where it stopped (its run directory).

Usage: python benchmarks/macs_budget.py [--fraction 0.5] [--threads 2]
writes benchmarks/results/macs_budget.json and prints both rows side by side."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from slimzip.api.training import evaluate_path
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASELINE = "runs/paper_cifar/resnet20-long/baseline"
SEARCH = ["--search", "frontier", "--max-drop", "1.0", "--train-subset", "10000", "--step", "0.1", "--distill", "1",
          "--bits-ladder", "split", "--raw-dtype", "uint8",
          "--recover-step-epochs", "2"]  # the unbudgeted reference's settings (paper_cifar_resnet20.json)
REFERENCE = ("paper_cifar_resnet20.json", "compare_recovered_rungs", "frontier (combined), recovery rungs of 2 epochs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.5, help="the budget: this share of the dense MACs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recover-epochs", type=int, default=3, help="(the reference's: 3)")
    parser.add_argument("--recover-rounds", type=int, default=2, help="(the reference's: 2)")
    parser.add_argument("--out", default=None, help="run directory (default: runs/paper_cifar/resnet20-long/macs-F)")
    args = parser.parse_args()
    recovery = (args.recover_epochs, args.recover_rounds) != (3, 2)
    args.out = args.out or (f"runs/paper_cifar/resnet20-long/macs-{args.fraction:g}"
                            + (f"-r{args.recover_epochs}x{args.recover_rounds}" if recovery else ""))
    base = json.loads((ROOT / BASELINE / "summary.json").read_text())
    budget = int(args.fraction * base["macs"])
    out = ROOT / args.out
    search = [*SEARCH, "--recover-epochs", str(args.recover_epochs), "--recover-rounds", str(args.recover_rounds)]
    command = [sys.executable, "-m", "slimzip", "compress", BASELINE, *search, "--max-macs", str(budget),
               "--out", f"{args.out}.slz", "--run-dir", args.out, "--json"]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if not (out / "summary.json").is_file():
        sys.exit(f"the search stopped (exit {done.returncode}) before it finished; run the same command to resume")
    reference = json.loads((RESULTS / REFERENCE[0]).read_text())[REFERENCE[1]][REFERENCE[2]]
    dense = reference["file_bytes"] * reference["compression_ratio"]
    row = _row(done.returncode == 0, out, base, budget, round(dense), command)
    row.update(wall_seconds_this_call=round(time.perf_counter() - t0, 1),
               machine={"cpu": cpu_name(), "threads": args.threads})
    path = RESULTS / "macs_budget.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else {}
    rows = {**rows, "without (the same search)": {**reference, "macs": base["macs"]},
            f"with --max-macs {budget:,} ({args.fraction:g} of dense)"
            + (f", recovery {args.recover_epochs} epochs x {args.recover_rounds + 1}" if recovery else ""): row}
    print(f"{'search':<44} {'target':>6} {'MACs':>11} {'.slz B':>8} {'ratio':>6} {'test':>7} {'full-data epochs':>16}")
    for name, r in rows.items():
        test = f"{100 * r['test_accuracy']:.2f}%" if r.get("test_accuracy") is not None else "-"
        print(f"{name:<44} {'met' if r.get('met_target', True) else 'missed':>6} {r.get('macs') or 0:>11,} "
              f"{r.get('file_bytes') or 0:>8,} {r.get('compression_ratio') or 0:>6.1f} {test:>7} "
              f"{r['cost'].get('full_data_epochs', 0):>16}")
    result = {"machine": {"cpu": cpu_name(), "threads": args.threads}, "dense_macs": base["macs"],
              "baseline_test_accuracy": base["test_accuracy"], "rows": rows}
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def _row(met: bool, out: Path, base: dict, budget: int, dense_bytes: int, command: list[str]) -> dict:
    """The budgeted search's file scored on the test split, or (target missed) its closest file's."""
    saved = json.loads((out / "summary.json").read_text())
    chosen = saved if met else (saved.get("best_effort") or {})
    path = ROOT / chosen["file"] if chosen.get("file") else None
    size = path.stat().st_size if path else None
    return {"model": "resnet20", "file": chosen.get("file"), "met_target": met, "file_bytes": size,
            "compression_ratio": dense_bytes / size if size else None,
            "test_accuracy": evaluate_path(path)["accuracy"] if path else None,
            "baseline_test_accuracy": base["test_accuracy"], "macs": chosen.get("macs"), "max_macs": budget,
            "knobs": saved.get("knobs") or {k: chosen.get(k) for k in ("channel_ratio", "sparsity")},
            "cost": saved["search"], "command": "slimzip compress " + " ".join(command[4:-1])}


if __name__ == "__main__":
    main()
