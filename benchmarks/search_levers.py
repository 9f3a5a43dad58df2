"""The search's levers on one model and target, one search each: channel scope (one ratio per layer, or per
layer from a sensitivity profile), the split bits ladder and distillation from the input model, each
added in turn and each alone; recovery after a proxy search on a subset, with and without the
compression-aware pull; every file with 8-bit small tensors (``--raw-dtype uint8``).

Every row is ``slimzip compress CHECKPOINT --max-drop D --search frontier --raw-dtype uint8 ...`` with its
own run directory under ``--work`` (a finished row is read back, an unfinished one resumes from its
journal). Test accuracy is measured once, on the model decoded from each file.

Usage: SLIMZIP_DATA=../shared/data python benchmarks/search_levers.py runs/lenet-5-bn [--max-drop 0.3]
Writes benchmarks/results/search_levers_NAME.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

LONG = ["--channel-scope", "sensitivity", "--distill", "1", "--bits-ladder", "layer", "--finetune-epochs", "4",
        "--short-epochs", "1", "--centroid-epochs", "3", "--recover-epochs", "10", "--recover-rounds", "3",
        "--recover-step-epochs", "4", "--refine", "3"]
ROWS = {  # name: the flags that differ
    "layer": ["--channel-scope", "layer"],
    "sens": ["--channel-scope", "sensitivity"],
    "sens-split": ["--channel-scope", "sensitivity", "--bits-ladder", "split"],
    "sens-split-kd": ["--channel-scope", "sensitivity", "--bits-ladder", "split", "--distill", "1"],
    "layer-kd": ["--channel-scope", "layer", "--distill", "1"],
    "sens-kd": ["--channel-scope", "sensitivity", "--distill", "1"],
    # the proxy on a sixth of the data, then recovery on all of it, then with the compression-aware pull
    "kd-sub": ["--channel-scope", "layer", "--distill", "1", "--train-subset", "10000"],
    "kd-sub-rec": ["--channel-scope", "layer", "--distill", "1", "--train-subset", "10000", "--recover-epochs", "2"],
    "kd-sub-rec-pen": ["--channel-scope", "layer", "--distill", "1", "--train-subset", "10000", "--recover-epochs", "2",
                       "--compress-penalty", "1"],
    # per-layer bits after the split ladder; the row also reports the same run's file before that ladder
    # (index widths held at the former fixed 8 / 5, so that only the ladder differs)
    "sens-layer-kd-w85": ["--channel-scope", "sensitivity", "--bits-ladder", "layer", "--distill", "1",
                          "--index-bits-conv", "8", "--index-bits-fc", "5"],
    # long budgets for a model whose epochs take seconds (LeNet-300-100): 4-epoch fine-tunes, a finer
    # sparsity step, 10-epoch recoveries with 4-epoch rungs, 3 centroid epochs; with and without the pull
    "long": LONG,
    "long-pen": [*LONG, "--compress-penalty", "1"],
    # the same, then the rate ladder (entropy-constrained sharing of the winner at 0.005 ... 0.04); run in a copy
    # of long-pen's run directory, it reads the walk back and trains only the ladder's new steps
    "long-pen-rate": [*LONG, "--compress-penalty", "1", "--max-share-rate", "0.04"],
    # the same, distilled from a LeNet-5 (`slimzip train --model lenet-5-bn --bn-l1 1e-4 --augment --epochs 30
    # --label-smoothing 0.1 --out runs/lenet-5-bn-aug`) instead of the input model: a CNN teaching an MLP
    "long-pen-teacher": [*LONG, "--compress-penalty", "1", "--teacher", "runs/lenet-5-bn-aug"],
}


def row(checkpoint: str, work: Path, name: str, max_drop: str) -> dict:
    out = work / f"{name}.json"
    cmd = [sys.executable, "-m", "slimzip", "compress", checkpoint, "--max-drop", max_drop, "--search", "frontier",
           "--raw-dtype", "uint8", "--json", "--quiet", "--out", str(work / f"{name}.slz"),
           "--run-dir", str(work / f"{name}.run"), *ROWS[name]]
    if not out.is_file():
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{name}: {done.stderr.strip()[-500:]}")
        out.write_text(done.stdout)
    summary = json.loads(out.read_text())
    found = {"model": _model(checkpoint), "flags": " ".join(ROWS[name]), "command": " ".join(["slimzip", *cmd[3:]]),
             "file_bytes": summary["file_bytes"], "ratio": round(summary["compression_ratio"], 1),
             "compression_ratio": summary["compression_ratio"], "test_accuracy": summary["test_accuracy"],
             "val_accuracy": summary["val_accuracy"], "baseline_test_accuracy": summary.get("baseline_test_accuracy"),
             "baseline_val_accuracy": summary["baseline_val_accuracy"], "knobs": summary["knobs"],
             "search": summary["search"]}
    flags = ROWS[name]
    if "--max-share-rate" in flags:
        found["before_rate_ladder"] = before_ladder(work / f"{name}.run", summary, (":x",))
    if "--bits-ladder" in flags and flags[flags.index("--bits-ladder") + 1] == "layer":
        found["before_layer_ladder"] = before_ladder(work / f"{name}.run", summary, (":l", ":x"))
    return found


def _model(checkpoint: str) -> str:
    """The registry name of the checkpoint's model (its directory's name if it has none)."""
    config = Path(checkpoint) / "config.json"
    return json.loads(config.read_text())["model"]["name"] if config.is_file() else Path(checkpoint).name


def before_ladder(run: Path, summary: dict, markers: tuple[str, ...]) -> dict:
    """The smallest file of a run that meets its target among the candidates before a ladder (no key with one
    of ``markers``: ``:l`` single layers' bits apart, ``:x`` a share rate), with its decoded test accuracy: what
    the ladder saved; ``ladder_epochs``: what the first marker's steps cost."""
    from slimzip.searcher.driver import artifact_name

    db = sqlite3.connect(run / "journal.sqlite")
    rows = db.execute("SELECT id, key, val_accuracy, file_bytes, epochs FROM candidates WHERE status = 'ok'").fetchall()
    asked = {c["id"] for c in summary.get("candidates", [])} or {r[0] for r in rows}  # this search's, not the
    rows = [r for r in rows if r[0] in asked]  # journal's others (a run directory copied from another search)
    ok = [r for r in rows if not any(m in r[1] for m in markers) and r[2] >= summary["target_accuracy"] - 1e-12]
    cid, key, val, size, _ = min(ok, key=lambda r: (r[3], -r[2], r[0]))
    path = run / "files" / f"{artifact_name(key)}.slz"
    done = subprocess.run([sys.executable, "-m", "slimzip", "eval", str(path), "--json"], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{path}: {done.stderr.strip()[-500:]}")
    return {"candidate": cid, "file_bytes": size, "compression_ratio": summary["compression_ratio"] * summary[
        "file_bytes"] / size, "val_accuracy": val, "test_accuracy": json.loads(done.stdout)["accuracy"],
            "ladder_epochs": sum(r[4] for r in rows if markers[0] in r[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--max-drop", default="0.3")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated names of ROWS")
    p.add_argument("--work", default="runs/lv")
    p.add_argument("--results", default=None, help="JSON to write (default: results/search_levers_CHECKPOINT.json)")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    print(f"{'row':14} {'file':>8} {'ratio':>7} {'test err':>8} {'candidates':>10} {'epochs':>7}  flags")
    for name in args.rows.split(","):
        r = rows[name] = row(args.checkpoint, work, name, args.max_drop)
        print(f"{name:14} {r['file_bytes']:>8,} {r['ratio']:>6.1f}x {100 * (1 - r['test_accuracy']):>7.2f}% "
              f"{r['search']['candidates']:>10} {r['search']['epochs']:>7.2f}  {r['flags']}", flush=True)
    out = Path(__file__).parent / "results" / f"search_levers_{Path(args.checkpoint).name}.json"
    meta = {"checkpoint": args.checkpoint, "max_drop": args.max_drop, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    if args.results:
        out = Path(args.results)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
