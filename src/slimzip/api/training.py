"""Training, listing and evaluating models."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from ..checkpoint import save_checkpoint
from ..data import create_loaders, get_dataset_spec
from ..data.folder import absolute, is_image_folder
from ..errors import SlimzipError
from ..measure import measure
from ..models import MODELS, create_model, get_model_entry
from ..models.user import is_user_source, normalise_source
from ..progress import log
from ..trainer import TrainConfig, evaluate, fit, use_bf16
from ..runs import RunDir
from ..summaries import TrainSummary
from .common import (DEFAULT_RECIPE, RECIPES, _load_any, _normalization, _stats, check_fits, check_runs,
                     resolve_device)


def list_models() -> list[dict]:
    """Every registered model with its params and MACs (for one image)."""
    rows = []
    for name, entry in MODELS.items():
        with _no_init():  # shapes only: weights left uninitialised (on the meta device it was 10x slower)
            cost = measure(create_model(name), get_dataset_spec(entry.dataset).image_shape)
        rows.append({"name": name, "dataset": entry.dataset, "params": cost.params, "macs": cost.macs,
                     "flops": cost.flops, "paper": entry.paper})
    return rows


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """``torch.nn.init``'s in-place initialisers as no-ops inside the block (a model built only to be
    counted needs no random weights)."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    for n in names:
        setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def train(model_name: str, dataset: str | None, out: str | os.PathLike, *, overrides: dict[str, Any] | None = None,
          device: str = "cpu", data_dir: str | None = None, subset: int | None = None, bn_init: float | None = None,
          augment: bool | None = None, normalize: str = "standard", verbose: bool = True) -> TrainSummary:
    """Train a registered model into run directory ``out``; returns the summary."""
    user = is_user_source(model_name)
    if user and not dataset:
        raise SlimzipError(f"--model {model_name} is your own model: name its data with --dataset")
    dataset = absolute(dataset or get_model_entry(model_name).dataset)
    spec = get_dataset_spec(dataset)
    if not user:  # a user's model is checked by running it on the data (check_runs)
        check_fits({"name": model_name}, dataset)
    cfg = dataclasses.replace(RECIPES.get(dataset, DEFAULT_RECIPE), **(overrides or {})).validate()
    dev = resolve_device(device)
    kwargs = {"num_classes": spec.num_classes} if spec.num_classes != 10 or user else {}
    model_spec = {"name": normalise_source(model_name), "kwargs": kwargs, "input_shape": list(spec.image_shape)} \
        if user else {"name": model_name, "kwargs": kwargs}
    config = {"model": model_spec, "dataset": dataset, "train": cfg.to_json(),
              "data": {"subset": subset, "augment": augment, "normalize": normalize,
                       # an image folder's statistics, recorded: eval normalises as training did even if it changes
                       **({"stats": {"mean": list(spec.mean), "std": list(spec.std)}} if is_image_folder(dataset)
                          else {})}, "bn_init": bn_init}
    run_dir = RunDir(Path(out), config)
    run, config = run_dir.path, run_dir.config  # the config as it reads back from disk (tuples become lists)
    if (finished := run_dir.finished()) is not None:
        log(f"{run} is already finished; delete it to train again", verbose=verbose)
        return finished
    loaders = create_loaders(dataset, data_dir=data_dir, batch_size=cfg.batch_size, device=dev, augment=augment,
                             normalize=normalize, subset=subset, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = create_model(model_spec["name"], bn_init=bn_init, **kwargs).to(dev)
    check_runs(model, loaders.val, model_name, dataset)
    run_dir.claim()  # only once the model and data are known to be usable: a refused run writes nothing
    log(f"training {model_name} on {dataset} ({loaders.train.num_samples} train / {loaders.val.num_samples} val), "
        f"{cfg.epochs} epochs, {'bf16' if use_bf16(cfg.precision, dev) else 'fp32'} on {dev}", verbose=verbose)
    t0 = time.perf_counter()
    with run_dir:  # released when the run ends, finished or not
        return _train_run(model, loaders, cfg, run_dir, config, spec, model_name, dataset, verbose, t0)


def _train_run(model, loaders, cfg: TrainConfig, run_dir: RunDir, config: dict, spec, model_name: str, dataset: str,
               verbose: bool, t0: float) -> TrainSummary:
    run = run_dir.path
    state = fit(model, loaders.train, loaders.val, cfg, run_dir=run, verbose=verbose)
    seconds = sum(r["seconds"] for r in state.history)  # counts only epochs trained, across resumes
    val_loss, val_acc = evaluate(model, loaders.val)
    test_loss, test_acc = evaluate(model, loaders.test)
    cost = measure(model, spec.image_shape)
    summary: TrainSummary = {"model": model_name, "dataset": dataset, "out": str(run), "val_accuracy": val_acc,
               "test_accuracy": test_acc, "test_loss": test_loss, "epochs_run": state.epoch,
               "stopped_early": state.stopped_early, "train_seconds": seconds,
               "wall_seconds_this_call": time.perf_counter() - t0, **cost.as_dict()}
    save_checkpoint(run, model.float().to(memory_format=torch.contiguous_format), config["model"],
                    dataset=dataset, config=config, metrics=summary)
    return run_dir.finish(summary)


def evaluate_path(path: str | os.PathLike, *, dataset: str | None = None, split: str = "test", device: str = "cpu",
                  data_dir: str | None = None) -> dict:
    """Accuracy of a checkpoint directory on a split of its dataset."""
    dev = resolve_device(device)
    model, meta = _load_any(path, dev)
    dataset = dataset or meta.get("dataset")
    if not isinstance(dataset, str):
        raise SlimzipError(f"{path}: the file names no dataset; pass --dataset")
    check_fits(meta["model"], dataset)
    loaders = create_loaders(dataset, data_dir=data_dir, device=dev, normalize=_normalization(meta), stats=_stats(meta))
    loader = loaders.test if split == "test" else loaders.val
    loss, acc = evaluate(model, loader)
    return {"path": str(path), "model": meta["model"].get("name", "user model"), "dataset": dataset, "split": split,
            "accuracy": acc, "loss": loss, "images": loader.num_samples}
