"""Network slimming's pruning: the default channel pruner (BN scales) and the gradual loop of passes
(prune a share, fine-tune, prune again) that ``prune-channels --passes`` runs."""

from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

from ..schedule import sparsity_steps
from .criteria import CRITERIA, collect_activations
from .groups import NORMS, channel_groups
from .plans import ChannelPlan, ChannelPruner, compose_plans, widths


def default_channel_pruner(model: nn.Module, channel_ratio: float, scope: str = "auto") -> ChannelPruner:
    """Network slimming (BN scales; a group without BatchNorm falls back to its filters' L1 norm and loses
    the ratio itself). ``scope='auto'``: slimming's one global threshold where the model has BatchNorm,
    per layer without (L1 norms of different layers do not compare); 'global' or 'layer' force one."""
    if scope == "auto":
        scope = "global" if any(isinstance(m, NORMS) for m in model.modules()) else "layer"
    return ChannelPruner(importance="bn_scale", channel_ratio=channel_ratio, scope=scope)


def prune_once(model: nn.Module, pruner: ChannelPruner, shape: tuple[int, ...], train: Iterable) -> nn.Module:
    """One pruning step; activation criteria (DropNet's, APoZ) score over the whole training split."""
    activations = None
    if CRITERIA[pruner.importance].needs_activations:
        activations = collect_activations(model, channel_groups(model, shape)[0], train)
    return pruner.fit(model, shape, activations).transform(model, shape)


def ratio_after(step: int, passes: int, ratio: float) -> float:
    """Of the input's channels, the fraction removed after ``step`` of ``passes`` equal steps (each
    removes the same share of what is left); the last step ends at ``ratio`` itself."""
    return ratio if step == passes else sparsity_steps(0.0, ratio, passes)[step - 1]


def gradual_prune(model: nn.Module, plan: ChannelPlan | None, history: list[dict], steps: range, shape: tuple[int, ...],
                  train: Iterable, pruner_at: Callable[[int], ChannelPruner],
                  finetune: Callable[[nn.Module, int], float], evaluate: Callable[[nn.Module], float],
                  after_pass: Callable[[nn.Module, ChannelPlan, list[dict], int], None]
                  ) -> tuple[nn.Module, ChannelPlan]:
    """The passes ``steps`` (1-based; the last is ``steps.stop - 1``, which reaches the final ratio): prune
    with ``pruner_at(step)``, ``finetune(model, step)`` (returns the epochs trained), record the pass in
    ``history``, and hand every pass but the last to ``after_pass`` (a checkpoint a rerun resumes from)."""
    last = steps.stop - 1
    for step in steps:
        pruner = pruner_at(step)
        model = prune_once(model, pruner, shape, train)
        plan = compose_plans(plan, pruner.plan_)
        pruned_val = evaluate(model)
        epochs = finetune(model, step)
        history.append({"pass": step, "widths": widths(model), "val_accuracy_before_finetune": pruned_val,
                        "val_accuracy": evaluate(model) if epochs else pruned_val, "criteria": pruner.criteria_})
        if step != last:
            after_pass(model, plan, history, step)
    return model, plan
