"""``slimzip.load``: the model a .slz file holds. Imports the format's modules only (container, codec,
graph), not the training or search pipeline; narrowing a registry model to its stored plan loads
Torch-Pruning when a file needs it."""

from __future__ import annotations

import os

from torch import nn

from .codec import NO_ARCHITECTURE, decode_model, self_describing
from .container import decode_container, read_container
from .errors import SlimzipError


def load(source: str | os.PathLike | bytes, model: nn.Module | None = None) -> nn.Module:
    """The model a .slz file holds, in eval mode. Without ``model``: rebuilt from the file alone (a registry
    model, or the graph the file stores), never executing code from it. With ``model`` (an instance of the
    user's own class, as trained): a copy narrowed to the file's channel plan, with the decoded weights."""
    container = decode_container(bytes(source)) if isinstance(source, (bytes, bytearray)) else read_container(source)
    if model is None and not self_describing(container.manifest):
        raise SlimzipError(NO_ARCHITECTURE)
    return decode_model(container, model).eval()
