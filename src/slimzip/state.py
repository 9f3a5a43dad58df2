"""Loading tensors into a module the way ``state_dict()`` would give them back: with the module's own
per-module metadata (the ``version`` a layer's ``_load_from_state_dict`` may insist on, as MNASNet's
does). A plain dict of tensors (from safetensors, or decoded from a .slz file) carries none."""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn


def load_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], strict: bool = True):
    """``model.load_state_dict(tensors, strict)`` with the model's own metadata attached."""
    state = OrderedDict(tensors)
    state._metadata = getattr(model.state_dict(keep_vars=True), "_metadata", OrderedDict())  # type: ignore[attr-defined]
    return model.load_state_dict(state, strict=strict)
