"""A .slz file's C model: built from the decoded model and the tensors as the file keeps them, and measured
on this machine's compiler: flash (text + data) and RAM (static buffers + the stack bound), the numbers a
device budget is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from ..codec import decode_model, self_describing, spec_input_shape
from ..container import Container, decode_container
from ..errors import SlimzipError
from . import cbuild
from .cgen import CModel, generate
from .lower import lower, trace
from .stored import stored_tensors

LATENCY_RUNS = 25  # single-image runs of the compiled model; the median is the latency


def c_model(model: nn.Module, container: Container | None, shape: tuple[int, ...], name: str,
            about: str = "") -> CModel:
    """The C99 model of ``model`` (decoded from ``container``: its weights as the file keeps them; None:
    every weight a float32 array)."""
    stored = stored_tensors(container, model) if container is not None else {}
    return generate(lower(trace(model), stored, shape), name, about)


def c_footprint(data: bytes, latency: bool = False) -> dict:
    """{'flash_bytes', 'ram_bytes'} of the C99 model of the .slz bytes ``data`` (compiled, not estimated);
    with ``latency``, 'latency_ms' too: the median of LATENCY_RUNS single-image runs on this CPU."""
    container = decode_container(data)
    if not self_describing(container.manifest):
        raise SlimzipError("a flash or RAM budget needs a file that stores its architecture (a traceable model)")
    shape = spec_input_shape(container.manifest["model"])
    cmodel = c_model(decode_model(container).eval().cpu(), container, shape, "candidate")
    with cbuild.scratch() as tmp:
        built = cbuild.build(cmodel, Path(tmp), link=latency)
        out = {"flash_bytes": built.flash_bytes, "ram_bytes": built.ram_bytes}
        if latency:
            images = np.random.default_rng(0).standard_normal((LATENCY_RUNS, *shape)).astype(np.float32)
            out["latency_ms"] = 1e3 * cbuild.median_seconds(built, images)
    return out
