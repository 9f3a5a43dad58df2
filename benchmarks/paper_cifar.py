"""The paper's CIFAR-10 experiment, one resumable command: baseline with slimming's L1 penalty, then the
strategies and the ablation side by side at baseline minus 1.0 point.

Phases (each one resumes where a kill left it; the same command, started again, goes on):
  1. baseline   ``slimzip train`` of MODEL on CIFAR-10 with the recipe below and network slimming's L1
                penalty on BN scales (lambda 1e-5 for ResNet/DenseNet, 1e-4 for VGG, as the paper);
  2. search     ``compare-search`` at a target of baseline val accuracy minus ``--max-drop`` points:
                heuristic, frontier, frontier at ``--budget-ratio`` x the heuristic's epochs, the
                ablation (structured only / unstructured only / combined, with frontier); proxy only
                (every candidate fine-tuned on ``--train-subset`` images, the proxy's best ships);
  3. recovery   the same searches with recovery (``--recover-epochs`` full-data epochs of distilled
                retraining of the proxy's best, the walks going on from the recovered model for
                ``--recover-rounds`` rounds, a last recovery); ``--recover-epochs 0`` skips it;
  4. grid       last (the costliest; everything else is written before it starts; ``--no-grid``).

Recipes: ``fast`` = 30 epochs, batch 128, SGD lr 0.1 momentum 0.9, cosine, weight decay 5e-4,
pad-4 crop + flip (fits a CPU session for ResNet-20); ``long`` = the same at 80 epochs with Nesterov momentum
and one warm-up epoch (ResNet-20 at >= 91% test in about an hour on 2 cores); ``paper`` = network slimming's 160 epochs,
batch 64, lr 0.1 / 10 at 50% and 75%, weight decay 1e-4 (the GPU run).

Usage: SLIMZIP_DATA=../shared/data python benchmarks/paper_cifar.py --model resnet20 [--device cpu|cuda]
       [--recipe fast|long|paper] [--train-subset N] [--recover-epochs N] [--threads N] [--workers N] [--no-grid]
       [--no-ablation]
Writes benchmarks/results/paper_cifar_MODEL.json (after every phase) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

from slimzip.api import compare_search, train
from slimzip.errors import SlimzipError
from slimzip.report import compare_sections, to_text
from slimzip.searcher import SearchConfig

RECIPES = {
    "fast": {"epochs": 30, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine"},
    "long": {"epochs": 80, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "schedule": "cosine",
             "nesterov": True, "warmup_epochs": 1.0},
    "paper": {"epochs": 160, "batch_size": 64, "lr": 0.1, "weight_decay": 1e-4, "schedule": "step",
              "milestones": (0.5, 0.75)},
}
L1 = {"vgg": 1e-4, "resnet": 1e-5, "preresnet": 1e-5, "densenet": 1e-5}  # network slimming's lambda per family
LITERATURE = {  # baseline test accuracy the model family is known for (CIFAR-10, standard augmentation)
    "resnet20": "91.25% (He et al. 2016)", "resnet56": "93.03% (He et al. 2016)",
    "vgg19": "93.66% (network slimming, baseline)", "densenet40": "94.39% (network slimming, baseline)",
    "vgg11": "about 92% (network slimming's layout)",
}
RECORDS = [  # byte records for this model family, every byte counted (../shared/REFERENCE.md)
    {"work": "ResNet-32, prune + quantize + Huffman (no accuracy loss)", "ratio": 22.0},
    {"work": "ResNet-20, mixed-precision weights only (1.3 points below baseline)", "ratio": 15.0},
]


# the MNIST levers (docs/file-size.md) that pay for themselves here: distillation in every fine-tune, the split
# bits ladder, 8-bit small tensors. Not --channel-scope sensitivity: its layer profile prunes every channel group
# at 10 levels and scores each on the validation split, about 190 evaluations for ResNet-20 (tens of minutes)
LEVERS = {"distill": 1.0, "bits_ladder": "split", "raw_dtype": "uint8"}


def baseline(args, run: Path) -> dict:
    family = next(f for f in sorted(L1, key=len, reverse=True) if args.model.startswith(f)) \
        if any(args.model.startswith(f) for f in L1) else "resnet"
    overrides = {**RECIPES[args.recipe], "bn_l1": L1[family]}
    return train(args.model, "cifar10", run, overrides=overrides, device=args.device, data_dir=args.data_dir)


def searches(args, checkpoint: Path, out: Path, strategies: tuple[str, ...], ablation: str | None,
             budget: float | None, recover: bool = False) -> dict:
    cfg = SearchConfig(train_subset=args.train_subset, step=args.step, **(LEVERS if args.levers else {}))
    if recover:
        cfg = dataclasses.replace(cfg, recover_epochs=args.recover_epochs, recover_rounds=args.recover_rounds,
                                  recover_step_epochs=args.recover_step_epochs, compress_penalty=args.compress_penalty)
    return compare_search(checkpoint, out, cfg, strategies=strategies, ablation=ablation, budget_ratio=budget,
                          max_drop=args.max_drop, device=args.device, data_dir=args.data_dir, workers=args.workers)


def table(result: dict, base: dict) -> str:
    """The report's compare-search tables, under the baseline they start from."""
    return (f"baseline: test {base['test_accuracy']:.4f}, val {base['val_accuracy']:.4f}, {base['params']:,} params\n"
            + to_text(compare_sections(result)))


