"""A .slz file's C model measured on this machine's compiler: flash (text + data) and RAM (static buffers +
the stack bound), the numbers a device budget is checked against."""

from __future__ import annotations

from pathlib import Path

from ..codec import decode_model, self_describing, spec_input_shape
from ..container import decode_container
from ..errors import SlimzipError
from . import cbuild
from .cgen import generate
from .lower import lower, trace
from .stored import stored_tensors


def c_footprint(data: bytes) -> dict[str, int]:
    """{'flash_bytes', 'ram_bytes'} of the C99 model of the .slz bytes ``data`` (compiled, not estimated)."""
    container = decode_container(data)
    if not self_describing(container.manifest):
        raise SlimzipError("a flash or RAM budget needs a file that stores its architecture (a traceable model)")
    model = decode_model(container).eval().cpu()
    shape = spec_input_shape(container.manifest["model"])
    program = lower(trace(model), stored_tensors(container, model), shape)
    with cbuild.scratch() as tmp:
        built = cbuild.build(generate(program, "candidate"), Path(tmp), link=False)
    return {"flash_bytes": built.flash_bytes, "ram_bytes": built.ram_bytes}
