"""What the command line does, as Python functions returning plain dicts.

A run directory (``--out``) holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one line per
epoch), ``train_state.json`` + ``last.safetensors`` (for resuming), the checkpoint
(``model.safetensors`` + ``model.json``) and ``summary.json``. Running the same command again resumes
an interrupted run, or returns the summary of a finished one without training again.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint import (atomic_write_bytes, atomic_write_json, load_checkpoint, load_tensors, read_meta,
                         same_settings, save_checkpoint)
from .compress import CompressConfig, decode_model, deep_compress, encode_model, inspect_container
from .container import decode_container, read_container
from .data import create_loaders, get_dataset_spec
from .errors import SlimzipError, check_range
from .measure import dense_fp32_bytes, measure
from .models import MODELS, create_model, get_model_entry
from .progress import log
from .train import TrainConfig, distillation, evaluate, fit, use_bf16
from .structured import build_model, compose_plans, widths
from .unstructured import sparsity_of

if TYPE_CHECKING:
    from .search import SearchConfig

# Default training recipes per dataset; every field can be overridden from the command line.
RECIPES: dict[str, TrainConfig] = {
    # LeNets / MLPs on MNIST: short cosine runs are enough (no augmentation for digits).
    "mnist": TrainConfig(epochs=15, batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine"),
    # Network slimming's CIFAR recipe: SGD, batch 64, 160 epochs, lr 0.1 / 10 at 50% and 75%, wd 1e-4.
    "cifar10": TrainConfig(epochs=160, batch_size=64, lr=0.1, weight_decay=1e-4, schedule="step"),
    "cifar100": TrainConfig(epochs=160, batch_size=64, lr=0.1, weight_decay=1e-4, schedule="step"),
}


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SlimzipError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SlimzipError("--device cuda was asked for, but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise SlimzipError(f"unsupported device {name!r}; use cpu or cuda")
    return device


def check_fits(model_name: str, dataset: str) -> None:
    """A model built for one input shape cannot take another (LeNet-5 on CIFAR, say)."""
    entry = get_model_entry(model_name)
    want, got = get_dataset_spec(entry.dataset).image_shape, get_dataset_spec(dataset).image_shape
    if want != got:
        raise SlimzipError(f"model {model_name} takes {entry.dataset} inputs {want}; {dataset} images are {got}")


def list_models() -> list[dict]:
    """Every registered model with its params and MACs (for one image)."""
    rows = []
    for name, entry in MODELS.items():
        cost = measure(create_model(name), get_dataset_spec(entry.dataset).image_shape)
        rows.append({"name": name, "dataset": entry.dataset, "params": cost.params, "macs": cost.macs,
                     "flops": cost.flops, "paper": entry.paper})
    return rows


def train(model_name: str, dataset: str | None, out: str | os.PathLike, *, overrides: dict[str, Any] | None = None,
          device: str = "cpu", data_dir: str | None = None, subset: int | None = None, bn_init: float | None = None,
          augment: bool | None = None, normalize: str = "standard", verbose: bool = True) -> dict:
    """Train a registered model into run directory ``out``; returns the summary."""
    dataset = dataset or get_model_entry(model_name).dataset
    spec = get_dataset_spec(dataset)
    check_fits(model_name, dataset)
    cfg = dataclasses.replace(RECIPES[dataset], **(overrides or {})).validate()
    dev = resolve_device(device)
    kwargs = {"num_classes": spec.num_classes} if spec.num_classes != 10 else {}
    config = {"model": {"name": model_name, "kwargs": kwargs}, "dataset": dataset, "train": cfg.to_json(),
              "data": {"subset": subset, "augment": augment, "normalize": normalize}, "bn_init": bn_init}
    config = json.loads(json.dumps(config))  # as it reads back from disk (tuples become lists)
    run = Path(out)
    if (finished := _finished(run, config)) is not None:
        log(f"{run} is already finished; delete it to train again", verbose=verbose)
        return finished
    _claim(run, config)
    loaders = create_loaders(dataset, data_dir=data_dir, batch_size=cfg.batch_size, device=dev, augment=augment,
                             normalize=normalize, subset=subset, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model = create_model(model_name, bn_init=bn_init, **kwargs).to(dev)
    log(f"training {model_name} on {dataset} ({loaders.train.num_samples} train / {loaders.val.num_samples} val), "
        f"{cfg.epochs} epochs, {'bf16' if use_bf16(cfg.precision, dev) else 'fp32'} on {dev}", verbose=verbose)
    t0 = time.perf_counter()
    state = fit(model, loaders.train, loaders.val, cfg, run_dir=run, verbose=verbose)
    seconds = sum(r["seconds"] for r in state.history)  # counts only epochs trained, across resumes
    val_loss, val_acc = evaluate(model, loaders.val)
    test_loss, test_acc = evaluate(model, loaders.test)
    cost = measure(model, spec.image_shape)
    summary = {"model": model_name, "dataset": dataset, "out": str(run), "val_accuracy": val_acc,
               "test_accuracy": test_acc, "test_loss": test_loss, "epochs_run": state.epoch,
               "stopped_early": state.stopped_early, "train_seconds": seconds,
               "wall_seconds_this_call": time.perf_counter() - t0, **cost.as_dict()}
    save_checkpoint(run, model.float().to(memory_format=torch.contiguous_format), config["model"],
                    dataset=dataset, config=config, metrics=summary)
    atomic_write_json(run / "summary.json", summary)
    return summary


def _finished(run: Path, config: dict, defaults: dict | None = None) -> dict | None:
    """The summary of a finished run made with this config, if there is one."""
    if (run / "summary.json").is_file() and (run / "model.json").is_file():
        if same_settings(read_meta(run).get("config"), config, defaults):
            return json.loads((run / "summary.json").read_text())
    return None


def _claim(run: Path, config: dict, defaults: dict | None = None) -> None:
    """Write config.json, refusing a directory that holds a different run (see ``same_settings``)."""
    path = run / "config.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            saved = None
        if not same_settings(saved, config, defaults):
            raise SlimzipError(f"{run} holds a different run (config.json differs); use a new --out directory")
    elif run.exists() and any(run.iterdir()):
        raise SlimzipError(f"{run} exists and is not a slimzip run directory; use a new --out directory")
    atomic_write_json(path, config)


def evaluate_path(path: str | os.PathLike, *, dataset: str | None = None, split: str = "test", device: str = "cpu",
                  data_dir: str | None = None) -> dict:
    """Accuracy of a checkpoint directory on a split of its dataset."""
    dev = resolve_device(device)
    model, meta = _load_any(path, dev)
    dataset = dataset or meta.get("dataset")
    if not isinstance(dataset, str):
        raise SlimzipError(f"{path}: checkpoint names no dataset; pass --dataset")
    check_fits(meta["model"]["name"], dataset)
    loaders = create_loaders(dataset, data_dir=data_dir, device=dev, normalize=_normalization(meta))
    loader = loaders.test if split == "test" else loaders.val
    loss, acc = evaluate(model, loader)
    return {"path": str(path), "model": meta["model"]["name"], "dataset": dataset, "split": split,
            "accuracy": acc, "loss": loss, "images": loader.num_samples}


def _normalization(meta: dict) -> str:
    """The input normalisation a model was trained with: from a checkpoint's config, or from a .slz
    manifest's ``data`` (written only when it is not the default, 'standard')."""
    data = meta.get("data") if isinstance(meta.get("data"), dict) else meta.get("config", {}).get("data", {})
    return data.get("normalize", "standard")