def against_the_paper(result: dict, base: dict) -> list[str]:
    """The comparisons the paper makes, from whatever searches have finished."""
    rows, st, ab = [], result["strategies"], result.get("ablation", {})

    def cost(name: str) -> float:
        return st[name]["search"]["epochs"]
    if "heuristic" in st and "grid" in st:
        rows.append(f"grid / heuristic cost: {cost('grid') / max(cost('heuristic'), 1e-9):.1f}x the epochs "
                    f"(paper: 15x the time); heuristic's file {st['heuristic']['file_bytes'] / st['grid']['file_bytes']:.2f}x "
                    f"the grid's (paper: within 10%)")
    if "heuristic" in st and "frontier" in st:
        rows.append(f"frontier / heuristic: {cost('frontier') / max(cost('heuristic'), 1e-9):.2f}x the epochs for a file "
                    f"{st['frontier']['file_bytes'] / st['heuristic']['file_bytes']:.2f}x the size")
    if {"structured only", "unstructured only", "combined"} <= set(ab):
        sizes = {k: ab[k]["file_bytes"] for k in ab}
        rows.append("ablation: combined " + f"{sizes['combined']:,} B, structured only {sizes['structured only']:,} B, "
                    f"unstructured only {sizes['unstructured only']:,} B")
    best = min((r for r in [*st.values(), *ab.values()]), key=lambda r: r["file_bytes"], default=None)
    if best is not None:
        rows.append(f"smallest file {best['file_bytes']:,} B = {best['compression_ratio']:.1f}x dense fp32 at "
                    f"{100 * (base['test_accuracy'] - best['test_accuracy']):.2f} points below the baseline's test "
                    f"accuracy; records for this family: " + "; ".join(f"{r['work']}: {r['ratio']:g}x" for r in RECORDS))
    return rows


def with_and_without(proxy: dict, recovered: dict) -> list[str]:
    """Each search's file with recovery against the same search's proxy-only file."""
    rows = []
    for section in ("strategies", "ablation"):
        for name, r in recovered.get(section, {}).items():
            if (p := proxy.get(section, {}).get(name)) is not None:
                rows.append(f"{name}: recovery {r['file_bytes']:,} B ({r['compression_ratio']:.1f}x) against proxy only "
                            f"{p['file_bytes']:,} B ({p['compression_ratio']:.1f}x): {p['file_bytes'] / r['file_bytes']:.2f}x "
                            f"smaller; cost {r['search'].get('full_data_epochs', 0):.1f} against "
                            f"{p['search'].get('full_data_epochs', 0):.1f} full-data epochs")
    return rows


PHASES = {"compare": "proxy only (the proxy's best ships)", "compare_recovered": "with recovery"}


