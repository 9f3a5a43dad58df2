"""The most accurate model that fits a device, and how accuracy falls as the device shrinks: one search
over channel ratio x sparsity (grid, ``--objective accuracy``, each layer at the channel ratio, 4-bit
conv / 3-bit linear codebooks, one distilled fine-tune epoch on 20,000 training images per candidate,
every candidate's C model compiled for its flash and RAM), then, for each (flash, RAM) budget, the most
accurate candidate that fits. The walk does not depend on the budget (only the choice does), so one
journal answers every budget: what a search run with that budget and ``--objective accuracy`` chooses
among the same candidates. The largest budget's file is the search's own output; each budget's choice is
decoded and scored on the test split.

Usage: python benchmarks/device_budgets.py [--checkpoint runs/lenet-5-bn] [--flash 8000,16000,...]
       [--ram 16384,32768,...] [--step 0.2]
writes benchmarks/results/device_budgets.json and prints the curve; `slimzip report RUN` draws the front."""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path

import torch

from slimzip.api import SearchConfig, search
from slimzip.api.training import evaluate_path
from slimzip.searcher.driver import artifact_name
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/lenet-5-bn")
    parser.add_argument("--flash", default="8000,12000,16000,24000,32000,64000", help="flash budgets, bytes")
    parser.add_argument("--ram", default="65536", help="one RAM budget for every flash budget, bytes "
                                                       "(or as many as --flash)")
    parser.add_argument("--step", type=float, default=0.25, help="the grid's spacing")
    parser.add_argument("--out", default="runs/device_budgets")
    args = parser.parse_args()
    flash = [int(x) for x in args.flash.split(",")]
    ram = [int(x) for x in args.ram.split(",")]
    ram = ram * len(flash) if len(ram) == 1 else ram
    out = ROOT / args.out
    cfg = SearchConfig(strategy="grid", step=args.step, objective="accuracy", max_flash=max(flash), max_ram=max(ram),
                       bits_conv=4, bits_fc=3, min_bits=0, distill=1.0, raw_dtype="uint8", prune_steps=1,
                       train_subset=20000, channel_scope="layer")
    t0 = time.perf_counter()
    largest = search(ROOT / args.checkpoint, out / "largest.slz", cfg, target_accuracy=0.0, run_dir=out / "run")
    rows = [_choose(out, f, r, largest["dense_fp32_bytes"]) for f, r in zip(flash, ram)]
    print(f"{'flash budget':>12} {'RAM budget':>10}  {'candidate':>9} {'channels':>8} {'sparsity':>8} {'flash':>7} "
          f"{'RAM':>7} {'.slz B':>7} {'val':>7} {'test':>7}")
    for r in rows:
        c = r["chosen"]
        print(f"{r['max_flash']:>12,} {r['max_ram']:>10,}  " + (
            f"{c['id']:>9} {c['channel_ratio']:>8.3f} {c['sparsity']:>8.3f} {c['flash_bytes']:>7,} {c['ram_bytes']:>7,} "
            f"{c['file_bytes']:>7,} {100 * c['val_accuracy']:>6.2f}% {100 * r['test_accuracy']:>6.2f}%" if c else
            "nothing fits"))
    result = {"machine": {"cpu": cpu_name(), "threads": torch.get_num_threads()}, "checkpoint": args.checkpoint,
              "command": "python benchmarks/device_budgets.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
              "search": largest["search"], "largest_budget_file": largest["file"],
              "wall_seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    path = ROOT / "benchmarks" / "results" / "device_budgets.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {path}")


def _choose(out: Path, max_flash: int, max_ram: int, dense_bytes: int) -> dict:
    """The most accurate candidate within (flash, RAM), as ``--objective accuracy`` chooses, scored on test."""
    with sqlite3.connect(out / "run" / "journal.sqlite") as db:
        db.row_factory = sqlite3.Row
        fits = [dict(r) for r in db.execute(
            "SELECT * FROM candidates WHERE status = 'ok' AND flash_bytes <= ? AND ram_bytes <= ? "
            "ORDER BY val_accuracy DESC, file_bytes ASC, id ASC", (max_flash, max_ram))]
    if not fits:
        return {"max_flash": max_flash, "max_ram": max_ram, "chosen": None, "test_accuracy": None}
    chosen = fits[0]
    path = out / "run" / "files" / f"{artifact_name(chosen['key'])}.slz"
    score = evaluate_path(path)
    return {"max_flash": max_flash, "max_ram": max_ram, "chosen": chosen, "file": str(path),
            "test_accuracy": score["accuracy"], "model": "lenet-5-bn", "file_bytes": chosen["file_bytes"],
            "compression_ratio": dense_bytes / chosen["file_bytes"]}


if __name__ == "__main__":
    main()
