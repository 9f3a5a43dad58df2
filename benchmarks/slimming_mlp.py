"""Network slimming on the MNIST MLP 784-500-300-10 (with BN), over several seeds: the dense baseline,
sparsity training, pruning 80% of each hidden layer (784-100-60-10, 84.4% of parameters removed) and
fine-tuning; the goal is test accuracy within 0.1 point of the baseline's.

Recipes, each used for every step of its own row (baseline, sparsity training and fine-tuning alike):
- ``slimzip``: slimzip's MNIST defaults (SGD momentum 0.9, batch 128, lr 0.05, cosine, weight decay 5e-4,
  30 epochs); sparsity lambda 1e-3 with BN scales starting at 0.5; two passes (50% per layer with 10
  fine-tune epochs under sparsity, then 60% with 20), fine-tune lr 0.05, cosine.
- ``gradual``: the ``slimzip`` runs up to sparsity training, then one `prune-channels --passes 5`: 80% of
  each hidden layer removed in five equal steps (27.5% of what is left each time), 5 fine-tune epochs
  under the same sparsity after each of the first four, 20 without after the last (lr 0.05, cosine).
- ``gradual-wide``: ``gradual`` at ratio 0.75 (784-125-75-10, 80.1% of parameters removed): the least
  pruning that meets the goal's "at least 80% of parameters removed".
- ``paper``: the slimming paper's MNIST settings (batch 256, lr 0.1 divided by 10 after 1/3 and 2/3 of
  30 epochs, weight decay 1e-4, Nesterov momentum 0.9, BN scales start at 0.5 for the baseline too);
  one pass of 80% per layer, fine-tuned "with the same optimization setting as in training" (30 epochs,
  lr 0.1, the same step schedule). The paper does not give lambda for MNIST; ``--lam`` sets it.

Usage: SLIMZIP_DATA=../shared/data python benchmarks/slimming_mlp.py [--recipe paper] [--seeds 3]
Every step is a resumable slimzip run directory under --runs; a finished step is read back, not redone.
Writes benchmarks/results/slimming_mlp_<recipe>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from slimzip.api import prune_channels, train

MODEL = "mlp-500-300-bn"
GOAL = 0.001 + 1e-9  # the largest accepted gap: 0.1 point of accuracy (float slack)
PAPER_TRAIN = dict(batch_size=256, lr=0.1, schedule="step", milestones=(1 / 3, 2 / 3), weight_decay=1e-4, nesterov=True)
RECIPES = {  # family: recipes of one family share their baseline and sparsity-training runs
    "slimzip": {"family": "slimzip", "train": {}, "bn_init": None, "lam": 1e-3,
                "passes": [dict(channel_ratio=0.5, finetune_epochs=10, lr=0.05, bn_l1=1e-3),
                           dict(channel_ratio=0.6, finetune_epochs=20, lr=0.05)]},
    "gradual": {"family": "slimzip", "train": {}, "bn_init": None, "lam": 1e-3,
                "passes": [dict(channel_ratio=0.8, passes=5, pass_epochs=5, finetune_epochs=20, lr=0.05)]},
    "gradual-wide": {"family": "slimzip", "train": {}, "bn_init": None, "lam": 1e-3,
                     "passes": [dict(channel_ratio=0.75, passes=5, pass_epochs=5, finetune_epochs=20, lr=0.05)]},
    "paper": {"family": "paper", "train": PAPER_TRAIN, "bn_init": 0.5, "lam": 1e-4,
              "passes": [dict(channel_ratio=0.8, finetune_epochs=30, lr=0.1, schedule="step")]},
}


def run_seed(name: str, recipe: dict, lam: float, seed: int, runs: Path, quick: bool) -> dict:
    """Baseline, sparsity training and the pruning passes for one seed; test accuracy of each step."""
    over = {**recipe["train"], "seed": seed, **({"epochs": 2} if quick else {})}
    extra = dict(verbose=False, **({"subset": 5000} if quick else {}))
    base = train(MODEL, None, runs / f"base-seed{seed}", bn_init=recipe["bn_init"], overrides=over, **extra)
    sparse = train(MODEL, None, runs / f"sparse{lam:g}-seed{seed}", bn_init=0.5, overrides={**over, "bn_l1": lam},
                   **extra)
    row = {"seed": seed, "baseline": base["test_accuracy"], "baseline_params": base["params"],
           "sparse": sparse["test_accuracy"], "passes": []}
    source = Path(sparse["out"])
    for i, step in enumerate(recipe["passes"]):
        step = {**step, "finetune_epochs": 1, **({"pass_epochs": 1} if "passes" in step else {})} if quick else step
        out = runs / f"sparse{lam:g}-seed{seed}-{name}{i + 1}"
        r = prune_channels(source, out, method="slimming", scope="layer", seed=seed, verbose=False, **step)
        removed = 1 - r["after"]["cost"]["params"] / base["params"]  # of the dense baseline's, over all passes
        row["passes"].append({"widths": r["after"]["widths"], "params_removed": removed,
                              "val_before_finetune": r["after"]["val_accuracy_before_finetune"],
                              "test": r["after"]["test_accuracy"]})
        source = out
    row["pruned"] = row["passes"][-1]["test"]
    row["gap"] = row["baseline"] - row["pruned"]
    return row


def standard_error(values: list[float]) -> float:
    """Standard error of the mean (0 for a single value)."""
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def mean_std(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.2f} +- {100 * statistics.pstdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="paper", choices=sorted(RECIPES))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--lam", type=float, default=None, help="sparsity lambda (default: the recipe's)")
    parser.add_argument("--quick", action="store_true", help="5,000 images, 2 epochs, 1 fine-tune epoch (smoke)")
    parser.add_argument("--runs", default=None, help="run directories (default: runs/slimming-mlp-<family>)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    recipe = RECIPES[args.recipe]
    lam = recipe["lam"] if args.lam is None else args.lam
    runs = Path(args.runs or f"runs/slimming-mlp-{recipe['family']}{'-quick' if args.quick else ''}")
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rows.append(run_seed(args.recipe, recipe, lam, seed, runs, args.quick))
        r = rows[-1]
        print(f"seed {seed}: baseline {r['baseline']:.4f}, sparse {r['sparse']:.4f}, "
              + ", ".join(f"{p['widths']} {p['params_removed']:.1%} {p['test']:.4f}" for p in r["passes"]), flush=True)
    cols = ["baseline", "sparse", "pruned"]
    print(f"\nrecipe {args.recipe}, lambda {lam:g}, {len(rows)} seeds, test accuracy %")
    print(f"{'step':<10} " + " ".join(f"{'seed ' + str(r['seed']):>8}" for r in rows) + f" {'mean +- std':>15}")
    for c in cols:
        print(f"{c:<10} " + " ".join(f"{100 * r[c]:>8.2f}" for r in rows) + f" {mean_std([r[c] for r in rows]):>15}")
    gaps = [r["gap"] for r in rows]
    print(f"{'gap':<10} " + " ".join(f"{100 * g:>8.2f}" for g in gaps) + f" {mean_std(gaps):>15}")
    last = rows[0]["passes"][-1]
    mean_gap, err = statistics.mean(gaps), standard_error(gaps)
    print(f"pruned widths {last['widths']}, {last['params_removed']:.1%} of parameters removed; mean gap "
          f"{100 * mean_gap:.3f} +- {100 * err:.3f} (standard error), {sum(g <= GOAL for g in gaps)} of {len(gaps)} "
          f"seeds within {100 * GOAL:.1f} point; goal -> {'met' if mean_gap <= GOAL else 'NOT met'} (mean)")
    name = f"slimming_mlp_{args.recipe}{'_quick' if args.quick else ''}.json"
    out = Path(args.out or Path(__file__).parent / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"recipe": args.recipe, "settings": {**recipe, "lam": lam}, "rows": rows,
                               "mean_gap": mean_gap, "gap_standard_error": err}, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