def _file_data(meta: dict) -> dict:
    """What a .slz manifest records of a checkpoint's data options (so `eval` normalises as training did)."""
    normalize = _normalization(meta)
    return {} if normalize == "standard" else {"data": {"normalize": normalize}}


ONNX_TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| / max(1, max |PyTorch|) an exported graph may show


def _load_any(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A model and its metadata from a checkpoint directory or a .slz file."""
    if not Path(path).exists():
        raise SlimzipError(f"{path}: no such file or directory")
    if Path(path).is_file():  # a .slz file
        container = read_container(path)
        return decode_model(container).to(device), container.manifest
    return load_checkpoint(path, device)


def export(path: str | os.PathLike, out: str | os.PathLike, *, check_images: int = 64, seed: int = 0,
           split: str | None = None, data_dir: str | None = None) -> dict:
    """Write a .slz file's (or a checkpoint's) model as ONNX and check it with onnxruntime on
    ``check_images`` seeded random inputs; with ``split``, also measure the ONNX graph's accuracy there."""
    from .export import check_onnx, onnx_accuracy, onnx_path, to_onnx

    check_range("check images", check_images, 1, 100_000)
    out = onnx_path(out, path)
    model, meta = _load_any(path, torch.device("cpu"))
    shape = get_dataset_spec(meta["dataset"]).image_shape
    blob = to_onnx(model, shape)
    inputs = torch.randn(check_images, *shape, generator=torch.Generator().manual_seed(seed))
    check = check_onnx(model, blob, inputs)
    if check.max_rel_diff > ONNX_TOLERANCE:  # a wrong graph is not written
        raise SlimzipError(f"{path}: the ONNX graph's outputs differ from PyTorch's by {check.max_rel_diff:.3g} "
                           f"(relative; tolerance {ONNX_TOLERANCE:g}); not written")
    result = {"source": str(path), "file": str(out), "file_bytes": len(blob), "model": meta["model"]["name"],
              "dataset": meta["dataset"], "input_shape": ["batch", *shape], "params": measure(model, shape).params,
              "check": dataclasses.asdict(check)}
    if split:
        if split not in ("test", "val"):
            raise SlimzipError(f"unknown split {split!r}; choose from: test, val")
        loaders = create_loaders(meta["dataset"], data_dir=data_dir, batch_size=1000, normalize=_normalization(meta))
        result["accuracy"] = {"split": split, "onnx": onnx_accuracy(blob, getattr(loaders, split))}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, blob)
    return result


