"""Per-layer channel ratios from each layer's sensitivity (``--channel-scope sensitivity``).

One global BN threshold compares scales that do not compare across layers (LeNet-5's conv2 loses its
channels first although each feeds 800 fc1 weights), and one ratio per layer removes as much from the
layer that matters most as from the one that matters least. Here every group is pruned alone, at each of
``LEVELS``, and scored (BN statistics re-estimated, then validation accuracy): the *profile*. A channel
ratio is then spread over the groups at one common accuracy drop: each group loses the largest share whose
own drop stays within it, and the drop is the smallest that removes the ratio of all channels (bisection).
The sensitivity analysis of Han et al. (2015), with the allocation made by the ratio the search asks for.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .plans import ChannelPruner

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # channel shares each group is scored at


@dataclass
class Sensitivity:
    """A model's layer profile: plain data (saved as JSON with a search's run)."""

    base: float  # the unpruned model's score
    profile: dict[str, list[float]]  # group root -> score at each of LEVELS, that group pruned alone
    widths: dict[str, int]  # group root -> channels before pruning
    epochs: float = 0.0  # what scoring cost, in training-set passes (BN recalibration)
    wall_seconds: float = 0.0

    @classmethod
    def from_json(cls, data: dict) -> "Sensitivity":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def layer_profile(model: nn.Module, input_shape: tuple[int, ...], score: Callable[[nn.Module], float],
                  pruner: ChannelPruner) -> Sensitivity:
    """Each group of ``model`` pruned alone at each of ``LEVELS`` and scored. ``score`` scores a pruned
    copy (it may recalibrate it); ``pruner`` (its importance, min_channels, round_to) picks the channels.
    ``model`` is not changed."""
    scores = copy.copy(pruner).fit(model, input_shape).scores_  # one score per channel of every group
    result = Sensitivity(score(copy.deepcopy(model)), {}, {root: len(s) for root, s in scores.items()})
    for root in scores:
        result.profile[root] = [
            score(dataclasses.replace(pruner, layer_ratios={r: level if r == root else 0.0 for r in scores})
                  .fit_transform(copy.deepcopy(model), input_shape))
            for level in LEVELS]
    return result


def sensitivity_pruner(template: ChannelPruner, sensitivity: Sensitivity, channel_ratio: float) -> ChannelPruner:
    """``template`` (importance, min_channels, ...) removing ``channel_ratio`` of the profiled model's
    channels, each group its ``allocate``d share, counted on the profiled widths (a model some of whose
    channels are already gone loses the rest)."""
    ratios = allocate(sensitivity.base, sensitivity.profile, sensitivity.widths, channel_ratio)
    return dataclasses.replace(template, scope="layer", layer_ratios=ratios, base_widths=dict(sensitivity.widths))


def _share_within(base: float, accuracies: list[float], drop: float) -> float:
    """The largest share of a group's channels (linear between LEVELS) whose accuracy stays within ``drop``
    of ``base``; accuracies are made non-increasing first (a share never scores above a smaller one)."""
    points, lowest = [(0.0, base)], base
    for level, acc in zip(LEVELS, accuracies):
        lowest = min(lowest, acc)
        points.append((level, lowest))
    floor = base - drop
    for (r0, a0), (r1, a1) in zip(points, points[1:]):
        if a1 < floor:
            return r0 if a0 == a1 else r0 + (r1 - r0) * (a0 - floor) / (a0 - a1)
    return points[-1][0]


def allocate(base: float, profile: dict[str, list[float]], widths: dict[str, int],
             channel_ratio: float) -> dict[str, float]:
    """Each group's share of channels to remove so that ``channel_ratio`` of all channels go (counted on
    ``widths``, the groups' widths before any pruning) at the smallest common accuracy drop. Where a drop
    frees more than the ratio at once (a flat stretch of a profile), the shares are interpolated between
    the drop just below and the one that suffices. A ratio the largest level cannot reach leaves every
    group at that level."""
    def shares(drop: float) -> dict[str, float]:
        return {g: _share_within(base, accs, drop) for g, accs in profile.items()}

    def removed(s: dict[str, float]) -> float:
        return sum(v * widths[g] for g, v in s.items())
    want = channel_ratio * sum(widths[g] for g in profile)
    low, high = 0.0, 1.0 + max(0.0, base)
    if removed(shares(high)) < want:
        return shares(high)
    below, above = {g: 0.0 for g in profile}, shares(0.0)
    if removed(above) < want:
        for _ in range(60):
            mid = (low + high) / 2
            low, high = (mid, high) if removed(shares(mid)) < want else (low, mid)
        below, above = shares(low), shares(high)
    gap = removed(above) - removed(below)
    t = (want - removed(below)) / gap if gap > 0 else 1.0
    return {g: below[g] + t * (above[g] - below[g]) for g in profile}
