"""A search (grid, frontier, or compare-search) with 1 and 2 Ray workers, side by side in one run: same
journal, wall-seconds ratio, cost in epochs.

Rows (same checkpoint, same search settings, each in its own run directory):
  in-process, all threads   --workers 1 (no Ray), torch's default threads (what a user gets today)
  in-process, 1 thread      --workers 1 with one thread (the threads each of 2 workers gets on 2 cores)
  ray, 2 workers            --workers 2 (a local Ray instance, 1 thread per worker)
and with --speculate (frontier): the last two again with --speculate on.
The journals of "1 thread" and "2 workers" (each pair) must be identical (knobs, status, accuracy,
bytes, epochs); all threads may differ (float summation order with more threads moves a decision at the
edge). --search compare runs compare-search (heuristic, frontier, frontier-budget and the ablation with
frontier): its searches run at once on the workers; every search's journal is compared.

Usage: SLIMZIP_DATA=../shared/data python benchmarks/ray_workers.py CHECKPOINT [--search grid|frontier|compare]
           [--speculate] [--step 0.2] [--train-subset 10000]
Writes benchmarks/results/ray_workers.json (grid) or ray_workers_SEARCH[_speculate].json.
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
SPECULATE = {
    "in-process, 1 thread, speculate": (["--speculate", "on"], {"OMP_NUM_THREADS": "1"}),
    "ray, 2 workers, speculate": (["--workers", "2", "--speculate", "on"], {}),
}
PAIRS = [("in-process, 1 thread", "ray, 2 workers"), ("in-process, 1 thread, speculate", "ray, 2 workers, speculate")]


def journal(run: Path) -> list[tuple] | dict[str, list[tuple]]:
    """One search's journal rows; for a compare-search directory, every search's."""
    if not (run / "journal.sqlite").is_file():
        return {d.name: journal(d) for d in sorted(run.iterdir()) if (d / "journal.sqlite").is_file()}
    db = sqlite3.connect(run / "journal.sqlite")
    rows = db.execute(f"SELECT id, {FIELDS} FROM candidates ORDER BY id").fetchall()
    db.close()
    return rows


def command(args, run: Path, extra: list[str]) -> list[str]:
    common = ["--max-drop", args.max_drop, "--step", args.step, "--train-subset", args.train_subset, "--quiet", *extra]
    if args.search == "compare":
        return [sys.executable, "-m", "slimzip", "compare-search", args.checkpoint, "--strategies", "heuristic,frontier",
                "--budget-ratio", "0.5", "--ablation", "frontier", "--out", str(run), "--json", *common]
    return [sys.executable, "-m", "slimzip", "compress", args.checkpoint, "--search", args.search, "--out",
            str(run) + ".slz", "--run-dir", str(run), "--json", *common]


def brief(summary: dict, compare: bool) -> dict:
    """Candidates, epochs, file bytes, test accuracy: of the search, or of every search of a compare."""
    if not compare:
        return {"candidates": summary["search"]["candidates"], "epochs": summary["search"]["epochs"],
                "speculative_epochs": summary["search"].get("speculative_epochs", 0.0),
                "file_bytes": summary["file_bytes"], "test_accuracy": summary["test_accuracy"]}
    rows = {**summary["strategies"], **{f"ablation {k}": v for k, v in summary["ablation"].items()
                                         if k != "combined" or summary["ablation_strategy"] not in summary["strategies"]}}
    return {"candidates": sum(r["search"]["candidates"] for r in rows.values()),
            "epochs": round(sum(r["search"]["epochs"] for r in rows.values()), 4),
            "file_bytes": {k: r["file_bytes"] for k, r in rows.items()},
            "test_accuracy": {k: r["test_accuracy"] for k, r in rows.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--search", choices=("grid", "frontier", "compare"), default="grid")
    p.add_argument("--speculate", action="store_true", help="frontier: add the rows with --speculate on")
    p.add_argument("--step", default="0.2")
    p.add_argument("--train-subset", default="10000")
    p.add_argument("--max-drop", default="0.5")
    p.add_argument("--work", default=None, help="run directories (default: runs/ray_workers[_SEARCH])")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    tag = "" if args.search == "grid" else f"_{args.search}" + ("_speculate" if args.speculate else "")
    args.out = args.out or str(Path(__file__).parent / "results" / f"ray_workers{tag}.json")
    work = Path(args.work or f"runs/ray_workers{tag}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rows = {**ROWS, **(SPECULATE if args.speculate else {})}
    results = {}
    for i, (name, (extra, env)) in enumerate(rows.items()):
        run = work / f"row{i}"
        cmd = command(args, run, extra)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"{name}: {done.stderr.strip()[-500:]}")
        got = brief(json.loads(done.stdout), args.search == "compare")
        results[name] = {"wall_seconds": round(wall, 1), **got, "command": " ".join(cmd[1:]), "env": env,
                         "journal": journal(run)}
        print(f"{name:34} {wall:7.1f} s  {got['candidates']:>4} candidates  {got['epochs']:8.2f} epochs  "
              f"{got['file_bytes'] if isinstance(got['file_bytes'], dict) else format(got['file_bytes'], ',')} B",
              flush=True)
    same = {f"{a} vs {b}": results[a]["journal"] == results[b]["journal"] for a, b in PAIRS if b in results}
    base = results["in-process, 1 thread"]["wall_seconds"]
    speedups = {f"{name} over 1 thread": round(base / r["wall_seconds"], 2) for name, r in results.items()}
    speedups["ray, 2 workers over all threads"] = round(results["in-process, all threads"]["wall_seconds"]
                                                        / results["ray, 2 workers"]["wall_seconds"], 2)
    print(f"journals identical: {same}")
    print("wall-time ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items()))
    meta = {"cpu_count": os.cpu_count(), "machine": platform.machine(), "python": sys.version.split()[0],
            "search": args.search}
    out = {"meta": meta, "rows": {k: {kk: vv for kk, vv in v.items() if kk != "journal"} for k, v in results.items()},
           "journals_identical": same, "speedups": speedups}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