def report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Tables (and, with matplotlib, plots) of a run directory, written as one HTML page."""
    from .report import sections_of, to_html, to_text

    run = Path(run_dir)
    kind, sections = sections_of(run)
    out = Path(out) if out else run / "report.html"
    if out.suffix != ".html":
        raise SlimzipError(f"{out}: the report file must end in .html")
    page, plots = to_html(f"slimzip {kind}: {run}", sections)
    atomic_write_bytes(out, page.encode())
    return {"run": str(run), "kind": kind, "file": str(out), "plots": plots, "text": to_text(sections),
            "sections": [dataclasses.asdict(s) for s in sections]}


def compress(checkpoint: str | os.PathLike, out: str | os.PathLike, cfg: CompressConfig, *, device: str = "cpu",
             data_dir: str | None = None, verbose: bool = True) -> dict:
    """Deep-compress a trained checkpoint into a .slz file with fixed knobs; accuracy is measured on the
    model decoded from the written file."""
    cfg.validate()
    out = _slz_path(out)
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    dataset = meta.get("dataset")
    spec = get_dataset_spec(dataset)
    train_cfg = _checkpoint_recipe(meta)
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, dev, data_dir, train_cfg.seed)
    base_val = evaluate(model, loaders.val)[1]
    dense = measure(model, spec.image_shape)
    dense_bytes = dense_fp32_bytes(model)
    t0 = time.perf_counter()
    units_before = sum(widths(model).values())
    result = deep_compress(model, loaders.train, loaders.val, cfg, train_cfg, spec.image_shape, verbose=verbose)
    model, layers, epochs = result.model, result.layers, result.epochs
    model_spec = {**meta["model"], "plan": compose_plans(meta["model"].get("plan"), result.plan)}
    if not model_spec["plan"]:
        model_spec.pop("plan")
    # Validation accuracy of the decoded bytes goes into the manifest; encoding is deterministic, so the
    # second encoding decodes to the same weights as the first.
    val_acc = evaluate(decode_model(decode_container(encode_model(model.cpu(), model_spec, layers, cfg))).to(dev),
                       loaders.val)[1]
    extra = {"dataset": dataset, **_file_data(meta),
             "metrics": {"val_accuracy": val_acc, "baseline_val_accuracy": base_val}}
    atomic_write_bytes(out, encode_model(model.cpu(), model_spec, layers, cfg, extra))
    written = decode_model(read_container(out)).to(dev)  # what a user will load: test accuracy is measured here
    test_acc = evaluate(written, loaders.test)[1]
    cost = measure(written, spec.image_shape)
    file_bytes = out.stat().st_size
    result = {"file": str(out), "file_bytes": file_bytes, "dense_fp32_bytes": dense_bytes,
              "compression_ratio": dense_bytes / file_bytes, "baseline_val_accuracy": base_val,
              "val_accuracy": val_acc, "test_accuracy": test_acc,
              "params": cost.params, "macs": cost.macs, "nonzero_macs": cost.nonzero_macs,
              "dense_macs": dense.macs, "sparsity": sparsity_of(written), "knobs": dataclasses.asdict(cfg),
              "dead_units_removed": units_before - sum(widths(written).values()),
              "epochs": epochs, "wall_seconds": time.perf_counter() - t0,
              "components": inspect_container(read_container(out))["components"]}
    return result


def _slz_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix != ".slz":
        raise SlimzipError(f"{out}: the output file must end in .slz")
    return out


def _checkpoint_recipe(meta: dict) -> TrainConfig:
    """The training config a checkpoint was made with (its dataset's recipe if it records none)."""
    saved = meta.get("config", {}).get("train")
    return TrainConfig.from_json(saved) if saved else RECIPES[meta["dataset"]]


def _checkpoint_loaders(meta: dict, batch_size: int, device: torch.device, data_dir: str | None, seed: int,
                        subset: int | None = None):
    """Loaders for a checkpoint's dataset, with the data options it was trained with."""
    opts = meta.get("config", {}).get("data", {})
    return create_loaders(meta["dataset"], data_dir=data_dir, batch_size=batch_size, device=device,
                          augment=opts.get("augment"), normalize=opts.get("normalize", "standard"), seed=seed,
                          subset=subset)


def inspect_file(path: str | os.PathLike) -> dict:
    """Per-tensor and per-component bytes of a .slz file (the components add up to the file size)."""
    container = read_container(path)
    report = inspect_container(container)
    return {"file": str(path), "model": container.manifest.get("model"), "dataset": container.manifest.get("dataset"),
            **report}


METHODS = {"slimming": "bn_scale", "l1": "l1", "l2": "l2", "dropnet": "dropnet", "dropnet_max": "dropnet_max",
           "apoz": "apoz", "random": "random"}  # command-line method -> importance criterion


def prune_channels(checkpoint: str | os.PathLike, out: str | os.PathLike, *, method: str = "slimming",
                   channel_ratio: float = 0.5, scope: str = "global", min_channels: int = 1, round_to: int = 1,
                   finetune_epochs: int = 0, lr: float | None = None, sparsity: float = 0.0, distill: float = 0.0,
                   teacher: str | None = None, seed: int = 0, device: str = "cpu", data_dir: str | None = None,
                   verbose: bool = True) -> dict:
    """Remove channels from a trained checkpoint (physically: the result is a narrower dense model),
    fine-tune (``distill`` > 0: with that weight on distillation from ``teacher``, a checkpoint directory,
    else from the model before pruning), and save a new checkpoint; the input is never modified."""
    from .structured import ChannelPruner, apply_plan, collect_activations, compose_plans, widths

    if method not in METHODS:
        raise SlimzipError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    check_range("channel ratio", channel_ratio, 0.0, 1.0, high_open=True)
    check_range("distillation weight", distill, 0.0, 100.0)
    out = Path(out)
    if out.resolve() == Path(checkpoint).resolve():
        raise SlimzipError("--out must be a new directory; the input checkpoint is never modified")
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    dataset, spec = meta["dataset"], meta["model"]
    shape = get_dataset_spec(dataset).image_shape
    train_cfg = _checkpoint_recipe(meta)
    pruner = ChannelPruner(importance=METHODS[method], channel_ratio=channel_ratio, scope=scope,
                           min_channels=min_channels, round_to=round_to, seed=seed)
    config = {"pruned_from": str(checkpoint), "method": method, "channel_ratio": channel_ratio, "scope": scope,
              "min_channels": min_channels, "round_to": round_to, "finetune_epochs": finetune_epochs, "lr": lr,
              "sparsity": sparsity, "distill": distill, "teacher": teacher, "seed": seed}
    if teacher is not None and not distill:
        raise SlimzipError("--teacher is the model to distill from: give --distill a weight above 0 too")
    added_later = {"prune": {"distill": 0.0, "teacher": None}}
    if (finished := _finished(out, {**meta["config"], "prune": config}, added_later)) is not None:
        return finished
    _claim(out, {**meta["config"], "prune": config}, added_later)
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, dev, data_dir, seed)
    before = {"cost": measure(model, shape).as_dict(), "widths": widths(model),
              "val_accuracy": evaluate(model, loaders.val)[1]}
    activations = None
    if method in ("dropnet", "dropnet_max", "apoz"):  # DropNet scores over the whole training split
        from .structured import channel_groups

        activations = collect_activations(model, channel_groups(model, shape)[0], loaders.train)
    teacher_model = None
    if distill and finetune_epochs:  # the given checkpoint, else the model before pruning
        teacher_model = _teacher(teacher, dataset, dev) or copy.deepcopy(model)
    pruner.fit(model, shape, activations)
    model = pruner.transform(model, shape)
    pruned_val = evaluate(model, loaders.val)[1]
    if finetune_epochs:
        ft = dataclasses.replace(train_cfg, epochs=finetune_epochs, lr=lr or train_cfg.lr * 0.1, schedule="cosine",
                                 sparsity=sparsity, patience=0)
        terms = [distillation(teacher_model, distill)] if teacher_model is not None else []
        fit(model, loaders.train, loaders.val, ft, loss_terms=terms, run_dir=out / "finetune", verbose=verbose)
    new_spec = {**spec, "plan": compose_plans(spec.get("plan"), pruner.plan_)}
    cost = measure(model, shape)
    summary = {"model": spec["name"], "dataset": dataset, "out": str(out), "method": method,
               "channel_ratio": channel_ratio, "scope": scope, "before": before,
               "after": {"cost": cost.as_dict(), "widths": widths(model), "val_accuracy_before_finetune": pruned_val,
                         "val_accuracy": evaluate(model, loaders.val)[1],
                         "test_accuracy": evaluate(model, loaders.test)[1]},
               "params_removed": 1 - cost.params / before["cost"]["params"],
               "macs_removed": 1 - cost.macs / before["cost"]["macs"], "finetune_epochs": finetune_epochs}
    save_checkpoint(out, model.float().to(memory_format=torch.contiguous_format), new_spec, dataset=dataset,
                    config={**meta["config"], "prune": config}, metrics=summary)
    atomic_write_json(out / "summary.json", summary)
    return summary


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
    from .dropnet import DropNetConfig, run_dropnet

    dataset = dataset or get_model_entry(model_name).dataset
    check_fits(model_name, dataset)
    cfg = DropNetConfig(metric=metric, fraction=fraction, stop_remaining=stop_remaining, kappa=kappa, reset=reset,
                        seed=seed, oracle_images=oracle_images, init=init).validate()
    train_cfg = dataclasses.replace(TrainConfig(epochs=100, batch_size=32, lr=0.1, momentum=0.0, weight_decay=0.0,
                                                schedule="constant", patience=5), **(overrides or {})).validate()
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
    chosen = _dropnet_result(rows, cfg)
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


