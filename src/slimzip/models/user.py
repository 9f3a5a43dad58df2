"""Models the user brings by name on the command line: ``path/to/file.py:factory``,
``package.module:factory`` (the user's own code, imported because the user named it) or ``timm:NAME``.

A factory is called with ``num_classes=`` when it takes that argument and must return an ``nn.Module``.
Checkpoints record the source (a file path made absolute); compressed files never need it: they store
the model's graph (``slimzip.graph``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import SlimzipError

_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def is_user_source(name: str) -> bool:
    """Whether a ``--model`` value names the user's code (has a ``:``) rather than a registry model."""
    return ":" in name


def normalise_source(source: str) -> str:
    """The source with a file path made absolute, so a checkpoint finds it from any directory."""
    where, _, factory = source.rpartition(":")
    if where.endswith(".py"):
        return f"{Path(where).expanduser().resolve()}:{factory}"
    return source


def _load_factory(source: str) -> Callable[..., Any]:
    where, _, name = source.rpartition(":")
    if where == "timm":
        try:
            import_torchvision()  # timm imports it
            import timm  # noqa: PLC0415 - optional, and heavy
        except Exception as e:  # timm imports torchvision, which may not import beside a CPU torch build
            raise SlimzipError(f"--model {source}: timm is not importable here ({type(e).__name__}: {e})") from None
        return lambda **kw: timm.create_model(name, pretrained=False, **kw)
    if not where or not name.isidentifier():
        raise SlimzipError(f"--model {source!r}: want path/to/file.py:factory, package.module:factory or timm:NAME")
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise SlimzipError(f"--model {source}: no such file {path}")
        module_name = f"slimzip_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as e:
            raise SlimzipError(f"--model {source}: importing {path} failed ({type(e).__name__}: {e})") from None
    elif _MODULE.match(where):
        try:
            module = importlib.import_module(where)
        except Exception as e:
            raise SlimzipError(f"--model {source}: cannot import {where} ({type(e).__name__}: {e})") from None
    else:
        raise SlimzipError(f"--model {source!r}: {where!r} is neither a .py file nor a module name")
    factory = getattr(module, name, None)
    if not callable(factory):
        raise SlimzipError(f"--model {source}: {where} has no callable {name!r}")
    return factory


def create_user_model(source: str, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Call the named factory (with ``num_classes`` where it takes it); the result must be an ``nn.Module``."""
    factory = _load_factory(source)
    try:
        takes = "num_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes = True
    if num_classes is not None and takes:
        kwargs["num_classes"] = num_classes
    try:
        model = factory(**kwargs)
    except Exception as e:
        raise SlimzipError(f"--model {source}: the factory failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise SlimzipError(f"--model {source}: the factory returned {type(model).__name__}, not a torch nn.Module")
    return model


_TORCHVISION_OPS = {"nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"}
_libraries: list = []  # the schemas defined below live as long as the process


def import_torchvision():
    """``import torchvision``, also where its wheel was built for another torch than this CPU build (its
    compiled detection ops do not load): torchvision then still registers fake kernels for ``nms`` and
    ``qnms``, and fails on their missing schemas; those are defined here (classification models never call
    them) and the import is tried again. Returns the module, or raises what the import raised."""
    import sys

    import torch

    try:
        import torchvision  # noqa: PLC0415
        return torchvision
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _TORCHVISION_OPS.items():
        if not hasattr(torch.ops.torchvision, op):
            lib.define(schema)
    _libraries.append(lib)
    import torchvision  # noqa: PLC0415
    return torchvision
