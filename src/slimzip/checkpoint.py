"""Checkpoints: weights as safetensors, everything else as JSON. Never pickle.

A checkpoint directory holds ``model.safetensors`` and ``model.json`` (format, version, the model spec
``{"name", "kwargs"}`` that rebuilds the architecture from the registry, the dataset, the training
config and the metrics). Writes are atomic, so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_write_bytes, atomic_write_json, commit, temporary_beside  # noqa: F401 - re-exported
from .errors import SlimzipError
from .state import load_state

FORMAT = "slimzip-checkpoint"
VERSION = 1
WEIGHTS, META = "model.safetensors", "model.json"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically (contiguous CPU copies, shared storage split)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    tmp = temporary_beside(path)
    try:
        try:
            save_file(flat, tmp, metadata=metadata)
        except SafetensorError as e:  # safetensors reports a full disk as its own error
            raise OSError(errno.ENOSPC if "No space" in str(e) else errno.EIO, str(e), str(path)) from None
        commit(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise SlimzipError(f"{path}: not a readable safetensors file ({e})") from None


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, spec: dict, **meta: Any) -> Path:
    """Write ``model`` (built from registry ``spec``) and JSON ``meta`` into ``directory``."""
    directory = Path(directory)
    save_tensors(directory / WEIGHTS, model.state_dict())
    atomic_write_json(directory / META, {"format": FORMAT, "version": VERSION, "model": spec, **meta})
    return directory


def read_meta(directory: str | os.PathLike) -> dict:
    """The JSON half of a checkpoint, checked for format and version."""
    path = Path(directory) / META
    if not path.is_file():
        raise SlimzipError(f"{directory}: not a slimzip checkpoint (no {META})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SlimzipError(f"{path}: corrupt checkpoint metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SlimzipError(f"{path}: not a slimzip checkpoint")
    if meta.get("version") != VERSION:
        raise SlimzipError(f"{path}: checkpoint version {meta.get('version')} is not supported (want {VERSION})")
    spec = meta.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
            or not isinstance(spec.get("kwargs", {}), dict):
        raise SlimzipError(f"{path}: checkpoint has no valid model spec")
    return meta


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from its registry spec and load its weights; returns (model, meta)."""
    from .structured import build_model  # Torch-Pruning: only where a model is built

    meta = read_meta(directory)
    spec = meta["model"]
    model = build_model(spec)
    state = load_tensors(Path(directory) / WEIGHTS)
    try:
        load_state(model, state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise SlimzipError(f"{directory}: weights do not fit model {spec['name']} ({first})") from None
    return model.to(device), meta
