"""DropNet's claim on Model A (MNIST MLP 784-40-40-10): accuracy against the fraction of nodes left, for
the metrics min, min_layer, random and the oracle, over several seeds; min or min_layer should beat
random at 20%.

Runs `slimzip.api.dropnet` with the paper's settings (SGD lr 0.1, batch 32, up to 100 epochs with early
stopping on validation loss, patience 5, reset to theta0, p = 0.2) until 20% or fewer units remain.
Each run directory is resumable; the table gives mean +- std of test accuracy per cycle.

Usage: SLIMZIP_DATA=../shared/data python benchmarks/dropnet_curve.py [--seeds 5] [--metrics min,random] [--quick]
(runs are independent: two processes with disjoint --metrics use both cores; a last run with all of
them reads the finished runs back and writes the table)
Writes benchmarks/results/dropnet_curve.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from slimzip.api import dropnet

METRICS = ("min", "min_layer", "random", "oracle")


def paired_against_random(row: dict, metrics: list[str]) -> dict[str, dict]:
    """DropNet's claim at one cycle: each metric's test accuracy minus random's, paired by seed."""
    if "random" not in metrics:
        return {}
    out = {}
    for metric in (m for m in metrics if m != "random"):
        diffs = [a - b for a, b in zip(row[metric]["all"], row["random"]["all"])]
        err = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        out[metric] = {"mean": statistics.mean(diffs), "standard_error": err,
                       "wins": sum(d > 0 for d in diffs), "seeds": len(diffs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of " + ", ".join(METRICS))
    parser.add_argument("--init", default="torch", help="theta0 initialisation: torch or glorot (Keras's)")
    parser.add_argument("--keras", action="store_true",
                        help="as DropNet's Keras code trains: Glorot init, the split in stored order every epoch "
                             "(shuffle=False) and the last epoch's weights after early stopping")
    parser.add_argument("--quick", action="store_true", help="5,000 images, 3 epochs per cycle (smoke run)")
    parser.add_argument("--runs", default=None,
                        help="where the per-run directories go "
                             "(default runs/dropnet-curve, with --keras runs/dropnet-keras)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dropnet_curve.json"))
    args = parser.parse_args()
    keras = {"shuffle": False, "restore_best": False} if args.keras else {}
    extra = dict(subset=5000, overrides={"epochs": 3, **keras}) if args.quick else dict(overrides=keras)
    init = "glorot" if args.keras else args.init
    run_root = Path(args.runs or ("runs/dropnet-keras" if args.keras else "runs/dropnet-curve"))
    metrics = [m for m in args.metrics.split(",") if m]
    if unknown := set(metrics) - set(METRICS):
        parser.error(f"unknown metrics {sorted(unknown)}; choose from {', '.join(METRICS)}")
    curves: dict[str, list[list[dict]]] = {m: [] for m in metrics}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for metric in metrics:
            out = run_root / f"{metric}-seed{seed}{'-quick' if args.quick else ''}"
            r = dropnet("dropnet-a", "mnist", out, metric=metric, stop_remaining=0.2, seed=seed, init=init,
                        verbose=False, **extra)
            curves[metric].append(r["cycles"])
            print(f"{metric} seed {seed}: " + ", ".join(f"{c['remaining']:.0%} {c['test_accuracy']:.4f}"
                                                       for c in r["cycles"]), flush=True)
    table = []
    for cycle in range(min(len(c) for runs in curves.values() for c in runs)):
        row = {"cycle": cycle, "remaining": curves[metrics[0]][0][cycle]["remaining"]}
        for metric, runs in curves.items():
            accs = [run[cycle]["test_accuracy"] for run in runs]
            row[metric] = {"mean": statistics.mean(accs), "std": statistics.pstdev(accs), "all": accs,
                           "remaining": [run[cycle]["remaining"] for run in runs]}
        table.append(row)
    print(f"{'cycle':>5} {'nodes left':>10} " + " ".join(f"{m:>17}" for m in metrics))
    for row in table:
        print(f"{row['cycle']:>5} {row['remaining']:>10.1%} " +
              " ".join(f"{row[m]['mean']:>9.4f} +-{row[m]['std']:.4f}" for m in metrics))
    claim = paired_against_random(table[-1], metrics)
    for metric, c in claim.items():
        print(f"at {table[-1]['remaining']:.0%} left, {metric} - random: {100 * c['mean']:+.2f} points "
              f"(standard error {100 * c['standard_error']:.2f}), {metric} ahead in {c['wins']} of {c['seeds']} seeds")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"seeds": args.seeds, "quick": args.quick, "init": init, "keras": args.keras,
                                          "table": table, "last_cycle_vs_random": claim}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
