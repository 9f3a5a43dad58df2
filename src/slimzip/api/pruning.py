"""Structured pruning: prune-channels (slimming and other criteria) and the DropNet loop."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_checkpoint, load_tensors, save_checkpoint
from ..config import DROPNET_RECIPE, PruneConfig, merged
from ..data import create_loaders, get_dataset_spec
from ..errors import SlimzipError
from ..measure import measure
from ..progress import log
from ..models import create_model, get_model_entry
from ..trainer import TrainConfig, distillation, evaluate, fit
from ..structured import METHODS, ChannelPruner, build_model, gradual_prune, ratio_after, widths
from ..runs import RunDir
from ..summaries import DropNetSummary, PruneSummary
from .common import _checkpoint_loaders, _checkpoint_recipe, check_fits, load_teacher, resolve_device

# DropNet's training (its Keras code: plain SGD at 0.1, batch 32, early stopping with patience 5)




def prune_channels(checkpoint: str | os.PathLike, out: str | os.PathLike, config: PruneConfig | None = None, *,
                   seed: int = 0, device: str = "cpu", data_dir: str | None = None, verbose: bool = True,
                   **knobs: Any) -> PruneSummary:
    """Remove channels from a checkpoint (physically), fine-tune (``distill`` > 0: with distillation from
    ``teacher``, else the model before pruning), save a new checkpoint; the input is never modified. The
    knobs are ``config`` (a ``PruneConfig``), or its fields as keywords (``channel_ratio=0.5``; one that
    contradicts ``config`` is an error). ``passes`` > 1: the ratio in equal steps, each but the last followed
    by ``pass_epochs`` (a quarter of ``finetune_epochs``) under ``pass_bn_l1`` (the checkpoint's own L1
    lambda on BN scales) and a checkpoint ``out/pass{i}`` a rerun resumes from."""
    cfg = merged(config or PruneConfig(), **knobs).validate()
    _check_prune_args(checkpoint, out := Path(out), cfg)
    method, channel_ratio, scope, passes, finetune_epochs, distill, teacher = (
        cfg.method, cfg.channel_ratio, cfg.scope, cfg.passes, cfg.finetune_epochs, cfg.distill, cfg.teacher)
    model, meta = load_checkpoint(checkpoint, dev := resolve_device(device))
    dataset, spec, shape = meta["dataset"], meta["model"], get_dataset_spec(meta["dataset"]).image_shape
    train_cfg = _checkpoint_recipe(meta)
    pass_defaults = {"pass_epochs": max(1, finetune_epochs // 4), "pass_bn_l1": train_cfg.bn_l1}
    pass_epochs, pass_bn_l1, ft, step_ft = _finetune_configs(train_cfg, finetune_epochs, cfg.lr, cfg.schedule,
                                                             cfg.bn_l1, cfg.pass_epochs, cfg.pass_bn_l1, pass_defaults)
    saved = {**dataclasses.asdict(cfg), "pass_epochs": pass_epochs, "pass_bn_l1": pass_bn_l1}
    run_config = {**meta["config"], "prune": {"pruned_from": str(checkpoint), **saved, "seed": seed}}
    added_later = {"prune": {"distill": 0.0, "teacher": None, "schedule": "cosine", "passes": 1, **pass_defaults}}
    run_dir = RunDir(out, run_config, added_later)
    if (finished := run_dir.finished()) is not None:
        return finished
    run_dir.claim()
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, dev, data_dir, seed)
    before = _snapshot(model, shape, loaders.val)
    terms = [distillation(load_teacher(teacher, dataset, dev) or copy.deepcopy(model), distill)] \
        if distill and finetune_epochs else []  # the given teacher checkpoint, else the model before pruning
    model, plan, history, first = _resume_passes(out, passes, dev, model, spec.get("plan"))
    def pruner_at(step: int) -> ChannelPruner:
        return ChannelPruner(importance=METHODS[method], channel_ratio=ratio_after(step, passes, channel_ratio),
                             scope=scope, min_channels=cfg.min_channels, round_to=cfg.round_to, seed=seed,
                             base_widths=before["widths"])

    def finetune(model: nn.Module, step: int) -> int:
        last = step == passes
        epochs = finetune_epochs if last else pass_epochs
        if epochs:
            fit(model, loaders.train, loaders.val, ft if last else step_ft, loss_terms=terms if last else [],
                run_dir=out / ("finetune" if last else f"finetune{step}"), verbose=verbose)
        return epochs

    model, plan = gradual_prune(model, plan, history, range(first, passes + 1), shape, loaders.train, pruner_at,
                                finetune, lambda m: evaluate(m, loaders.val)[1],
                                _pass_checkpoint(out, spec, meta, passes, verbose))
    summary: PruneSummary = {"model": spec["name"], "dataset": dataset, "out": str(out), "method": method,
               "channel_ratio": channel_ratio, "scope": scope, "finetune_epochs": finetune_epochs,
               **_before_after(before, model, shape, history, evaluate(model, loaders.test)[1]),
               **({"passes": history} if passes > 1 else {})}
    save_checkpoint(out, model.float().to(memory_format=torch.contiguous_format), {**spec, "plan": plan},
                    dataset=dataset, config=run_config, metrics=summary)
    return run_dir.finish(summary)


def _pass_checkpoint(out: Path, spec: dict, meta: dict, passes: int, verbose: bool):
    """What a gradual prune saves after every pass but the last: a checkpoint a rerun resumes from."""
    def after_pass(model: nn.Module, plan: dict, history: list[dict], step: int) -> None:
        save_checkpoint(out / f"pass{step}", model.float().to(memory_format=torch.contiguous_format),
                        {**spec, "plan": plan}, dataset=meta["dataset"], config=meta["config"],
                        metrics={"passes": history})
        log(f"pass {step}/{passes}: widths {history[-1]['widths']}, val {history[-1]['val_accuracy']:.4f}",
            verbose=verbose)
    return after_pass


def _finetune_configs(train_cfg: TrainConfig, epochs: int, lr: float | None, schedule: str, bn_l1: float,
                      pass_epochs: int | None, pass_bn_l1: float | None,
                      defaults: dict) -> tuple[int, float, TrainConfig, TrainConfig]:
    """The passes' epochs and L1 lambda (``defaults`` where not given), the last fine-tune's config and the
    one between passes, checked before anything is written."""
    pass_epochs = defaults["pass_epochs"] if pass_epochs is None else pass_epochs
    pass_bn_l1 = defaults["pass_bn_l1"] if pass_bn_l1 is None else pass_bn_l1
    ft = dataclasses.replace(train_cfg, epochs=max(epochs, 1), lr=lr or train_cfg.lr * 0.1, schedule=schedule,
                             bn_l1=bn_l1, patience=0).validate()
    return pass_epochs, pass_bn_l1, ft, dataclasses.replace(ft, epochs=max(pass_epochs, 1), bn_l1=pass_bn_l1).validate()


def _snapshot(model: nn.Module, shape: tuple[int, ...], val) -> dict:
    return {"cost": measure(model, shape).as_dict(), "widths": widths(model), "val_accuracy": evaluate(model, val)[1]}


def _before_after(before: dict, model: nn.Module, shape: tuple[int, ...], history: list[dict],
                  test_accuracy: float) -> dict:
    cost = measure(model, shape)
    return {"before": before,
            "after": {"cost": cost.as_dict(), "widths": widths(model),
                      "val_accuracy_before_finetune": history[-1]["val_accuracy_before_finetune"],
                      "val_accuracy": history[-1]["val_accuracy"], "test_accuracy": test_accuracy},
            "params_removed": 1 - cost.params / before["cost"]["params"],
            "macs_removed": 1 - cost.macs / before["cost"]["macs"],
            "criteria": history[-1].get("criteria", {})}  # which criterion scored each group (fallbacks)


def _resume_passes(out: Path, passes: int, device: torch.device, model: nn.Module,
                   plan: dict | None) -> tuple[nn.Module, dict | None, list[dict], int]:
    """(model, plan, history, first step): after the last step a killed gradual prune saved, else the start."""
    saved = [i for i in range(1, passes) if (out / f"pass{i}" / "model.json").is_file()]
    if not saved:
        return model, plan, [], 1
    model, meta = load_checkpoint(out / f"pass{saved[-1]}", device)
    return model, meta["model"]["plan"], meta["metrics"]["passes"], saved[-1] + 1


def _check_prune_args(checkpoint: str | os.PathLike, out: Path, cfg: PruneConfig) -> None:
    if out.resolve() == Path(checkpoint).resolve():
        raise SlimzipError("--out must be a new directory; the input checkpoint is never modified")
    if cfg.method not in METHODS:
        raise SlimzipError(f"unknown method {cfg.method!r}; choose from: {', '.join(METHODS)}")


def dropnet(model_name: str, dataset: str | None, out: str | os.PathLike, *, metric: str = "min_layer",
            fraction: float = 0.2, stop_remaining: float = 0.1, kappa: float = 0.0, reset: str = "init",
            oracle_images: int = 5000, init: str = "torch", overrides: dict[str, Any] | None = None, seed: int = 0,
            subset: int | None = None, device: str = "cpu",
            data_dir: str | None = None, verbose: bool = True) -> DropNetSummary:
    """DropNet's iterative loop on a registered model (paper defaults: plain SGD lr 0.1, no momentum,
    batch 32, up to 100 epochs with early stopping on validation loss, patience 5; pixels in [0, 1], no
    augmentation)."""
    from ..structured.dropnet import DropNetConfig, result_cycle, run_dropnet

    dataset = dataset or get_model_entry(model_name).dataset
    check_fits({"name": model_name}, dataset)
    cfg = DropNetConfig(metric=metric, fraction=fraction, stop_remaining=stop_remaining, kappa=kappa, reset=reset,
                        seed=seed, oracle_images=oracle_images, init=init).validate()
    train_cfg = dataclasses.replace(DROPNET_RECIPE, **(overrides or {})).validate()
    dev = resolve_device(device)
    config = json.loads(json.dumps({"model": model_name, "dataset": dataset, "dropnet": dataclasses.asdict(cfg),
                                    "train": train_cfg.to_json(), "subset": subset}))
    run = Path(out)
    run_dir = RunDir(run, config, {"dropnet": dataclasses.asdict(DropNetConfig())}).claim()
    loaders = create_loaders(dataset, data_dir=data_dir, batch_size=train_cfg.batch_size, device=dev,
                             augment=False, normalize="unit", subset=subset, seed=seed)
    spec = get_dataset_spec(dataset)
    kwargs = {"num_classes": spec.num_classes} if spec.num_classes != 10 else {}
    rows = run_dropnet(lambda: create_model(model_name, **kwargs).to(dev), loaders, cfg, train_cfg, run,
                       verbose=verbose)
    chosen = result_cycle(rows, cfg)
    spec = {"name": model_name, "kwargs": kwargs, **({"plan": rows[chosen]["plan"]} if rows[chosen]["plan"] else {})}
    model = build_model(spec)
    model.load_state_dict(load_tensors(run / f"cycle{chosen}.safetensors"))
    keep = ("cycle", "remaining", "val_accuracy", "test_accuracy", "params")
    save_checkpoint(run, model, spec, dataset=dataset,
                    config={"data": {"subset": subset, "augment": False, "normalize": "unit"},
                            "train": train_cfg.to_json(), "dropnet": dataclasses.asdict(cfg)},
                    metrics={k: rows[chosen][k] for k in keep})
    summary: DropNetSummary = {"model": model_name, "dataset": dataset, "metric": metric, "out": str(run),
               "checkpoint": {k: rows[chosen][k] for k in keep},
               "cycles": [{k: v for k, v in r.items() if k != "plan"} for r in rows]}
    return run_dir.finish(summary)
