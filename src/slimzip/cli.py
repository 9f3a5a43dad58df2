"""The ``slimzip`` command: argument parsing only; every command is a thin call into the library.

Progress and logs go to stderr; ``--json`` prints one JSON object to stdout. Exit code 0 on success,
2 on bad input with a one-line message, never a traceback for a user mistake.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import sys
from typing import Callable, Sequence

from . import __version__
from .config import DEFAULT_RECIPE, EXPORT_FORMATS, RECIPES, CompressConfig, PruneConfig, TrainConfig
from .searcher.driver import SearchConfig
from .searcher.strategies import STRATEGIES
from .errors import INTERRUPTED, SlimzipError
from .options import add_options, given, number, positive_int
from .progress import log, pct


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _emit(result: dict, as_json: bool, lines: Callable[[dict], str]) -> None:
    """The result: one JSON object on stdout with --json, else readable lines."""
    print(json.dumps(result, indent=2) if as_json else lines(result))


# --- commands ------------------------------------------------------------------------------------

def cmd_models(args: argparse.Namespace) -> None:
    from .catalog import load

    rows = load()  # measured from the real models and stored (torch-free); tests keep it current

    def table(result: dict) -> str:
        head = f"{'model':18} {'dataset':8} {'params':>10} {'MACs':>12}  paper"
        body = [f"{r['name']:18} {r['dataset']:8} {r['params']:>10,} {r['macs']:>12,}  {r['paper']}"
                for r in result["models"]]
        return "\n".join([head, *body, "(MACs: multiply-accumulates for one image; FLOPs = 2 x MACs)"])

    _emit({"models": rows}, args.json, table)


def cmd_train(args: argparse.Namespace) -> None:
    from .api import train

    overrides = given(args, TrainConfig)
    result = train(args.model, args.dataset, args.out, overrides=overrides, device=args.device,
                   data_dir=args.data_dir, subset=args.subset, bn_init=args.bn_init, augment=args.augment,
                   normalize=args.normalize, verbose=not args.quiet)
    _emit(result, args.json, lambda r: (f"{r['model']} on {r['dataset']}: test accuracy {pct(r['test_accuracy'])}, "
                                        f"val accuracy {pct(r['val_accuracy'])}, {r['epochs_run']} epochs in "
                                        f"{r['train_seconds']:.0f}s -> {r['out']}"))


def cmd_eval(args: argparse.Namespace) -> None:
    from .api import evaluate_path

    result = evaluate_path(args.path, dataset=args.dataset, split=args.split, device=args.device,
                           data_dir=args.data_dir)
    _emit(result, args.json, lambda r: f"{r['path']}: {r['split']} accuracy {pct(r['accuracy'])} "
                                       f"(loss {r['loss']:.4f}, {r['images']} images)")


FIXED_ONLY = tuple(f.name for f in dataclasses.fields(CompressConfig)
                   if f.name not in {g.name for g in dataclasses.fields(SearchConfig)} and "help" in f.metadata)


def _search_config(args: argparse.Namespace, strategy: str) -> SearchConfig:
    return SearchConfig(strategy=strategy, **given(args, SearchConfig))


def _search_line(r: dict) -> str:
    s = r["search"]
    return (f"{r['file']}: {r['file_bytes']:,} bytes ({r['compression_ratio']:.1f}x smaller than dense fp32), "
            f"test accuracy {pct(r['test_accuracy'])}, val {pct(r['val_accuracy'])} "
            f"(target {pct(r['target_accuracy'])}), "
            f"channels {r['knobs']['channel_ratio']:g} sparsity {r['knobs']['sparsity']:g}; search {s['strategy']}: "
            f"{s['candidates']} candidates, {s['epochs']:g} epochs, {s['wall_seconds']:.0f}s")


def _estimate_lines(r: dict) -> str:
    def minutes(epochs: float, seconds: float) -> str:
        return f"{epochs:g} epochs = {epochs * seconds / 60:.1f} min"

    bound = "exactly" if r["exact"] else "at most"
    rec = r["recovery_epochs"]
    lines = [f"dry run: {r['model']} on {r['dataset']}, {r['strategy']}, target val accuracy "
             f"{pct(r['target_accuracy'])} "
             f"(baseline {pct(r['baseline_val_accuracy'])}); nothing trained or written",
             f"training speed here: {r['images_per_second']:.0f} images/s ({r['threads']} threads): a proxy epoch "
             f"({r['proxy_images']:,} images) {r['proxy_epoch_seconds']:.0f} s, a full-data epoch "
             f"({r['full_images']:,}) {r['full_epoch_seconds']:.0f} s",
             f"proxy search: {bound} {r['candidates']} candidates, {bound} "
             f"{minutes(r['proxy_epochs'], r['proxy_epoch_seconds'])} (the strategy's rules; --max-epochs caps it)",
             "winner's polish (centroids, bits ladder): at most "
             f"{minutes(r['polish_epochs'], r['proxy_epoch_seconds'])}"]
    if rec["at_most"]:
        lines.append(f"recovery: at least {minutes(rec['at_least'], r['full_epoch_seconds'])}, at most "
                     f"{minutes(rec['at_most'], r['full_epoch_seconds'])} on the whole training split")
    return "\n".join(lines)


def cmd_compress(args: argparse.Namespace) -> None:
    if args.target_accuracy is not None or args.max_drop is not None:
        from .api import search

        if fixed := [f"--{k.replace('_', '-')}" for k in FIXED_ONLY if getattr(args, k) is not None]:
            raise SlimzipError(f"{', '.join(fixed)}: chosen by the search; "
                               "drop them or drop --target-accuracy/--max-drop")
        cfg = _search_config(args, args.search or SearchConfig.strategy)
        if args.dry_run:
            from .api.searching import estimate

            _emit(estimate(args.checkpoint, cfg, target_accuracy=args.target_accuracy, max_drop=args.max_drop,
                           device=args.device, data_dir=args.data_dir), args.json, _estimate_lines)
            return
        result = search(args.checkpoint, args.out, cfg,
                        target_accuracy=args.target_accuracy, max_drop=args.max_drop, run_dir=args.run_dir,
                        device=args.device, data_dir=args.data_dir, verbose=not args.quiet, workers=args.workers,
                        ray_address=args.ray_address, seed=args.seed)
        _emit(result, args.json, _search_line)
        return
    from .api import compress

    if args.search is not None or args.dry_run:
        raise SlimzipError(f"{'--search' if args.search is not None else '--dry-run'} needs a target: "
                           "--target-accuracy A or --max-drop P")
    cfg = CompressConfig(**given(args, CompressConfig))
    result = compress(args.checkpoint, args.out, cfg, device=args.device, data_dir=args.data_dir,
                      verbose=not args.quiet, seed=args.seed)
    _emit(result, args.json, lambda r: (f"{r['file']}: {r['file_bytes']:,} bytes ({r['compression_ratio']:.1f}x "
                                        f"smaller than {r['dense_fp32_bytes']:,} dense fp32), test accuracy "
                                        f"{pct(r['test_accuracy'])}, val {pct(r['val_accuracy'])} "
                                        f"(baseline val {pct(r['baseline_val_accuracy'])}), "
                                        f"sparsity {r['sparsity']:.4f}"))


def cmd_compare_search(args: argparse.Namespace) -> None:
    from .api import compare_search

    strategies = tuple(s for s in args.strategies.split(",") if s)
    ablation = None if args.ablation == "none" else args.ablation
    cfg = _search_config(args, strategies[0] if strategies else "heuristic")
    result = compare_search(args.checkpoint, args.out, cfg,
                            strategies=strategies, ablation=ablation, budget_ratio=args.budget_ratio,
                            target_accuracy=args.target_accuracy,
                            max_drop=args.max_drop, device=args.device, data_dir=args.data_dir, verbose=not args.quiet,
                            workers=args.workers, ray_address=args.ray_address)

    def table(r: dict) -> str:
        head = f"{'':28} {'file bytes':>11} {'ratio':>6} {'val':>7} {'test':>7} {'knobs (c, s)':>16} {'cands':>6} " \
               f"{'epochs':>7} {'seconds':>8}"
        lines = [f"target val accuracy {pct(r['target_accuracy'])}", head]
        for label, rows in (("", r["strategies"]), ("ablation: ", r["ablation"])):
            for name, x in rows.items():
                k, c = x["knobs"], x["search"]
                lines.append(f"{label + name:28} {x['file_bytes']:>11,} {x['compression_ratio']:>5.1f}x "
                             f"{pct(x['val_accuracy']):>7} {pct(x['test_accuracy']):>7} "
                             f"{k['channel_ratio']:>7.4g}, {k['sparsity']:<7.4g} {c['candidates']:>6} "
                             f"{c['epochs']:>7.2f} {c['wall_seconds']:>8.0f}")
        for pair, x in r["ratios"].items():
            lines.append(f"{pair}: size {x['file_bytes']:.3f}, epochs {x['epochs']:.2f}, wall {x['wall_seconds']:.2f}")
        return "\n".join(lines)

    _emit(result, args.json, table)


def cmd_inspect(args: argparse.Namespace) -> None:
    from .api import inspect_file

    def head(r: dict) -> str:
        return f"{r['file']}: {r['architecture']} ({r['dataset'] or 'no dataset recorded'}), {r['file_bytes']:,} bytes"

    def components(r: dict) -> str:
        parts = r["components"]
        return "components: " + ", ".join(f"{k} {v:,}" for k, v in parts.items()) + f" = {sum(parts.values()):,} bytes"

    def layers(r: dict) -> str:
        lines = [head(r), f"{'layer':28} {'kind':14} {'width':>13} {'weights':>9} {'kept':>9} {'bits':>4} {'bytes':>9}"]
        for x in r["layers"]:
            width = "" if x["width"] is None else str(x["width"])
            if x["width_before"] is not None and x["width_before"] != x["width"]:
                width = f"{x['width_before']} -> {width}"
            lines.append(f"{x['layer']:28} {x['kind']:14} {width:>13} {x['weights']:>9,} {x['kept']:>9,} "
                         f"{'' if x['bits'] is None else x['bits']:>4} {x['bytes']:>9,}")
        return "\n".join([*lines, components(r) + " (per tensor, with coded bits and entropies: --tensors)"])

    def table(r: dict) -> str:
        lines = [head(r), f"{'tensor':28} {'weights':>9} {'kept':>7} {'bits':>4} {'code b/w':>8} {'(H)':>6} "
                          f"{'index b/w':>9} {'(H)':>6} {'bytes':>9}"]
        for t in r["tensors"]:
            if t["encoding"] == "shared":
                lines.append(f"{t['name']:28} {t['weights']:>9,} {t['kept']:>7.2%} {t['bits']:>4} "
                             f"{t['code_bits']:>8.2f} {t['code_entropy']:>6.2f} {t['index_bits']:>9.2f} "
                             f"{t['index_entropy']:>6.2f} {t['bytes']:>9,}")
            else:
                kind = "const" if t["encoding"] == "constant" else "raw"
                lines.append(f"{t['name']:28} {t['weights']:>9,} {kind:>7} {t['dtype']:>39} {t['bytes']:>9,}")
        lines.append("b/w: coded bits per kept weight; (H): the stream's empirical entropy, in the same unit")
        return "\n".join([*lines, components(r)])

    result = inspect_file(args.file)
    _emit(result, args.json, table if args.tensors or not result["layers"] else layers)


def cmd_export(args: argparse.Namespace) -> None:
    from .api import export

    if bool(args.onnx) == bool(args.out):
        raise SlimzipError("give the file to write with --out (or --onnx PATH for a dense fp32 ONNX)")
    fmt = "onnx" if args.onnx else args.format
    c = fmt.startswith("c")
    split = args.split or ("auto" if args.check and c else None)
    result = export(args.file, args.onnx or args.out, format=fmt, check=not c or args.check,
                    check_images=args.check_images, split=split, data_dir=args.data_dir)
    _emit(result, args.json, export_lines)


def export_lines(r: dict) -> str:
    """What an export wrote and how its check went, in a few lines."""
    head = f"{r['file']}: {r['model']} ({r['dataset']}) as {r['format']}, {r['params']:,} params"
    sizes = ([f"weights {r['weight_bytes']:,} B", f"arena {r['arena_bytes']:,} B"] if r["format"].startswith("c")
             else [f"{r['file_bytes']:,} B"])
    if r.get("source_bytes"):
        sizes.append(f"source .slz {r['source_bytes']:,} B")
    lines = [head + ": " + ", ".join(sizes)]
    if "flash_bytes" in r:
        lines.append(f"compiled ({r['cflags']}): flash {r['flash_bytes']:,} B, RAM {r['ram_bytes']:,} B "
                     f"(stack bound {r['stack_bytes']:,} B)")
    c = r.get("check")
    if c:
        where = f"{c['images']:,} {r['split']} images" if r.get("split") else f"{c['images']} random inputs"
        text = (f"against PyTorch on {where}: same class {100 * c['same_argmax']:.2f}%, "
                f"max |logit diff| {c['max_abs_diff']:.2g}, {1e3 * r['seconds_per_image']:.3f} ms/image")
        if "accuracy" in c:
            text += f"; accuracy {pct(c['accuracy'])} (PyTorch {pct(c['pytorch_accuracy'])})"
        lines.append(text)
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> None:
    from .api import report

    r = report(args.run, args.out)
    if r["plots"] == 0 and any(s["plot"] for s in r["sections"]):
        log("slimzip: no plots (matplotlib is not installed: pip install 'slimzip[report]'); tables only")
    _emit(r, args.json, lambda r: f"{r['text']}\n{r['kind']} report: {r['file']} ({r['plots']} plots)")


def cmd_prune_channels(args: argparse.Namespace) -> None:
    from .api import prune_channels

    cfg = PruneConfig(**given(args, PruneConfig))
    r = prune_channels(args.checkpoint, args.out, cfg, seed=args.seed, device=args.device, data_dir=args.data_dir,
                       verbose=not args.quiet)

    def table(r: dict) -> str:
        b, a = r["before"], r["after"]
        lines = [f"{r['model']}: params {b['cost']['params']:,} -> {a['cost']['params']:,} "
                 f"(-{r['params_removed']:.1%}), MACs {b['cost']['macs']:,} -> {a['cost']['macs']:,} "
                 f"(-{r['macs_removed']:.1%})",
                 f"val accuracy {pct(b['val_accuracy'])} -> {pct(a['val_accuracy_before_finetune'])} pruned -> "
                 f"{pct(a['val_accuracy'])} after {r['finetune_epochs']} fine-tune epochs; "
                 f"test {pct(a['test_accuracy'])}",
                 f"{'layer':28} {'width before':>12} {'after':>6}"]
        lines += [f"{k:28} {v:>12} {a['widths'].get(k, 0):>6}" for k, v in b["widths"].items()]
        lines += [f"pass {p['pass']}: val {pct(p['val_accuracy_before_finetune'])} pruned -> {pct(p['val_accuracy'])}, "
                  f"widths {', '.join(str(p['widths'].get(k, 0)) for k in b['widths'])}" for p in r.get("passes", [])]
        return "\n".join(lines)

    _emit(r, args.json, table)


def cmd_dropnet(args: argparse.Namespace) -> None:
    from .api import dropnet

    overrides = given(args, TrainConfig, DROPNET_TRAINING)
    r = dropnet(args.model, args.dataset, args.out, metric=args.metric, fraction=args.fraction,
                stop_remaining=args.stop_remaining, kappa=args.kappa, reset=args.reset,
                oracle_images=args.oracle_images, init=args.init, overrides=overrides,
                seed=args.seed, subset=args.subset, device=args.device, data_dir=args.data_dir,
                verbose=not args.quiet)

    def table(r: dict) -> str:
        lines = [f"DropNet {r['metric']} on {r['model']} ({r['dataset']})",
                 f"{'cycle':>5} {'remaining':>10} {'val acc':>8} {'test acc':>9} {'params':>9}"]
        lines += [f"{c['cycle']:>5} {c['remaining']:>10.1%} {pct(c['val_accuracy']):>8} {pct(c['test_accuracy']):>9} "
                  f"{c['params']:>9,}" for c in r["cycles"]]
        c = r["checkpoint"]
        lines.append(f"checkpoint: cycle {c['cycle']} ({c['remaining']:.1%} of units, test {pct(c['test_accuracy'])}) "
                     f"-> {r['out']} (eval, compress, export and prune-channels take it)")
        return "\n".join(lines)

    _emit(r, args.json, table)


# --- parser --------------------------------------------------------------------------------------

DROPNET_TRAINING = ("epochs", "batch_size", "lr", "patience", "restore_best", "shuffle")  # the knobs dropnet takes


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object with the results to stdout")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    if data:
        p.add_argument("--data-dir", help="dataset folder (default: $SLIMZIP_DATA, then ~/.cache/slimzip/data)")
        p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-accuracy", type=number, help="search: the validation accuracy to meet, e.g. 0.99")
    p.add_argument("--max-drop", type=number, help="search: target = baseline val accuracy minus P points")


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model; resumes when run again with the same --out")
    p.add_argument("--model", required=True, help="a name from `slimzip models`, your own PATH.py:FACTORY or "
                   "package.module:FACTORY (called with num_classes=), or timm:NAME where timm imports")
    p.add_argument("--dataset", help="mnist, cifar10, cifar100 (default: the model's own), or imagefolder:DIR "
                   "(one sub-folder per class; DIR/train + DIR/val [+ DIR/test], or split 80/10/10)")
    p.add_argument("--out", required=True, help="run directory: checkpoint, config, metrics")
    add_options(p, [("mnist", RECIPES["mnist"]), ("cifar10/100", RECIPES["cifar10"]), ("other data", DEFAULT_RECIPE)])
    p.add_argument("--bn-init", type=number, help="initial BN scale (network slimming uses 0.5)")
    p.add_argument("--subset", type=positive_int, help="train on the first N training images only")
    augment = p.add_mutually_exclusive_group()
    augment.add_argument("--augment", dest="augment", action="store_true", default=None,
                         help="random crops inside a zero pad, and flips: CIFAR pad 4 + flip (default on), MNIST "
                              "shifts of up to 2 pixels, no flip (default off), image folders pad 4 + flip (off)")
    augment.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                         help="no crop/flip even for CIFAR")
    p.add_argument("--normalize", default="standard", help="standard (mean/std) or unit (pixels in [0, 1])")
    _common(p)
    p.set_defaults(func=cmd_train)


def _prune_parser(sub) -> None:
    p = sub.add_parser("prune-channels", help="remove channels (physically) from a checkpoint, then fine-tune")
    p.add_argument("checkpoint", help="a checkpoint directory (from `slimzip train` or `prune-channels`)")
    p.add_argument("--out", required=True, help="a new directory for the narrowed checkpoint")
    p.add_argument("--ratio", dest="channel_ratio", metavar="RATIO", type=number, required=True,
                   help=PruneConfig.__dataclass_fields__["channel_ratio"].metadata["help"])
    add_options(p, [("", PruneConfig)], [f.name for f in dataclasses.fields(PruneConfig) if f.name != "channel_ratio"])
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_prune_channels)


def _dropnet_parser(sub) -> None:
    p = sub.add_parser("dropnet", help="DropNet: train, drop the least active units, repeat (resumable)")
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", help="default: the model's own")
    p.add_argument("--out", required=True, help="run directory: cycles.jsonl, per-cycle weights, summary")
    p.add_argument("--metric", default="min_layer",
                   help="min, min_layer, max, max_layer, random, random_layer, apoz, apoz_layer, oracle (small nets)")
    p.add_argument("--fraction", type=number, default=0.2, help="of the remaining units dropped per cycle")
    p.add_argument("--stop-remaining", type=number, default=0.1, help="stop at this fraction of units left")
    p.add_argument("--kappa", type=number, default=0.0, help="stop once val accuracy < kappa x the first cycle's")
    p.add_argument("--reset", default="init", help="init (theta0, DropNet's default), none, or random")
    p.add_argument("--init", default="torch",
                   help="theta0: torch (PyTorch's default init) or glorot (Keras's, which DropNet's code used)")
    p.add_argument("--oracle-images", type=positive_int, default=5000,
                   help="oracle metric: training images the loss is measured on (default 5000)")
    from .config import DROPNET_RECIPE

    add_options(p, [("DropNet's", DROPNET_RECIPE)], DROPNET_TRAINING)
    p.add_argument("--subset", type=positive_int, help="train on the first N training images only")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_dropnet)


def _compress_parser(sub) -> None:
    p = sub.add_parser("compress", help="the main job: the smallest .slz file at a target accuracy (or fixed knobs)")
    p.add_argument("checkpoint", help="a checkpoint directory (from `slimzip train`)")
    p.add_argument("--out", required=True, help="the .slz file to write")
    _target_options(p)
    p.add_argument("--search", choices=sorted(STRATEGIES),
                   help=f"the search strategy (default {SearchConfig.strategy}); needs --target-accuracy or --max-drop")
    p.add_argument("--run-dir", help="the search's run directory (default: OUT with .run for .slz)")
    p.add_argument("--seed", type=int, help="data order and initialisation (default: the checkpoint's own)")
    p.add_argument("--dry-run", action="store_true", help="search: check every setting and the data, measure the "
                   "training speed and print what the search will cost (bounds on epochs and time); run nothing")
    sources = [("search", SearchConfig), ("fixed knobs", CompressConfig)]
    for concern, names in COMPRESS_GROUPS.items():
        add_options(p.add_argument_group(concern), sources, names)
    add_options(p.add_argument_group("search: the walk"), sources,
                [f.name for f in dataclasses.fields(SearchConfig)
                 if f.name not in {n for names in COMPRESS_GROUPS.values() for n in names}])
    _parallel_options(p.add_argument_group("parallel search"))
    _common(p)
    p.set_defaults(func=cmd_compress)


COMPRESS_GROUPS = {  # compress's options by concern (the search's others: "search: the walk")
    "fixed knobs (no target)": ["channel_ratio", "sparsity", "retrain_epochs"],
    "pruning": ["scope", "channel_scope", "prune_pattern", "prune_steps", "lr", "centroid_epochs"],
    "the file's coding": ["bits_conv", "bits_fc", "index_bits_conv", "index_bits_fc", "coder", "raw_dtype", "raw_bits",
                          "fold_bn", "share_rate", "min_bits", "bits_ladder", "max_share_rate", "min_raw_bits"],
    "search: budgets (a file over one is infeasible)": ["objective", "max_bytes", "max_params", "max_macs", "max_flash",
                                                         "max_ram", "max_latency_ms"],
    "search: recovery (on the whole training split)": ["recover_epochs", "recover_rounds", "recover_step_epochs",
                                                       "recover_lr", "recover_distill", "compress_penalty"],
}


def _parallel_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=positive_int, default=1,
                   help="search: run independent candidates (the grid's, frontier's screens and with --speculate "
                        "on its moves' alternatives) on N local Ray workers; compare-search: its searches at once, "
                        "one per worker (default 1: in this process, no Ray; needs pip install -e \".[ray]\")")
    p.add_argument("--ray-address", help="search: run candidates on an existing Ray cluster (e.g. 10.0.0.5:6379)")


def _compare_parser(sub) -> None:
    p = sub.add_parser("compare-search", help="run heuristic, grid and frontier (and the ablation) on one checkpoint")
    p.add_argument("checkpoint", help="a checkpoint directory (from `slimzip train`)")
    p.add_argument("--out", required=True, help="a directory: one run directory and .slz file per search")
    _target_options(p)
    add_options(p, [("search", SearchConfig)])
    _parallel_options(p)
    p.add_argument("--strategies", default="heuristic,grid,frontier", help="comma-separated (default: all three)")
    p.add_argument("--budget-ratio", type=number,
                   help="also run frontier with a budget of R x the heuristic's epochs ('frontier-budget')")
    p.add_argument("--ablation", default="frontier",
                   help="strategy for the structured-only / unstructured-only / combined table, or none")
    _common(p)
    p.set_defaults(func=cmd_compare_search)


def _file_parsers(sub) -> None:
    p = sub.add_parser("inspect", help="per-layer (graph order: width before -> after, kept weights, bits, bytes) "
                                       "and per-component bytes of a .slz file")
    p.add_argument("file")
    p.add_argument("--tensors", action="store_true", help="one row per tensor, with coded bits per kept weight and "
                                                          "the streams' entropies")
    _common(p, data=False)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("export", help="write a .slz file's model (or a checkpoint's) as ONNX (fp32 or int8) or "
                                      "C99, checked against PyTorch before it is written")
    p.add_argument("file", help="a .slz file or a checkpoint directory")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="onnx",
                   help="onnx: dense fp32; onnx-int8: int8 weights and activations (onnxruntime's static "
                        "quantization, calibrated on training images); tflite-int8: int8 TFLite (litert-torch, needs "
                        "slimzip[tflite]); c: NAME.c + NAME.h, C99 keeping the file's "
                        "codebooks, codes and sparse positions; c-dense: the same C with float32 weights, for comparison "
                        "(default onnx)")
    p.add_argument("--out", help="the file to write: .onnx, or NAME.c (NAME.h is written beside it)")
    p.add_argument("--onnx", metavar="PATH", help="shorthand for --format onnx --out PATH")
    p.add_argument("--check", action="store_true",
                   help="c: compile with cc -std=c99 -O2 -Wall -Wextra -Werror, run on images, compare with "
                        "PyTorch; reports flash, RAM and latency (ONNX files are always checked)")
    p.add_argument("--split", choices=["test", "val"],
                   help="check on this split's images (default with --check: test, or random inputs when the file names "
                        "no dataset; ONNX: random inputs)")
    p.add_argument("--check-images", type=positive_int,
                   help="images to check (default: the whole split; 64 random inputs without a split)")
    _common(p, data=False)
    p.add_argument("--data-dir", help="dataset folder for --split (default: $SLIMZIP_DATA, then ~/.cache/slimzip/data)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="tables and plots of a run directory, as text and one HTML page")
    p.add_argument("run", help="a directory from train, prune-channels, dropnet, compress --search or compare-search")
    p.add_argument("--out", help="the HTML file (default: RUN/report.html)")
    _common(p, data=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("eval", help="accuracy of a checkpoint directory or a .slz file")
    p.add_argument("path", help="a checkpoint directory (from `slimzip train`) or a .slz file")
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--split", default="test", choices=["test", "val"])
    _common(p)
    p.set_defaults(func=cmd_eval)


def build_parser() -> Parser:
    parser = Parser(prog="slimzip", description="Find the smallest CNN that meets an accuracy target.")
    parser.add_argument("--version", action="version", version=f"slimzip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("models", help="list the registered models with params and MACs")
    _common(p, data=False)
    p.set_defaults(func=cmd_models)
    for add in (_train_parser, _prune_parser, _dropnet_parser, _compress_parser, _compare_parser, _file_parsers):
        add(sub)
    return parser


ENVIRONMENT = {errno.EACCES: "permission denied", errno.EROFS: "read-only file system", errno.ENOSPC: "disk full",
               errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "not a directory", errno.EISDIR: "is a directory",
               errno.ENAMETOOLONG: "file name too long"}


def _environment_error(e: OSError) -> str | None:
    """A one-line account of an error the machine gave (no space, read-only, permissions), or None."""
    if isinstance(e, BrokenPipeError):
        return None
    if e.errno in ENVIRONMENT:
        return f"{e.filename or 'writing'}: {ENVIRONMENT[e.errno]}"
    if "No space left" in str(e):
        return f"disk full ({e})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except SlimzipError as e:
        print(f"slimzip: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except FloatingPointError as e:  # diverged training: a setting's fault, not a bug
        print(f"slimzip: error: {e}; try a lower --lr", file=sys.stderr)
        return 2
    except OSError as e:
        if (why := _environment_error(e)) is None:
            raise
        print(f"slimzip: error: {why}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log("slimzip: interrupted; run the same command again to resume")
        return INTERRUPTED
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
