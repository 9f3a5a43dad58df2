"""A .slz file's C model measured on this machine's compiler: flash (text + data) and RAM (static buffers +
the stack bound), the numbers a device budget is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..codec import decode_model, self_describing, spec_input_shape
from ..container import decode_container
from ..errors import SlimzipError
from . import cbuild
from .cgen import generate
from .lower import lower, trace
from .stored import stored_tensors


LATENCY_RUNS = 25  # single-image runs of the compiled model; the median is the latency


def c_footprint(data: bytes, latency: bool = False) -> dict:
    """{'flash_bytes', 'ram_bytes'} of the C99 model of the .slz bytes ``data`` (compiled, not estimated);
    with ``latency``, 'latency_ms' too: the median of LATENCY_RUNS single-image runs on this CPU."""
    container = decode_container(data)
    if not self_describing(container.manifest):
        raise SlimzipError("a flash or RAM budget needs a file that stores its architecture (a traceable model)")
    model = decode_model(container).eval().cpu()
    shape = spec_input_shape(container.manifest["model"])
    program = lower(trace(model), stored_tensors(container, model), shape)
    cmodel = generate(program, "candidate")
    with cbuild.scratch() as tmp:
        built = cbuild.build(cmodel, Path(tmp), link=latency)
        out = {"flash_bytes": built.flash_bytes, "ram_bytes": built.ram_bytes}
        if latency:
            images = np.random.default_rng(0).standard_normal((LATENCY_RUNS, *shape)).astype(np.float32)
            out["latency_ms"] = 1e3 * cbuild.median_seconds(built, images, cmodel.output_size)
    return out
