"""The accuracy-target search and the side-by-side comparison of strategies."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..checkpoint import atomic_write_json, load_checkpoint
from ..errors import SlimzipError, check_range
from ..progress import log
from ..models.user import is_user_source
from ..summaries import CompareSummary, SearchSummary
from .common import _checkpoint_loaders, _checkpoint_recipe, _file_data, _slz_path, load_teacher, resolve_device

if TYPE_CHECKING:
    from ..searcher import SearchConfig


def search_defaults() -> dict:
    """What a search run directory made before a setting existed implicitly used: its default, except
    that files stored BatchNorm unfolded then (so such a run does not resume into the new encoder) and
    walks from a recovered model fine-tuned on the proxy's images (no recovery rungs)."""
    from ..searcher import SearchConfig

    return {"search": {**dataclasses.asdict(SearchConfig()), "fold_bn": False, "recover_step_epochs": 0}}


def search(checkpoint: str | os.PathLike, out: str | os.PathLike, cfg: "SearchConfig", *,
           target_accuracy: float | None = None, max_drop: float | None = None,
           run_dir: str | os.PathLike | None = None, device: str = "cpu", data_dir: str | None = None,
           verbose: bool = True, workers: int = 1, ray_address: str | None = None,
           seed: int | None = None) -> SearchSummary:
    """Find the smallest .slz file whose decoded model meets a validation-accuracy target, by searching
    channel ratio x weight sparsity with ``cfg.strategy``; write it to ``out``. The run directory
    (default: ``out`` with ``.run`` for ``.slz``) holds the journal; the same command resumes a killed run.
    The winner's test accuracy is measured once, on the model decoded from ``out``."""
    from .. import core

    cfg.validate()  # before the output path is checked (``_prepared`` checks it again, for ``estimate``)
    out = _slz_path(out)
    run = Path(run_dir) if run_dir else out.with_suffix(".run")
    dev = resolve_device(device)
    model, meta, train_cfg, loaders, full_train = _prepared(checkpoint, cfg, dev, data_dir, seed)
    teacher = load_teacher(cfg.teacher, meta.get("dataset"), dev)
    t0 = time.perf_counter()
    result = core.search(model, loaders, None, config=cfg, train_config=train_cfg, out=out, run_dir=run, device=dev,
                         verbose=verbose, spec=None if is_user_source(meta["model"]["name"]) else meta["model"],
                         identity={"checkpoint": str(Path(checkpoint).resolve()),
                                   **({"seed": seed} if seed is not None else {})}, seed=seed,
                         file_meta={"dataset": meta["dataset"], **_file_data(meta)}, defaults=search_defaults(),
                         target_accuracy=target_accuracy, max_drop=max_drop, workers=workers, ray_address=ray_address,
                         full_train=full_train, teacher=teacher)
    summary: SearchSummary = {**result.summary(), "file": str(out),
               "baseline_test_accuracy": meta.get("metrics", {}).get("test_accuracy"), "candidates": result.candidates,
               "run_dir": str(run), "wall_seconds_this_call": time.perf_counter() - t0}
    atomic_write_json(run / "summary.json", summary)  # the search's RunDir was claimed by core.search
    return summary


def estimate(checkpoint: str | os.PathLike, cfg: "SearchConfig", *, target_accuracy: float | None = None,
             max_drop: float | None = None, device: str = "cpu", data_dir: str | None = None) -> dict:
    """What ``search`` with these settings will cost, without running it (``compress --dry-run``): every
    knob and the data checked, the target resolved, the training speed measured on a few batches, and
    the strategy's bounds on epochs (``searcher.estimate``) turned into time on this machine."""
    import torch

    from .. import core
    from ..searcher.estimate import search_bounds
    from ..trainer import evaluate
    from ..unstructured import prunable_weights

    dev = resolve_device(device)
    model, meta, train_cfg, loaders, full_train = _prepared(checkpoint, cfg, dev, data_dir)
    core._teacher(load_teacher(cfg.teacher, meta.get("dataset"), dev), cfg, model, loaders, dev)  # checked too
    baseline = evaluate(model, loaders.val)[1]
    target = core._target(baseline, target_accuracy, max_drop)
    per_image = _seconds_per_image(model, loaders.train, train_cfg)
    proxy_images = loaders.train.num_samples
    full_images = (full_train or loaders.train).num_samples
    bounds = search_bounds(cfg, layers=len(prunable_weights(model)))
    proxy_s = per_image * proxy_images
    return {"checkpoint": str(checkpoint), "model": meta["model"]["name"], "dataset": meta.get("dataset"),
            "baseline_val_accuracy": baseline, "target_accuracy": target, "threads": torch.get_num_threads(),
            "images_per_second": 1 / per_image, "proxy_images": proxy_images, "full_images": full_images,
            "proxy_epoch_seconds": proxy_s, "full_epoch_seconds": per_image * full_images, **bounds}


