"""Magnitude pruning of single weights (deep compression, step 1: Han et al., ICLR 2016).

Masks are plain data: ``{fqn of a weight: bool tensor}``, True where the weight is kept. They cover the
weights of convolutions and linear layers; BatchNorm parameters and biases are never pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .config import PRUNE_PATTERNS
from .errors import SlimzipError, check_range, unknown

Masks = dict[str, torch.Tensor]
SCOPES = ("layer", "global")
CRITERIA = ("percentile", "std")
LINEAR_ROW = 4  # a linear layer's row: this many neighbouring inputs of one output (a conv's: a kernel row)


def _weight_scores(w: torch.Tensor) -> torch.Tensor:
    return w.abs()


def _row_scores(w: torch.Tensor) -> torch.Tensor:
    """Each kept weight scored by the mean magnitude of its row (a conv kernel's row of ``kw`` weights; a
    linear layer's ``LINEAR_ROW`` neighbouring inputs, the last row shorter), so a row is kept or pruned
    whole: its positions code as one gap and a run of ones. A weight pruned before scores 0, as it does
    alone, so a kept row never revives it."""
    width = w.shape[-1] if w.dim() > 2 else LINEAR_ROW
    rows = torch.nn.functional.avg_pool1d(w.abs().reshape(-1, 1, w.shape[-1]), width, ceil_mode=True)
    return rows.repeat_interleave(width, -1)[..., :w.shape[-1]].reshape(w.shape) * (w != 0)


# what a weight's magnitude is judged by: its own (unstructured) or its row's (structured positions)
PATTERNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = dict(zip(PRUNE_PATTERNS, (_weight_scores, _row_scores)))


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights unstructured pruning acts on: convolution and linear weights, by fqn."""
    return {f"{name}.weight" if name else "weight": m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _threshold(values: torch.Tensor, sparsity: float) -> float:
    """The magnitude below which a fraction ``sparsity`` of ``values`` lies (kthvalue, exact)."""
    k = int(round(sparsity * values.numel()))
    return float(values.flatten().abs().kthvalue(k).values) if k > 0 else -1.0


@dataclass
class MagnitudePruner:
    """Zero the smallest weights.

    ``scope='layer'``: every layer loses ``sparsity`` of its weights (or ``layer_sparsity[fqn]``).
    ``scope='global'``: one magnitude threshold over all prunable weights.
    ``criterion='std'``: per layer, threshold = ``sensitivity`` x std of the layer's weights (Han's rule).
    """

    sparsity: float = 0.9  # fraction of prunable weights set to zero
    scope: str = "layer"
    criterion: str = "percentile"
    sensitivity: float = 1.0  # criterion 'std' only
    layer_sparsity: dict[str, float] = field(default_factory=dict)  # per-layer overrides, scope 'layer'
    pattern: str = "weight"  # 'row': kernel rows (conv) and runs of LINEAR_ROW inputs (linear) pruned whole

    def fit(self, model: nn.Module) -> "MagnitudePruner":
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        if self.scope not in SCOPES:
            raise unknown("pruning scope", self.scope, list(SCOPES))
        if self.criterion not in CRITERIA:
            raise unknown("pruning criterion", self.criterion, list(CRITERIA))
        if self.pattern not in PATTERNS:
            raise unknown("pruning pattern", self.pattern, list(PATTERNS))
        weights = prunable_weights(model)
        if unknown_layers := set(self.layer_sparsity) - set(weights):
            raise SlimzipError(f"layer_sparsity names weights the model does not have: {sorted(unknown_layers)}")
        with torch.no_grad():
            scores = {k: PATTERNS[self.pattern](w.detach()) for k, w in weights.items()}
            self.thresholds_ = self._thresholds(weights, scores)
            self.masks_ = {k: s > self.thresholds_[k] for k, s in scores.items()}
        return self

    def _thresholds(self, weights: dict[str, torch.Tensor], scores: dict[str, torch.Tensor]) -> dict[str, float]:
        if self.criterion == "std":
            return {k: self.sensitivity * float(w.std()) for k, w in weights.items()}
        if self.scope == "global":
            t = _threshold(torch.cat([s.flatten() for s in scores.values()]), self.sparsity)
            return dict.fromkeys(scores, t)
        return {k: _threshold(s, self.layer_sparsity.get(k, self.sparsity)) for k, s in scores.items()}


@torch.no_grad()
def apply_masks_(model: nn.Module, masks: Masks) -> nn.Module:
    """Zero every masked-out weight, in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].dtype))
    return model


def mask_hook(masks: Masks) -> Callable[[nn.Module], None]:
    """An after-step hook: re-zero pruned weights after every optimizer step, so momentum and weight
    decay can never revive them."""
    return lambda model: apply_masks_(model, masks)


def prune_weights(model: nn.Module, sparsity: float, scope: str = "layer") -> Masks:
    """One call: magnitude-prune ``model`` in place and return the masks."""
    masks = MagnitudePruner(sparsity=sparsity, scope=scope).fit(model).masks_
    apply_masks_(model, masks)
    return masks


def masks_from_zeros(model: nn.Module) -> Masks:
    """Masks that keep exactly the nonzero prunable weights (e.g. of a model read back from a file)."""
    return {k: w.detach() != 0 for k, w in prunable_weights(model).items()}


def sparsity_of(model: nn.Module) -> float:
    """Fraction of prunable weights that are exactly zero."""
    weights = prunable_weights(model).values()
    total = sum(w.numel() for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / max(total, 1)
