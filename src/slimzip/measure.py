"""Model size and cost: parameters, MACs (multiply-accumulates; FLOPs = 2 x MACs), dense fp32 bytes.

MACs count convolutions and linear layers, the convention of the papers slimzip compares against
(BatchNorm, pooling and activations are left out). ``nonzero`` MACs count only weights that are not
exactly zero, i.e. what a sparse kernel would do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Cost:
    params: int
    macs: int  # dense multiply-accumulates for one image
    nonzero_macs: int  # MACs whose weight is not exactly zero

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs, "flops": self.flops, "nonzero_macs": self.nonzero_macs}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def dense_fp32_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (BN statistics) stored as float32."""
    return 4 * (count_params(model) + sum(b.numel() for b in model.buffers() if b.is_floating_point()))


def _layer_macs(module: nn.Module, out: torch.Tensor) -> tuple[int, int]:
    """(dense, nonzero) MACs of one conv or linear layer for one image, given its output."""
    w = module.weight
    per_output = w[0].numel()  # (in/groups) x kh x kw for conv, in_features for linear
    positions = out[0].numel() // w.shape[0]  # spatial positions (1 for a linear layer)
    nonzero = (w.numel() if w.is_meta else int(torch.count_nonzero(w).item())) * positions  # meta: shapes only
    return out[0].numel() * per_output, nonzero


@torch.no_grad()
def measure(model: nn.Module, input_shape: tuple[int, ...]) -> Cost:
    """Params and MACs of ``model`` for one input of shape ``input_shape`` (C, H, W or features)."""
    totals = [0, 0]

    def hook(module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        dense, nonzero = _layer_macs(module, out)
        totals[0] += dense
        totals[1] += nonzero

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return Cost(count_params(model), totals[0], totals[1])