def _prepared(checkpoint: str | os.PathLike, cfg: "SearchConfig", device, data_dir: str | None,
              seed: int | None = None) -> tuple:
    """What a search of a checkpoint starts from (``cfg`` checked first): its model, metadata, recipe
    (with ``seed``, which sets the loaders' order too), the proxy's loaders and the whole training split."""
    cfg.validate()
    model, meta = load_checkpoint(checkpoint, device)
    train_cfg = _checkpoint_recipe(meta)
    if seed is not None:
        train_cfg = dataclasses.replace(train_cfg, seed=seed)
    return (model, meta, train_cfg, *_search_loaders(meta, train_cfg, cfg, device, data_dir))


def _seconds_per_image(model, train, train_cfg) -> float:
    """Training seconds per image on this machine: six batches of ``train`` timed after a one-batch
    warm-up, each on a copy of ``model``."""
    import copy

    from ..trainer import fit

    images = min(train.num_samples, 6 * train_cfg.batch_size)
    tune = dataclasses.replace(train_cfg, epochs=1, schedule="constant", patience=0, warmup_epochs=0)
    fit(copy.deepcopy(model), train.slice(0, min(train_cfg.batch_size, images)), None, tune, verbose=False)
    t0 = time.perf_counter()
    fit(copy.deepcopy(model), train.slice(0, images), None, tune, verbose=False)
    return (time.perf_counter() - t0) / images


def _search_loaders(meta: dict, train_cfg, cfg: "SearchConfig", device, data_dir: str | None):
    """The proxy's loaders (training images cut to ``train_subset``) and the whole training split the
    checkpoint was trained on (recovery trains on it; the proxy's cost is counted in its epochs) or None
    when the proxy already has all of it."""
    if cfg.train_subset is None:
        return _checkpoint_loaders(meta, train_cfg.batch_size, device, data_dir, train_cfg.seed), None
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, device, data_dir, train_cfg.seed)
    if cfg.train_subset >= loaders.train.num_samples:
        return loaders, None
    return dataclasses.replace(loaders, train=loaders.train.slice(0, cfg.train_subset)), loaders.train


ABLATIONS = {"structured only": {"max_sparsity": 0.0, "margin": 0.0},
             "unstructured only": {"max_channel_ratio": 0.0, "margin": 0.0},
             "combined": {}}


