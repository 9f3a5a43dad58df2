"""Structured pruning: channels are physically removed, so the result is a narrower dense model.

``groups`` finds what must lose channels together (Torch-Pruning's dependency graph), ``criteria`` scores
channels (one table of every criterion and its names), ``plans`` turns scores into a JSON channel plan and
narrows a model with it, ``sensitivity`` gives each layer its own ratio from a per-layer profile,
``slimming`` is network slimming's pruner and gradual loop, ``dropnet`` the DropNet loop (imported on its
own: ``slimzip.structured.dropnet``).
"""

from .groups import (CHANNELS_LAST, CHANNEL_STATS, Group, NORMS, PRUNABLE, TRACE_SECONDS, channel_groups,
                     dependency_graph, prunable_channels, time_limit)
from .criteria import CRITERIA, Criterion, IMPORTANCES, Importance, METHODS, collect_activations, has_norm, probe_point
from .plans import (ChannelPlan, ChannelPruner, apply_plan, build_model, compose_plans, dead_channel_plan, plan_cost,
                    registry_input_shape, validate_plan, widths, zero_channels_hooks)
from .slimming import default_channel_pruner, gradual_prune, prune_once, ratio_after
from .sensitivity import LEVELS, Sensitivity, allocate, layer_profile, sensitivity_pruner

__all__ = [
    'CHANNELS_LAST', 'CHANNEL_STATS', 'CRITERIA', 'ChannelPlan', 'ChannelPruner', 'Criterion', 'Group',
    'IMPORTANCES', 'Importance', 'LEVELS', 'METHODS', 'NORMS', 'PRUNABLE', 'TRACE_SECONDS', 'apply_plan', 'build_model',
    'channel_groups', 'collect_activations', 'compose_plans', 'dead_channel_plan', 'default_channel_pruner',
    'dependency_graph', 'gradual_prune', 'has_norm', 'plan_cost', 'probe_point', 'prunable_channels', 'prune_once',
    'ratio_after', 'registry_input_shape', 'Sensitivity', 'allocate', 'layer_profile',
    'sensitivity_pruner', 'time_limit', 'validate_plan', 'widths', 'zero_channels_hooks',
]
