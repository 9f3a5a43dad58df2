"""A finished search's row in a results JSON: what its run directory's summary says (file bytes, ratio,
validation and decoded-file test accuracy, the baseline's, knobs, cost), under a section and a name, with
the command that made it. For searches run with ``slimzip compress`` by hand (a resumed run with other
ladders, a strategy finished on its own) whose numbers the docs quote beside a benchmark's rows.

Usage: python benchmarks/run_row.py RUN_DIR --results FILE.json --section S --name N --command "slimzip ..."
       [--before-ladders]   (also the smallest files before the layer and the rate ladders, decoded and scored)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COST = ("strategy", "candidates", "epochs", "full_data_epochs", "recovery_epochs", "recoveries", "failed",
        "wall_seconds")


def row(run: Path, command: str, before_ladders: bool = False) -> dict:
    """The row of the search finished in ``run`` (its ``summary.json``); ``before_ladders``: with the smallest
    files before its layer and its rate ladders (``search_levers.before_ladder``)."""
    summary = json.loads((run / "summary.json").read_text())
    model = json.loads((Path(json.loads((run / "config.json").read_text())["checkpoint"]) / "config.json")
                       .read_text())["model"]["name"]
    return {"model": model, "file_bytes": summary["file_bytes"], "compression_ratio": summary["compression_ratio"],
            "val_accuracy": summary["val_accuracy"], "test_accuracy": summary["test_accuracy"],
            "baseline_test_accuracy": summary["baseline_test_accuracy"],
            "target_val_accuracy": summary["target_accuracy"], "knobs": summary["knobs"],
            "cost": {k: summary["search"][k] for k in COST if k in summary["search"]}, "command": command,
            **(_before_ladders(run, summary) if before_ladders else {})}


def _before_ladders(run: Path, summary: dict) -> dict:
    from search_levers import before_ladder  # benchmarks/search_levers.py

    return {"before_layer_ladder": before_ladder(run, summary, (":l", ":x")),
            "before_rate_ladder": before_ladder(run, summary, (":x",))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--results", required=True)
    p.add_argument("--section", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--command", required=True, help="the command that made the run (recorded as given)")
    p.add_argument("--before-ladders", action="store_true",
                   help="also the smallest file before the layer ladder and before the rate ladder (what each saved)")
    args = p.parse_args()
    path = Path(args.results)
    payload = json.loads(path.read_text()) if path.is_file() else {}
    found = row(Path(args.run), args.command, args.before_ladders)
    payload.setdefault(args.section, {})[args.name] = found
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{args.name}: {found['file_bytes']:,} B ({found['compression_ratio']:.1f}x), test "
          f"{100 * found['test_accuracy']:.2f}% (baseline {100 * found['baseline_test_accuracy']:.2f}%); wrote {path}")


if __name__ == "__main__":
    main()
