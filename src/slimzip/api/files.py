"""The .slz file and what comes out of a run: deep compression, inspect, ONNX export, reports."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ..checkpoint import atomic_write_bytes, load_checkpoint
from ..errors import check_finite
from ..codec import check_model_spec, decode_model, model_table, self_describing, table_alone, with_entropies
from ..container import decode_container, read_container
from ..data import get_dataset_spec
from ..config import CompressConfig
from ..errors import SlimzipError
from ..inspection import inspect_container
from ..measure import measure
from ..structured import widths
from ..summaries import CompressSummary
from ..models.user import is_user_source
from .common import _checkpoint_loaders, _checkpoint_recipe, _file_data, _slz_path, resolve_device




def report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> dict:
    """Tables (and, with matplotlib, plots) of a run directory, written as one HTML page."""
    from ..report import chosen_file, layers_section, sections_of, to_html, to_text

    run = Path(run_dir)
    kind, sections = sections_of(run)
    if kind == "search" and (chosen := chosen_file(run)) is not None:  # the winner, layer by layer
        try:
            sections.append(layers_section(chosen, inspect_file(chosen)["layers"]))
        except SlimzipError as e:
            sections.append(layers_section(chosen, None, str(e)))
    out = Path(out) if out else run / "report.html"
    if out.suffix != ".html":
        raise SlimzipError(f"{out}: the report file must end in .html")
    page, plots = to_html(f"slimzip {kind}: {run}", sections)
    atomic_write_bytes(out, page.encode())
    return {"run": str(run), "kind": kind, "file": str(out), "plots": plots, "text": to_text(sections),
            "sections": [dataclasses.asdict(s) for s in sections]}


def compress(checkpoint: str | os.PathLike, out: str | os.PathLike, cfg: CompressConfig, *, device: str = "cpu",
             data_dir: str | None = None, verbose: bool = True, seed: int | None = None) -> CompressSummary:
    """Compress a trained checkpoint into a .slz file with fixed knobs: ``slimzip.compress`` on the
    checkpoint's model and data (the checkpoint's recipe for batches and seed); accuracy is measured on
    the model decoded from the written file."""
    from .. import core

    cfg.validate()
    out = _slz_path(out)
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    check_finite(model, str(checkpoint))
    train_cfg = _checkpoint_recipe(meta)
    if seed is not None:
        train_cfg = dataclasses.replace(train_cfg, seed=seed)
    loaders = _checkpoint_loaders(meta, train_cfg.batch_size, dev, data_dir, train_cfg.seed)
    shape = get_dataset_spec(meta.get("dataset")).image_shape
    dense = measure(model, shape)
    units_before = sum(widths(model).values())
    result = core.compress(model, loaders, None, config=cfg, train_config=train_cfg, out=out, device=dev,
                           verbose=verbose, seed=seed, file_meta={"dataset": meta.get("dataset"), **_file_data(meta)},
                           spec=None if is_user_source(meta["model"]["name"]) else meta["model"])
    container = decode_container(result.data)  # the bytes just written, already in memory
    cost = measure(result.model, shape)
    summary: CompressSummary = {**result.summary(), "file": str(out), "nonzero_macs": cost.nonzero_macs,
                                "dense_macs": dense.macs, "epochs": result.search["epochs"],
                                "wall_seconds": result.search["wall_seconds"],
                                "dead_units_removed": units_before - sum(widths(result.model).values()),
                                "components": inspect_container(container, model_table(container, result.model))[
                                    "components"]}
    return summary


def inspect_file(path: str | os.PathLike) -> dict:
    """Per-tensor and per-component bytes of a .slz file (the components add up to the file size). The
    model is decoded first: a file that does not decode is refused, not shown."""
    container = read_container(path)
    check_model_spec(container.manifest, container.version, with_model=True)  # a plan alone: shown by name (v3)
    model = decode_model(container) if self_describing(container.manifest) else None
    table = model_table(container, model) if model is not None else table_alone(container)
    report = inspect_container(container, with_entropies(container, table))
    spec = container.manifest["model"]
    return {"file": str(path), "model": spec, "architecture": architecture_name(spec, model),
            "dataset": container.manifest.get("dataset"), **report,
            "layers": layer_rows(model, _full_width(spec), report["tensors"]) if model is not None else []}


def _full_width(spec: dict) -> torch.nn.Module | None:
    """The registry model a file's plan narrowed, at full width (None: a graph stores the narrowed model
    only)."""
    if "name" not in spec:
        return None
    from ..models import create_model

    return create_model(spec["name"], **spec.get("kwargs", {}))


def _width(module: torch.nn.Module) -> int | None:
    for attr in ("out_channels", "out_features", "num_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    return None


def _in_graph_order(model: torch.nn.Module) -> list[str]:
    """The model's layer names as its forward calls them (an fx graph's node order), else as registered."""
    names = [n for n, _ in model.named_modules()]
    graph = getattr(model, "graph", None)
    called = [str(node.target) for node in graph.nodes if node.op == "call_module"] if graph is not None else []
    return list(dict.fromkeys([*called, *names]))


def layer_rows(model: torch.nn.Module, full: torch.nn.Module | None, tensors: list[dict]) -> list[dict]:
    """One row per layer that holds tensors, in graph order: its kind, output width (before -> after the
    channel plan where the full-width model is known), weights, kept weights, codebook bits and bytes."""
    modules, before = dict(model.named_modules()), dict(full.named_modules()) if full is not None else {}
    by_layer: dict[str, list[dict]] = {}
    for t in tensors:
        by_layer.setdefault(t["name"].rpartition(".")[0], []).append(t)
    rows = []
    for name in _in_graph_order(model):
        if name not in by_layer or name not in modules:
            continue
        ts, module = by_layer.pop(name), modules[name]
        shared = [t for t in ts if t["encoding"] == "shared"]
        rows.append({"layer": name, "kind": type(module).__name__, "width": _width(module),
                     "width_before": _width(before[name]) if name in before else None,
                     "weights": sum(t["weights"] for t in ts),
                     "kept": sum(round(t["weights"] * t["kept"]) for t in ts),
                     "bits": max((t["bits"] for t in shared), default=None), "bytes": sum(t["bytes"] for t in ts)})
    return rows


def architecture_name(spec: dict, model: torch.nn.Module | None) -> str:
    """How a file's model is named to a person: its registry name, or the graph it stores."""
    if "name" in spec:
        return spec["name"]
    if model is None:
        return "a user model (architecture not stored: load it with the model's class)"
    layers = sum(1 for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return f"a user model stored as a graph ({layers} conv / linear layers)"
