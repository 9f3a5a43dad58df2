"""Chaos: kill -9 a search at random moments, resume it with the same call each time, and compare with an
uninterrupted run of the same search.

The search is a real one (``slimzip.search``, fine-tunes, weight sharing, coding, the SQLite journal) on
a small BatchNorm MLP and synthetic data, fp32 on one thread so that runs are bit-reproducible. The
kills are spread over the whole search: ``--kills`` random points of its progress are drawn (a number
of journaled candidates each, sorted); attempt i is started, watched until its journal holds that many
candidates, then killed with SIGKILL after a further random delay of up to one candidate's time (so a
kill lands anywhere inside a candidate: fine-tune, coding, journal write); the last attempt finishes. Checked: every candidate of the
uninterrupted run is in the journal once with the same knobs, status, accuracy, bytes and epochs (none
lost, none recorded twice), the winner's file is byte-identical, and no temporary file is left.

Usage: python benchmarks/chaos_search.py [--kills 20] [--seed 0] [--strategy grid]
Writes benchmarks/results/chaos_search.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """
import os, sys, torch
torch.set_num_threads(1)
import slimzip
from slimzip.searcher import SearchConfig
from slimzip.trainer import TrainConfig
g = torch.Generator().manual_seed(1)
x = torch.randn(3000, 32, generator=g)
y = ((x[:, :4].sum(1) > 0).long() + 2 * (x[:, 4:8].sum(1) > 0).long())
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
                            torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
trained = os.path.join(os.path.dirname(sys.argv[1]), "model.pt")  # the uninterrupted run trains it once
if os.path.exists(trained):
    model.load_state_dict(torch.load(trained))
else:
    cfg = TrainConfig(epochs=8, batch_size=64, lr=0.1, precision="fp32", channels_last=False)
    slimzip.train(model, (x[:2000], y[:2000]), config=cfg, verbose=False)
    torch.save(model.state_dict(), trained)
train_cfg = TrainConfig(epochs=1, batch_size=64, lr=0.02, precision="fp32", channels_last=False)
slimzip.search(model, (x[:2000], y[:2000]), (x[2000:2500], y[2000:2500]), (x[2500:], y[2500:]), max_drop=2.0,
               strategy=sys.argv[3], config=SearchConfig(strategy=sys.argv[3], step=float(sys.argv[4]), refine=1,
               calibration_images=256),
               train_config=train_cfg, run_dir=sys.argv[1], out=sys.argv[2], verbose=False)
"""
KEEP = ("key", "strategy", "channel_ratio", "sparsity", "parent", "epochs", "status", "val_accuracy", "file_bytes")


def start(run: Path, out: Path, strategy: str, step: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(run), str(out), strategy, str(step)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def journal(run: Path) -> list[dict]:
    db = sqlite3.connect(run / "journal.sqlite")
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute("SELECT * FROM candidates ORDER BY id")]
    db.close()
    return [{k: r[k] for k in KEEP} for r in rows]


def wait_for(run: Path, candidates: int, proc: subprocess.Popen) -> bool:
    """Poll until the journal holds ``candidates`` rows; False if the process ended first."""
    while proc.poll() is None:
        try:
            if (run / "journal.sqlite").is_file() and len(journal(run)) >= candidates:
                return True
        except sqlite3.Error:  # the writer holds a lock, or the schema is not there yet
            pass
        time.sleep(0.02)
    return False


def _alive(proc: subprocess.Popen, delay: float) -> bool:
    """Wait ``delay`` seconds; True if the process is still running then."""
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        return True


def temporaries(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="grid")
    p.add_argument("--step", type=float, default=0.1)
    p.add_argument("--work", default="runs/chaos_search")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "chaos_search.json"))
    args = p.parse_args()
    work = Path(args.work)
    if work.exists():
        sys.exit(f"{work} exists; remove it first (the benchmark starts from nothing)")
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    startup = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, slimzip.searcher"], check=True)
    startup_s = time.perf_counter() - startup
    t0 = time.perf_counter()
    ref = start(work / "straight", work / "straight.slz", args.strategy, args.step)
    _, err = ref.communicate()
    straight_s = time.perf_counter() - t0
    if ref.returncode != 0:
        sys.exit(f"the uninterrupted search failed: {err}")
    n = len(journal(work / "straight"))
    per_candidate_s = max(straight_s - startup_s, 0.1) / n
    points = sorted(rng.randrange(0, n) for _ in range(args.kills))  # journaled candidates before each kill
    kills, attempts, killed_at, finished_early, progress = 0, 0, [], 0, []
    chaos_run, chaos_out = work / "chaos", work / "chaos.slz"
    while True:
        attempts += 1
        proc = start(chaos_run, chaos_out, args.strategy, args.step)
        if kills < args.kills:
            delay = rng.uniform(0.0, per_candidate_s)
            t_start = time.perf_counter()
            if wait_for(chaos_run, points[kills], proc) and _alive(proc, delay):
                proc.kill()
                proc.wait()
                kills += 1
                killed_at.append(round(time.perf_counter() - t_start, 2))
                progress.append(len(journal(chaos_run)) if (chaos_run / "journal.sqlite").is_file() else 0)
                continue
        _, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"attempt {attempts} failed (exit {proc.returncode}): {err}")
        if kills >= args.kills:
            break
        finished_early += 1  # the search finished before this kill; the next attempts replay the journal
    want, got = journal(work / "straight"), journal(chaos_run)
    keys = [r["key"] for r in got]
    result = {
        "strategy": args.strategy, "kills": kills, "attempts": attempts, "killed_at_s": killed_at,
        "candidates_journaled_at_each_kill": progress,
        "straight_seconds": round(straight_s, 1), "startup_seconds": round(startup_s, 1),
        "attempts_that_finished_before_the_last_kill": finished_early, "candidates": len(want),
        "journal_identical": want == got, "recorded_twice": len(keys) - len(set(keys)),
        "lost": len({r["key"] for r in want} - set(keys)),
        "file_identical": hashlib.sha256(chaos_out.read_bytes()).hexdigest()
        == hashlib.sha256((work / "straight.slz").read_bytes()).hexdigest(),
        "temporaries_left": temporaries(chaos_run), "python": sys.version.split()[0],
    }
    print(f"{'strategy':9} {'kills':>5} {'attempts':>8} {'candidates':>10} {'journal same':>12} {'twice':>5} "
          f"{'lost':>4} {'file same':>9} {'temp files':>10}")
    print(f"{args.strategy:9} {kills:>5} {attempts:>8} {len(want):>10} {str(result['journal_identical']):>12} "
          f"{result['recorded_twice']:>5} {result['lost']:>4} {str(result['file_identical']):>9} "
          f"{len(result['temporaries_left']):>10}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not (result["journal_identical"] and result["file_identical"] and not result["temporaries_left"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