def compare_search(checkpoint: str | os.PathLike, out: str | os.PathLike, cfg: "SearchConfig", *,
                   strategies: tuple[str, ...] = ("heuristic", "grid", "frontier"), ablation: str | None = "frontier",
                   budget_ratio: float | None = None, target_accuracy: float | None = None,
                   max_drop: float | None = None, device: str = "cpu", data_dir: str | None = None,
                   verbose: bool = True, workers: int = 1, ray_address: str | None = None) -> CompareSummary:
    """Run several strategies (and the structured-only / unstructured-only / combined ablation with one
    strategy) on the same checkpoint and target; results and cost ratios side by side. Every search has
    its own run directory under ``out``, so each is resumable and none reuses another's candidates.
    ``budget_ratio`` R adds 'frontier-budget': frontier with ``max_epochs`` = R x the heuristic's epochs
    (does frontier at a fraction of the heuristic's cost find a file as small?)."""
    out = Path(out)
    for name in (*strategies, *([ablation] if ablation else [])):  # every setting checked before any search runs
        dataclasses.replace(cfg, strategy=name).validate()
    if budget_ratio is not None:
        check_range("budget ratio", budget_ratio, 0.01, 100.0)
        if "heuristic" not in strategies:
            raise SlimzipError("--budget-ratio sets frontier's budget from the heuristic's cost: include heuristic")

    def job(name: str, run_cfg: "SearchConfig") -> tuple:
        return search, dict(checkpoint=checkpoint, out=out / f"{name}.slz", cfg=run_cfg,
                            target_accuracy=target_accuracy, max_drop=max_drop, run_dir=out / name, device=device,
                            data_dir=data_dir, verbose=verbose and workers == 1 and not ray_address)

    ready = {name: job(name, dataclasses.replace(cfg, strategy=name)) for name in strategies}
    for label, overrides in (ABLATIONS.items() if ablation else ()):
        if not (label == "combined" and ablation in strategies):  # else the strategy's own run is the row
            ready[_ablation_run(ablation, label)] = job(_ablation_run(ablation, label),
                                                         dataclasses.replace(cfg, strategy=ablation, **overrides))

    def then(name: str, result: SearchSummary) -> dict:
        """frontier-budget starts when the heuristic's cost is known."""
        if name != "heuristic" or budget_ratio is None:
            return {}
        budget = round(budget_ratio * result["search"]["epochs"], 6)
        return {"frontier-budget": job("frontier-budget", dataclasses.replace(cfg, strategy="frontier",
                                                                             max_epochs=budget))}

    runs = _run_jobs(ready, then, workers, ray_address, verbose, gpus=resolve_device(device).type == "cuda")
    order = [*strategies, "frontier-budget"]
    ablations = {label: runs[ablation if label == "combined" and ablation in strategies
                             else _ablation_run(ablation, label)] for label in (ABLATIONS if ablation else ())}
    runs = {name: runs[name] for name in order if name in runs}
    result: CompareSummary = {"checkpoint": str(checkpoint), "target_accuracy": next(iter(runs.values()))["target_accuracy"]
              if runs else None, "strategies": {k: _brief(v) for k, v in runs.items()},
              "ratios": _ratios(runs), "ablation": {k: _brief(v) for k, v in ablations.items()},
              "ablation_strategy": ablation, "budget_ratio": budget_ratio}
    atomic_write_json(out / "compare.json", result)
    return result


def _ablation_run(strategy: str, label: str) -> str:
    return f"ablation-{strategy}-{label.split()[0]}"


def _run_jobs(ready: dict[str, tuple], then: Callable[[str, SearchSummary], dict[str, tuple]], workers: int,
              ray_address: str | None, verbose: bool, gpus: bool = False) -> dict[str, SearchSummary]:
    """Every search, one after another in this process; or with ``workers`` > 1 (or a cluster) each on a
    Ray worker at once (in-process there: the same candidates as one after another, on that worker's
    share of the threads, or one GPU each with ``gpus``)."""
    check_range("workers", workers, 1, 4096)
    if workers == 1 and not ray_address:
        results, queue = {}, dict(ready)
        while queue:
            name, (fn, kwargs) = next(iter(queue.items()))
            del queue[name]
            results[name] = fn(**kwargs)
            queue.update(then(name, results[name]))
        return results
    from ..searcher.parallel import RayPool

    pool = RayPool(None, workers, ray_address, gpus=gpus)

    def done(name: str, r: SearchSummary) -> None:
        log(f"{name} finished: {r['file_bytes']:,} B, val {r['val_accuracy']:.4f}, {r['search']['epochs']:g} epochs",
            verbose=verbose)
    try:
        log(f"running {len(ready)} searches on {pool.width} Ray workers ({pool.threads} thread"
            f"{'s' if pool.threads > 1 else ''} each)", verbose=verbose)
        return pool.jobs(ready, then, done)
    finally:
        pool.close()


def _brief(r: dict) -> dict:
    keep = ("file_bytes", "compression_ratio", "val_accuracy", "test_accuracy", "params", "macs", "knobs", "search",
            "file")
    return {k: r[k] for k in keep}


def _ratios(runs: dict[str, dict]) -> dict:
    """Cost and size of each strategy against each other one: ``a/b`` = a's number over b's."""
    out = {}
    for a in runs:
        for b in runs:
            if a != b:
                ra, rb = runs[a], runs[b]
                out[f"{a}/{b}"] = {"file_bytes": ra["file_bytes"] / rb["file_bytes"],
                                   "epochs": ra["search"]["epochs"] / max(rb["search"]["epochs"], 1e-3),
                                   "wall_seconds": ra["search"]["wall_seconds"]
                                   / max(rb["search"]["wall_seconds"], 1e-9),
                                   "candidates": ra["search"]["candidates"] / max(rb["search"]["candidates"], 1)}
    return out
