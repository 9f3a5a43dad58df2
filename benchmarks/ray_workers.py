"""A search (grid, or frontier) with 1 and 2 Ray workers, side by side in one run: same journal, wall-seconds
ratio, cost in epochs.

Rows (same checkpoint, same search settings, each in its own run directory):
  in-process, all threads   --workers 1 (no Ray), torch's default threads (what a user gets today)
  in-process, 1 thread      --workers 1 with one thread (the threads each of 2 workers gets on 2 cores)
  ray, 2 workers            --workers 2 (a local Ray instance, 1 thread per worker)
The journals of the last two must be identical (knobs, status, accuracy, bytes, epochs); the first
may differ in the last bits of accuracy (float summation order with more threads).

Usage: SLIMZIP_DATA=../shared/data python benchmarks/ray_workers.py CHECKPOINT [--search grid|frontier]
           [--step 0.2] [--train-subset 10000]
Writes benchmarks/results/ray_workers.json (grid) or ray_workers_SEARCH.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

FIELDS = "key, channel_ratio, sparsity, parent, epochs, status, val_accuracy, file_bytes"
ROWS = {  # name: (extra arguments, environment)
    "in-process, all threads": ([], {}),
    "in-process, 1 thread": ([], {"OMP_NUM_THREADS": "1"}),
    "ray, 2 workers": (["--workers", "2"], {}),
}


def journal(run: Path) -> list[tuple]:
    db = sqlite3.connect(run / "journal.sqlite")
    rows = db.execute(f"SELECT id, {FIELDS} FROM candidates ORDER BY id").fetchall()
    db.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--search", choices=("grid", "frontier"), default="grid")
    p.add_argument("--step", default="0.2")
    p.add_argument("--train-subset", default="10000")
    p.add_argument("--max-drop", default="0.5")
    p.add_argument("--work", default=None, help="run directories (default: runs/ray_workers[_SEARCH])")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.out = args.out or str(Path(__file__).parent / "results" /
                               ("ray_workers.json" if args.search == "grid" else f"ray_workers_{args.search}.json"))
    work = Path(args.work or ("runs/ray_workers" if args.search == "grid" else f"runs/ray_workers_{args.search}"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    results = {}
    for i, (name, (extra, env)) in enumerate(ROWS.items()):
        run = work / f"row{i}"
        cmd = [sys.executable, "-m", "slimzip", "compress", args.checkpoint, "--max-drop", args.max_drop, "--search",
               args.search, "--step", args.step, "--train-subset", args.train_subset, "--out", str(run) + ".slz",
               "--run-dir", str(run), "--json", "--quiet", *extra]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"{name}: {done.stderr.strip()[-500:]}")
        summary = json.loads(done.stdout)
        results[name] = {"wall_seconds": round(wall, 1), "candidates": summary["search"]["candidates"],
                         "epochs": summary["search"]["epochs"], "file_bytes": summary["file_bytes"],
                         "test_accuracy": summary["test_accuracy"], "command": " ".join(cmd[1:]), "env": env,
                         "journal": journal(run)}
        print(f"{name:26} {wall:7.1f} s  {summary['search']['candidates']:>4} candidates  "
              f"{summary['file_bytes']:>7,} B  test {summary['test_accuracy']:.4f}", flush=True)
    names = list(ROWS)
    same = results[names[1]]["journal"] == results[names[2]]["journal"]
    ratio = results[names[0]]["wall_seconds"] / results[names[2]]["wall_seconds"]
    ratio1 = results[names[1]]["wall_seconds"] / results[names[2]]["wall_seconds"]
    print(f"journal identical (1 thread vs 2 workers): {same}; wall ratio all-threads / 2 workers {ratio:.2f}x, "
          f"1 thread / 2 workers {ratio1:.2f}x")
    meta = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": sys.version.split()[0],
            "search": args.search}
    out = {"meta": meta, "rows": {k: {kk: vv for kk, vv in v.items() if kk != "journal"} for k, v in results.items()},
           "journal_identical_1thread_vs_2workers": same,
           "journal_identical_allthreads_vs_2workers": results[names[0]]["journal"] == results[names[2]]["journal"],
           "speedup_vs_all_threads": round(ratio, 2), "speedup_vs_1_thread": round(ratio1, 2)}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
