"""What a command costs before it does anything: wall seconds of ``slimzip --help`` and of ``slimzip
models``, and the modules ``from slimzip import load`` imports, for this tree and a baseline commit side
by side (the baseline runs from a temporary git worktree). Each timing is the median of ``--repeat``
fresh processes.

Usage: python benchmarks/import_cost.py [--baseline REF] [--repeat 5]; writes
benchmarks/results/import_cost.json and prints the table."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COUNT = ("import sys; from slimzip import load; load('tests/corpus/valid/v4-graph-huffman.slz'); "
         "print(len([m for m in sys.modules if m.startswith('slimzip')]), len(sys.modules))")


def measure(src: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src / "src")}

    def seconds(*args: str) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "slimzip", *args], env=env, cwd=src, capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        return round(statistics.median(times), 3)
    slimzip_modules, all_modules = subprocess.run([sys.executable, "-c", COUNT], env=env, cwd=src, capture_output=True,
                                                  text=True, check=True).stdout.split()
    return {"help_seconds": seconds("--help"), "models_seconds": seconds("models"),
            "load_slimzip_modules": int(slimzip_modules), "load_all_modules": int(all_modules)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="2dc1c90", help="the commit to compare against")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.baseline], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            rows = {f"baseline {args.baseline}": measure(base, args.repeat), "this tree": measure(ROOT, args.repeat)}
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    print(f"{'':<20} {'--help s':>9} {'models s':>9} {'load: slimzip modules':>22} {'all modules':>12}")
    for name, r in rows.items():
        print(f"{name:<20} {r['help_seconds']:>9} {r['models_seconds']:>9} {r['load_slimzip_modules']:>22} "
              f"{r['load_all_modules']:>12}")
    out = ROOT / "benchmarks" / "results" / "import_cost.json"
    out.write_text(json.dumps({"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                               "repeat": args.repeat, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
