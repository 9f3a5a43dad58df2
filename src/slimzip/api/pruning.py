"""Structured pruning: prune-channels (slimming and other criteria) and the DropNet loop."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import atomic_write_json, load_checkpoint, load_tensors, save_checkpoint
from ..data import create_loaders, get_dataset_spec
from ..deep_compression import sparsity_steps
from ..errors import SlimzipError, check_range
from ..measure import measure
from ..progress import log
from ..models import create_model, get_model_entry
from ..trainer import TrainConfig, distillation, evaluate, fit
from ..structured import ChannelPruner, build_model, channel_groups, collect_activations, compose_plans, widths
from .common import _checkpoint_loaders, _checkpoint_recipe, _claim, _finished, check_fits, resolve_device

# DropNet's training (its Keras code: plain SGD at 0.1, batch 32, early stopping with patience 5)
DROPNET_RECIPE = TrainConfig(epochs=100, batch_size=32, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant",
                             patience=5)


METHODS = {"slimming": "bn_scale", "l1": "l1", "l2": "l2", "dropnet": "dropnet", "dropnet_max": "dropnet_max",
           "apoz": "apoz", "random": "random"}  # command-line method -> importance criterion


def prune_channels(checkpoint: str | os.PathLike, out: str | os.PathLike, *, method: str = "slimming",
                   channel_ratio: float = 0.5, scope: str = "global", min_channels: int = 1, round_to: int = 1,
                   finetune_epochs: int = 0, lr: float | None = None, schedule: str = "cosine", sparsity: float = 0.0,
                   passes: int = 1, pass_epochs: int | None = None, pass_sparsity: float | None = None,
                   distill: float = 0.0, teacher: str | None = None, seed: int = 0, device: str = "cpu",
                   data_dir: str | None = None, verbose: bool = True) -> dict:
    """Remove channels from a trained checkpoint (physically: the result is a narrower dense model),
    fine-tune (``distill`` > 0: with that weight on distillation from ``teacher``, a checkpoint directory,
    else from the model before pruning), and save a new checkpoint; the input is never modified.

    ``passes`` > 1 removes the same total fraction of each pruned layer's channels in that many equal
    steps: after each but the last, ``pass_epochs`` of fine-tuning (default: a quarter of
    ``finetune_epochs``) with ``pass_sparsity`` (default: the checkpoint's own sparsity lambda, so a
    slimming run keeps its BN scales sparse) and a checkpoint in ``out/pass{i}`` that a rerun resumes from."""
    if method not in METHODS:
        raise SlimzipError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    check_range("channel ratio", channel_ratio, 0.0, 1.0, high_open=True)
    check_range("distillation weight", distill, 0.0, 100.0)
    if passes < 1 or finetune_epochs < 0 or (pass_epochs is not None and pass_epochs < 0):
        raise SlimzipError(f"passes must be at least 1 and epochs at least 0 (got {passes} passes)")
    if teacher is not None and not distill:
        raise SlimzipError("--teacher is the model to distill from: give --distill a weight above 0 too")
    out = Path(out)
    if out.resolve() == Path(checkpoint).resolve():
        raise SlimzipError("--out must be a new directory; the input checkpoint is never modified")
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    dataset, spec = meta["dataset"], meta["model"]
    shape = get_dataset_spec(dataset).image_shape
    train_cfg = _checkpoint_recipe(meta)
    pass_defaults = {"pass_epochs": max(1, finetune_epochs // 4), "pass_sparsity": train_cfg.sparsity}
    pass_epochs = pass_defaults["pass_epochs"] if pass_epochs is None else pass_epochs
    pass_sparsity = pass_defaults["pass_sparsity"] if pass_sparsity is None else pass_sparsity
    ft = dataclasses.replace(train_cfg, epochs=max(finetune_epochs, 1), lr=lr or train_cfg.lr * 0.1, schedule=schedule,
                             sparsity=sparsity, patience=0).validate()  # checked before anything is written
    step_ft = dataclasses.replace(ft, epochs=max(pass_epochs, 1), sparsity=pass_sparsity).validate()
    config = {"pruned_from": str(checkpoint), "method": method, "channel_ratio": channel_ratio, "scope": scope,
              "min_channels": min_channels, "round_to": round_to, "finetune_epochs": finetune_epochs, "lr": lr,
              "schedule": schedule, "sparsity": sparsity, "passes": passes, "pass_epochs": pass_epochs,
              "pass_sparsity": pass_sparsity, "distill": distill, "teacher": teacher, "seed": seed}
    added_later = {"prune": {"distill": 0.0, "teacher": None, "schedule": "cosine", "passes": 1, **pass_defaults}}
    if (finished := _finished(out, {**meta["config"], "prune": config}, added_later)) is not None:
        return finished
    _claim(out, {**meta["config"], "prune": config}, added_later)
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, dev, data_dir, seed)
    before = {"cost": measure(model, shape).as_dict(), "widths": widths(model),
              "val_accuracy": evaluate(model, loaders.val)[1]}
    teacher_model = None
    if distill and finetune_epochs:  # the given checkpoint, else the model before pruning
        teacher_model = _teacher(teacher, dataset, dev) or copy.deepcopy(model)
    terms = [distillation(teacher_model, distill)] if teacher_model is not None else []
    plan, history, first = spec.get("plan"), [], 1
    saved_passes = [i for i in range(1, passes) if (out / f"pass{i}" / "model.json").is_file()]
    if saved_passes:  # a restart: go on after the last step that was saved
        model, saved_meta = load_checkpoint(out / f"pass{saved_passes[-1]}", dev)
        plan, history, first = saved_meta["model"]["plan"], saved_meta["metrics"]["passes"], saved_passes[-1] + 1
    for step in range(first, passes + 1):
        last = step == passes
        activations = None
        if method in ("dropnet", "dropnet_max", "apoz"):  # DropNet scores over the whole training split
            activations = collect_activations(model, channel_groups(model, shape)[0], loaders.train)
        pruner = ChannelPruner(importance=METHODS[method], channel_ratio=_ratio_after(step, passes, channel_ratio),
                               scope=scope, min_channels=min_channels, round_to=round_to, seed=seed,
                               base_widths=before["widths"])
        pruner.fit(model, shape, activations)
        model = pruner.transform(model, shape)
        plan = compose_plans(plan, pruner.plan_)
        pruned_val = evaluate(model, loaders.val)[1]
        epochs = finetune_epochs if last else pass_epochs
        if epochs:
            fit(model, loaders.train, loaders.val, ft if last else step_ft, loss_terms=terms if last else [],
                run_dir=out / ("finetune" if last else f"finetune{step}"), verbose=verbose)
        history.append({"pass": step, "widths": widths(model), "val_accuracy_before_finetune": pruned_val,
                        "val_accuracy": evaluate(model, loaders.val)[1] if epochs else pruned_val})
        if not last:
            save_checkpoint(out / f"pass{step}", model.float().to(memory_format=torch.contiguous_format),
                            {**spec, "plan": plan}, dataset=dataset, config=meta["config"], metrics={"passes": history})
            log(f"pass {step}/{passes}: widths {history[-1]['widths']}, val {history[-1]['val_accuracy']:.4f}",
                verbose=verbose)
    new_spec = {**spec, "plan": plan}
    cost = measure(model, shape)
    summary = {"model": spec["name"], "dataset": dataset, "out": str(out), "method": method,
               "channel_ratio": channel_ratio, "scope": scope, "before": before,
               "after": {"cost": cost.as_dict(), "widths": widths(model),
                         "val_accuracy_before_finetune": history[-1]["val_accuracy_before_finetune"],
                         "val_accuracy": history[-1]["val_accuracy"],
                         "test_accuracy": evaluate(model, loaders.test)[1]},
               "params_removed": 1 - cost.params / before["cost"]["params"],
               "macs_removed": 1 - cost.macs / before["cost"]["macs"], "finetune_epochs": finetune_epochs,
               **({"passes": history} if passes > 1 else {})}
    save_checkpoint(out, model.float().to(memory_format=torch.contiguous_format), new_spec, dataset=dataset,
                    config={**meta["config"], "prune": config}, metrics=summary)
    atomic_write_json(out / "summary.json", summary)
    return summary


def _ratio_after(step: int, passes: int, ratio: float) -> float:
    """Of the input's channels, the fraction removed after ``step`` of ``passes`` equal steps (each
    removes the same share of what is left); the last step ends at ``ratio`` itself."""
    return ratio if step == passes else sparsity_steps(0.0, ratio, passes)[step - 1]


def _teacher(path: str | None, dataset: str, device: torch.device) -> torch.nn.Module | None:
    """A distillation teacher from a checkpoint directory, checked to be for the same dataset."""
    if path is None:
        return None
    model, meta = load_checkpoint(path, device)
    if meta.get("dataset") != dataset:
        raise SlimzipError(f"teacher {path} was trained on {meta.get('dataset')}, not {dataset}")
    return model


def dropnet(model_name: str, dataset: str | None, out: str | os.PathLike, *, metric: str = "min_layer",
            fraction: float = 0.2, stop_remaining: float = 0.1, kappa: float = 0.0, reset: str = "init",
            oracle_images: int = 5000, init: str = "torch", overrides: dict[str, Any] | None = None, seed: int = 0,
            subset: int | None = None, device: str = "cpu",
            data_dir: str | None = None, verbose: bool = True) -> dict:
    """DropNet's iterative loop on a registered model (paper defaults: plain SGD lr 0.1, no momentum,
    batch 32, up to 100 epochs with early stopping on validation loss, patience 5; pixels in [0, 1], no
    augmentation)."""
    from ..dropnet import DropNetConfig, result_cycle, run_dropnet

    dataset = dataset or get_model_entry(model_name).dataset
    check_fits(model_name, dataset)
    cfg = DropNetConfig(metric=metric, fraction=fraction, stop_remaining=stop_remaining, kappa=kappa, reset=reset,
                        seed=seed, oracle_images=oracle_images, init=init).validate()
    train_cfg = dataclasses.replace(DROPNET_RECIPE, **(overrides or {})).validate()
    dev = resolve_device(device)
    config = json.loads(json.dumps({"model": model_name, "dataset": dataset, "dropnet": dataclasses.asdict(cfg),
                                    "train": train_cfg.to_json(), "subset": subset}))
    run = Path(out)
    _claim(run, config, {"dropnet": dataclasses.asdict(DropNetConfig())})
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
    summary = {"model": model_name, "dataset": dataset, "metric": metric, "out": str(run),
               "checkpoint": {k: rows[chosen][k] for k in keep},
               "cycles": [{k: v for k, v in r.items() if k != "plan"} for r in rows]}
    atomic_write_json(run / "summary.json", summary)
    return summary