def write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="fast")
    parser.add_argument("--max-drop", type=float, default=1.0, help="points below the baseline (val) to hold")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="search fine-tunes on the first N training images (default: 10,000 on cpu, all on cuda)")
    parser.add_argument("--step", type=float, default=0.1, help="the search's step (grid: its spacing)")
    parser.add_argument("--budget-ratio", type=float, default=0.5,
                        help="frontier-budget's epochs as a multiple of the heuristic's (0: no frontier-budget)")
    parser.add_argument("--recover-epochs", type=int, default=4,
                        help="full-data epochs per recovery in the recovery phase (0: no recovery phase)")
    parser.add_argument("--recover-rounds", type=int, default=2, help="prune-recover rounds after the first recovery")
    parser.add_argument("--recover-step-epochs", type=int, default=2,
                        help="full-data epochs for a walk's step from a recovered model (0: proxy fine-tunes)")
    parser.add_argument("--compress-penalty", type=float, default=0.0,
                        help="recovery's pull towards shared values (compression-aware training; 0: off)")
    parser.add_argument("--levers", action="store_true",
                        help="every search with the MNIST levers: --distill 1 --bits-ladder split --raw-dtype uint8")
    parser.add_argument("--strategies", default="frontier,heuristic",
                        help="the strategies of the search phases (the ablation always uses frontier; "
                             "frontier-budget needs heuristic)")
    parser.add_argument("--skip-proxy", action="store_true", help="no proxy-only phase (recovery phase only)")
    parser.add_argument("--baseline-only", action="store_true", help="train (or resume) the baseline, then stop")
    parser.add_argument("--no-grid", action="store_true", help="stop before the grid (the costliest strategy)")
    parser.add_argument("--no-ablation", action="store_true",
                        help="no structured-only / unstructured-only searches (the strategies alone)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=1,
                        help="run the searches at once on N local Ray workers (cores / N threads each; needs [ray])")
    parser.add_argument("--out", default=None, help="run directory (default: runs/paper_cifar/MODEL)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--results", default=None, help="JSON (default: benchmarks/results/paper_cifar_MODEL.json)")
    parser.add_argument("--report-only", action="store_true", help="print the table from the results JSON; run nothing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_subset is None and args.device == "cpu":
        args.train_subset = 10000
    out = Path(args.out or f"runs/paper_cifar/{args.model}")
    results = Path(args.results or Path(__file__).parent / "results" / f"paper_cifar_{args.model}.json")
    meta = {"command": " ".join(sys.argv), "model": args.model, "recipe": {"name": args.recipe,
            **RECIPES[args.recipe]}, "device": args.device, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "train_subset": args.train_subset, "step": args.step, "max_drop": args.max_drop, "workers": args.workers,
            "recover_epochs": args.recover_epochs, "recover_rounds": args.recover_rounds,
            "recover_step_epochs": args.recover_step_epochs, "compress_penalty": args.compress_penalty,
            "levers": LEVERS if args.levers else None,
            "literature_baseline": LITERATURE.get(args.model), "records": RECORDS}
    if args.report_only:
        payload = json.loads(results.read_text())
        for key in [k for k in payload if k.startswith("compare")]:
            print(f"== {PHASES.get(key, key)} ==")
            print(table(payload[key], payload["baseline"]))
            print("\n".join(against_the_paper(payload[key], payload["baseline"])))
        if {"compare", "compare_recovered"} <= set(payload):
            print("\n".join(with_and_without(payload["compare"], payload["compare_recovered"])))
        if not any(k.startswith("compare") for k in payload):
            print(f"baseline only: {payload['baseline']}")
        return
    t0 = time.time()
    try:
        base = baseline(args, out / "baseline")
        # a resumed run keeps the phases an earlier call wrote until it writes them again
        payload = {**(json.loads(results.read_text()) if results.is_file() else {}), "meta": meta, "baseline": base}
        write(results, payload)
        if args.baseline_only:
            print(f"baseline: test {base['test_accuracy']:.4f}, val {base['val_accuracy']:.4f}; wrote {results}")
            return
        # everything but the grid first: a session that ends during the grid still has the rest
        phases = [("compare", out / "compare", False)] if not args.skip_proxy else []
        if args.recover_epochs:
            tag = f"-penalty{args.compress_penalty:g}" if args.compress_penalty else ""
            phases.append((f"compare_recovered{tag}", out / f"compare-recover{args.recover_epochs}x{args.recover_rounds}{tag}",
                           True))
        for key, where, recover in phases:
            first = searches(args, out / "baseline", where, tuple(args.strategies.split(",")),
                             None if args.no_ablation else "frontier",
                             args.budget_ratio or None, recover)
            payload = {**(json.loads(results.read_text()) if results.is_file() else {}), "meta": meta,
                       "baseline": base, key: {**first, "recover": recover and {
                           "epochs": args.recover_epochs, "rounds": args.recover_rounds,
                           "compress_penalty": args.compress_penalty}}}
            write(results, payload)
            print(f"== {PHASES.get(key, key)} ==")
            print(table(first, base))
            print("\n".join(against_the_paper(first, base)))
        if {"compare", "compare_recovered"} <= set(payload):
            print("\n".join(with_and_without(payload["compare"], payload["compare_recovered"])))
        if not args.no_grid:
            full = searches(args, out / "baseline", out / "compare", ("heuristic", "grid", "frontier"), "frontier",
                            args.budget_ratio)
            payload["compare"] = full
            write(results, payload)
            print(table(full, base))
            print("\n".join(against_the_paper(full, base)))
    except SlimzipError as e:
        sys.exit(f"paper_cifar: error: {e}")
    print(f"wrote {results} ({time.time() - t0:.0f} s this call)")


if __name__ == "__main__":
    main()