def _dropnet_result(rows: list[dict], cfg: Any) -> int:
    """The cycle a DropNet run hands on as its checkpoint: with kappa, the last one whose validation
    accuracy holds kappa x the first cycle's (the loop's stopping rule); otherwise the last one."""
    if not cfg.kappa:
        return len(rows) - 1
    return max(i for i, r in enumerate(rows) if i == 0 or r["val_accuracy"] >= cfg.kappa * rows[0]["val_accuracy"])


# --- the search ----------------------------------------------------------------------------------

def search_defaults() -> dict:
    """What a search run directory made before a setting existed implicitly used: its default, except
    that files stored BatchNorm unfolded then (so such a run does not resume into the new encoder)."""
    from .search import SearchConfig

    return {"search": {**dataclasses.asdict(SearchConfig()), "fold_bn": False}}


def _search_target(baseline: float, target_accuracy: float | None, max_drop: float | None) -> float:
    if (target_accuracy is None) == (max_drop is None):
        raise SlimzipError("give exactly one of --target-accuracy (a validation accuracy, e.g. 0.99) and "
                           "--max-drop (points below the baseline, e.g. 0.5)")
    if target_accuracy is not None:
        return check_range("target accuracy", target_accuracy, 0.0, 1.0)
    return baseline - check_range("max drop", max_drop, 0.0, 100.0) / 100


