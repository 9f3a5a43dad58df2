"""The model registry: every architecture slimzip knows, by name, with the dataset it is built for.

A model is rebuilt from plain data, ``{"name": ..., "kwargs": {...}}``, so checkpoints and compressed
files never need the user's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import SlimzipError, unknown


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture."""

    name: str
    factory: Callable[..., nn.Module]
    dataset: str  # the dataset it is built for (input shape, classes)
    paper: str  # where the architecture comes from


MODELS: dict[str, ModelEntry] = {}
MAX_CLASSES = 100_000  # a checkpoint or file asking for more classes is corrupt or hostile, not a model


Factory = Callable[..., nn.Module]


def register_model(name: str, dataset: str, paper: str) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory(num_classes=..., **kwargs) -> nn.Module`` under ``name``."""
    def wrap(factory: Factory) -> Factory:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        MODELS[name] = ModelEntry(name, factory, dataset, paper)
        return factory
    return wrap


def get_model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise unknown("model", name, list(MODELS))
    return MODELS[name]


def init_bn_scales_(model: nn.Module, value: float) -> nn.Module:
    """Set every BatchNorm scale (gamma) to ``value``; network slimming starts them at 0.5."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            nn.init.constant_(m.weight, value)
    return model


def create_model(name: str, num_classes: int | None = None, bn_init: float | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model (or the user's, ``models.user``); ``bn_init`` sets all BN scales (e.g. 0.5
    for slimming)."""
    from .user import create_user_model, is_user_source

    if num_classes is not None and (type(num_classes) is not int or not 2 <= num_classes <= MAX_CLASSES):
        raise SlimzipError(f"num_classes must be an integer in [2, {MAX_CLASSES:,}], got {num_classes!r}")
    if is_user_source(name):
        model = create_user_model(name, num_classes, **kwargs)
        return init_bn_scales_(model, bn_init) if bn_init is not None else model
    entry = get_model_entry(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        model = entry.factory(**kwargs)
    except TypeError as e:
        raise SlimzipError(f"model {name}: bad arguments {kwargs} ({e})") from None
    return init_bn_scales_(model, bn_init) if bn_init is not None else model
