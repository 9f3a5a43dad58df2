"""Importance criteria: (group, activations of the group's root) -> one score per channel, in one table
with every name a criterion goes by (``prune-channels --method``, DropNet's metric)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import SlimzipError
from .groups import NORMS, PRUNABLE, Group, _out_items, _root_size

Importance = Callable[[Group, "torch.Tensor | None", torch.Generator], torch.Tensor]


def _bn_scale(group: Group, _act, _gen) -> torch.Tensor:
    norms = [(m.weight.detach().abs()[idx]) for m, idx in _out_items(group) if isinstance(m, NORMS) and m.affine]
    if not norms:
        raise SlimzipError("the bn_scale criterion needs BatchNorm layers; this model has a group without one")
    return torch.stack(norms).sum(0)


def has_norm(group: Group) -> bool:
    return any(isinstance(m, NORMS) and m.affine for m, _ in _out_items(group))


def _weight_norm(p: int) -> Importance:
    def score(group: Group, _act, _gen) -> torch.Tensor:
        rows = [m.weight.detach()[idx].flatten(1).norm(p=p, dim=1) for m, idx in _out_items(group)
                if isinstance(m, PRUNABLE)]
        return torch.stack(rows).sum(0)
    return score


def _activation(sign: float, key: int) -> Importance:
    def score(group: Group, act, _gen) -> torch.Tensor:
        if act is None:
            raise SlimzipError("activation-based criteria need activations (pass a data loader)")
        return sign * act[key]
    return score


@dataclass(frozen=True)
class Criterion:
    """One importance criterion, with every name it goes by."""

    score: Importance
    method: str  # `prune-channels --method`
    dropnet: str | None = None  # DropNet's metric (with '_layer': per-layer scope)
    needs_activations: bool = False  # scored from activations over the training split
    fallback: str | None = None  # the criterion for a group this one cannot score (no BatchNorm)


CRITERIA: dict[str, Criterion] = {
    "bn_scale": Criterion(_bn_scale, "slimming", fallback="l1"),  # network slimming: |gamma|
    "l1": Criterion(_weight_norm(1), "l1"),  # filter L1 norm (Li et al.)
    "l2": Criterion(_weight_norm(2), "l2"),
    "random": Criterion(lambda group, act, gen: torch.rand(_root_size(group), generator=gen), "random", "random"),
    # DropNet: mean |post-activation|, low is dropped; 'max' drops the most active (its ablation)
    "dropnet": Criterion(_activation(1.0, 0), "dropnet", "min", needs_activations=True),
    "dropnet_max": Criterion(_activation(-1.0, 0), "dropnet_max", "max", needs_activations=True),
    "apoz": Criterion(_activation(-1.0, 1), "apoz", "apoz", needs_activations=True),  # many zeros is dropped
}
IMPORTANCES: dict[str, Importance] = {name: c.score for name, c in CRITERIA.items()}
METHODS: dict[str, str] = {c.method: name for name, c in CRITERIA.items()}  # command-line method -> criterion


def probe_point(group: Group) -> tuple[nn.Module, list[int]]:
    """Where a group's channels are read before their activation: the BN after a conv or linear if there
    is one, else the layer itself; with the group's channel indices in that module's output."""
    items = list(_out_items(group))
    return next(((m, i) for m, i in items if isinstance(m, NORMS)), items[0])


@torch.no_grad()
def collect_activations(model: nn.Module, groups: dict[str, Group], batches: Iterable) -> dict[str, torch.Tensor]:
    """Per group: (mean |ReLU(output)|, fraction of zeros) per channel of the last out-item module of the
    group in forward order (the BN after a conv if there is one), over ``batches`` of (x, y)."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    count = [0]
    for root, group in groups.items():
        module, idx = probe_point(group)

        def hook(mod, inp, out, root=root, idx=idx):
            a = torch.relu(out.detach().float())[:, idx]
            dims = [0] + list(range(2, a.dim()))
            stats = torch.stack([a.abs().mean(dims), (a == 0).float().mean(dims)])
            sums[root] = sums.get(root, 0) + stats * a.shape[0]
        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for x, _ in batches:
            model(x)
            count[0] += x.shape[0]
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {k: v / max(count[0], 1) for k, v in sums.items()}