def search(checkpoint: str | os.PathLike, out: str | os.PathLike, cfg: "SearchConfig", *,
           target_accuracy: float | None = None, max_drop: float | None = None, run_dir: str | os.PathLike | None = None,
           device: str = "cpu", data_dir: str | None = None, verbose: bool = True) -> dict:
    """Find the smallest .slz file whose decoded model meets a validation-accuracy target, by searching
    channel ratio x weight sparsity with ``cfg.strategy``; write it to ``out``. The run directory
    (default: ``out`` with ``.run`` for ``.slz``) holds the journal; the same command resumes a killed run.
    The winner's test accuracy is measured once, on the model decoded from ``out``."""
    from .search import Journal, SearchConfig, run_search
    from .search.pipeline import CandidatePipeline

    cfg.validate()
    out = _slz_path(out)
    run = Path(run_dir) if run_dir else out.with_suffix(".run")
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    spec = get_dataset_spec(meta["dataset"])
    train_cfg = _checkpoint_recipe(meta)
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, dev, data_dir, train_cfg.seed, cfg.train_subset)
    baseline = evaluate(model, loaders.val)[1]
    target = _search_target(baseline, target_accuracy, max_drop)
    config = json.loads(json.dumps({"checkpoint": str(Path(checkpoint).resolve()), "baseline_val_accuracy": baseline,
                                    "target_accuracy": target, "search": dataclasses.asdict(cfg)}))
    defaults = search_defaults()
    _claim(run, config, defaults)
    journal = Journal(run / "journal.sqlite", config, defaults)
    pipeline = CandidatePipeline(model, meta["model"], meta["dataset"], spec.image_shape, loaders, train_cfg, cfg, run,
                                 verbose=verbose, file_meta=_file_data(meta))
    t0 = time.perf_counter()
    log(f"searching ({cfg.strategy}) for the smallest file at val accuracy >= {target:.4f} "
        f"(baseline {baseline:.4f}); journal {run / 'journal.sqlite'}", verbose=verbose)
    try:
        result = run_search(cfg, target, baseline, journal, pipeline, verbose=verbose)
    finally:
        journal.close()
    summary = {"target_accuracy": target, "baseline_val_accuracy": baseline,
               "baseline_test_accuracy": meta.get("metrics", {}).get("test_accuracy"), "margin": result.margin,
               "search": result.cost(), "candidates": [c.as_dict() for c in result.candidates],
               "run_dir": str(run), "wall_seconds_this_call": time.perf_counter() - t0}
    if result.best is None:
        atomic_write_json(run / "summary.json", {**summary, "file": None})
        top = max((c for c in result.candidates if c.status == "ok"), key=lambda c: c.val_accuracy, default=None)
        found = (f"best found: channels {top.knobs.channel_ratio:g}, sparsity {top.knobs.sparsity:g} -> val "
                 f"{top.val_accuracy:.4f}, {top.file_bytes:,} B" if top else "no candidate finished")
        why = (f"is above the input model's {baseline:.4f}" if target > baseline else "was met by no candidate")
        raise SlimzipError(f"target val accuracy {target:.4f} {why}: infeasible; {found} "
                           f"({len(result.candidates)} candidates, {result.epochs} epochs; journal in {run})")
    best = result.best
    atomic_write_bytes(out, pipeline.file_path(best.key).read_bytes())
    written = decode_model(read_container(out)).to(dev)
    cost = measure(written, spec.image_shape)
    dense_bytes = dense_fp32_bytes(model)
    file_bytes = out.stat().st_size
    summary = {"file": str(out), "file_bytes": file_bytes, "dense_fp32_bytes": dense_bytes,
               "compression_ratio": dense_bytes / file_bytes, "val_accuracy": best.val_accuracy,
               "test_accuracy": evaluate(written, loaders.test)[1], "params": cost.params, "macs": cost.macs,
               "sparsity": sparsity_of(written), "knobs": {**dataclasses.asdict(best.knobs), "candidate": best.id},
               **summary}
    atomic_write_json(run / "summary.json", summary)
    return summary


ABLATIONS = {"structured only": {"max_sparsity": 0.0, "margin": 0.0},
             "unstructured only": {"max_channel_ratio": 0.0, "margin": 0.0},
             "combined": {}}


def compare_search(checkpoint: str | os.PathLike, out: str | os.PathLike, cfg: "SearchConfig", *,
                   strategies: tuple[str, ...] = ("heuristic", "grid", "frontier"), ablation: str | None = "frontier",
                   budget_ratio: float | None = None, target_accuracy: float | None = None,
                   max_drop: float | None = None, device: str = "cpu", data_dir: str | None = None,
                   verbose: bool = True) -> dict:
    """Run several strategies (and the structured-only / unstructured-only / combined ablation with one
    strategy) on the same checkpoint and target; results and cost ratios side by side. Every search has
    its own run directory under ``out``, so each is resumable and none reuses another's candidates.
    ``budget_ratio`` R adds 'frontier-budget': frontier with ``max_epochs`` = R x the heuristic's epochs
    (does frontier at a fraction of the heuristic's cost find a file as small?)."""
    out = Path(out)
    if budget_ratio is not None:
        check_range("budget ratio", budget_ratio, 0.01, 100.0)
        if "heuristic" not in strategies:
            raise SlimzipError("--budget-ratio sets frontier's budget from the heuristic's cost: include heuristic")

    def run(name: str, run_cfg: "SearchConfig") -> dict:
        return search(checkpoint, out / f"{name}.slz", run_cfg, target_accuracy=target_accuracy, max_drop=max_drop,
                      run_dir=out / name, device=device, data_dir=data_dir, verbose=verbose)

    runs = {name: run(name, dataclasses.replace(cfg, strategy=name)) for name in strategies}
    if budget_ratio is not None:
        budget = round(budget_ratio * runs["heuristic"]["search"]["epochs"], 6)
        runs["frontier-budget"] = run("frontier-budget", dataclasses.replace(cfg, strategy="frontier", max_epochs=budget))
    ablations = {}
    for label, overrides in (ABLATIONS.items() if ablation else ()):
        if label == "combined" and ablation in runs:
            ablations[label] = runs[ablation]
        else:
            ablations[label] = run(f"ablation-{ablation}-{label.split()[0]}",
                                   dataclasses.replace(cfg, strategy=ablation, **overrides))
    result = {"checkpoint": str(checkpoint), "target_accuracy": next(iter(runs.values()))["target_accuracy"]
              if runs else None, "strategies": {k: _brief(v) for k, v in runs.items()},
              "ratios": _ratios(runs), "ablation": {k: _brief(v) for k, v in ablations.items()},
              "ablation_strategy": ablation, "budget_ratio": budget_ratio}
    atomic_write_json(out / "compare.json", result)
    return result


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
                                   "wall_seconds": ra["search"]["wall_seconds"] / max(rb["search"]["wall_seconds"], 1e-9),
                                   "candidates": ra["search"]["candidates"] / max(rb["search"]["candidates"], 1)}
    return out
