"""Channel plans: which channels each group keeps, and the narrowed model.

A channel plan is plain JSON, ``{root fqn: [kept channel indices]}``: ``ChannelPruner.fit`` produces it
from an importance criterion, ``apply_plan`` narrows a model with it, and a registry name plus a plan
rebuilds the narrowed model anywhere.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from ..errors import NarrowingError, SlimzipError, check_range, unknown
from .criteria import CRITERIA, IMPORTANCES, has_norm
from .groups import (CHANNELS_LAST, NORMS, PRUNABLE, Group, _eval_forward, _has_own_pruner, _out_items, _root_size,
                     channel_groups, dependency_graph)

ChannelPlan = dict[str, list[int]]

@dataclass
class ChannelPruner:
    """Choose which channels to keep.

    ``scope='global'``: one threshold over the scores of all groups (network slimming's percentile of
    |gamma|; DropNet's ``min``). ``scope='layer'``: every group loses ``channel_ratio`` of its channels
    (DropNet's ``min_layer``). A group always keeps at least ``min_channels``; kept widths are rounded
    up to a multiple of ``round_to``. ``base_widths`` (by fqn) counts the ratio against those widths
    instead of the current ones: a later step of a gradual prune, where earlier steps removed the rest,
    ends at exactly the widths one step at the same ratio gives. ``layer_ratios`` (by fqn): each group's
    own ratio instead of ``channel_ratio`` (``structured.sensitivity``); the scope is then per layer.
    """

    importance: str = "bn_scale"
    channel_ratio: float = 0.5  # fraction of channels removed
    scope: str = "global"
    min_channels: int = 1
    round_to: int = 1
    seed: int = 0
    base_widths: dict[str, int] | None = None
    layer_ratios: dict[str, float] | None = None

    def fit(self, model: nn.Module, input_shape: tuple[int, ...],
            activations: dict[str, torch.Tensor] | None = None) -> "ChannelPruner":
        check_range("channel ratio", self.channel_ratio, 0.0, 1.0, high_open=True)
        if self.importance not in IMPORTANCES:
            raise unknown("importance", self.importance, list(IMPORTANCES))
        if self.scope not in ("global", "layer"):
            raise unknown("scope", self.scope, ["global", "layer"])
        for ratio in (self.layer_ratios or {}).values():
            check_range("channel ratio", ratio, 0.0, 1.0, high_open=True)
        if self.min_channels < 1 or self.round_to < 1:
            raise SlimzipError("min_channels and round_to must be at least 1 (a layer never loses its last channel)")
        groups, self.graph_ = channel_groups(model, input_shape)
        self.groups_ = groups  # valid while the model is unchanged (the graph holds the modules)
        gen = torch.Generator().manual_seed(self.seed)
        self.criteria_ = {k: self._criterion(g) for k, g in groups.items()}
        self.scores_ = {k: IMPORTANCES[self.criteria_[k]](g, (activations or {}).get(k), gen).float()
                        for k, g in groups.items()}
        self.tiebreak_ = {k: _filter_norms(g, len(self.scores_[k])) for k, g in groups.items()}
        self.tied_ = [k for k, s in self.scores_.items() if len(s) > 1 and bool((s == s[0]).all())]
        if self.tied_ and self.channel_ratio + max((self.layer_ratios or {}).values(), default=0.0) > 0:
            warnings.warn(f"every channel scores the same under {self.importance} in {len(self.tied_)} channel "
                          f"group(s) (tied scales carry no information, e.g. a BatchNorm as initialised): "
                          f"{', '.join(self.tied_[:5])}{', ...' if len(self.tied_) > 5 else ''}; "
                          "their channels are ranked by filter L1 norm instead", stacklevel=2)
        self.plan_ = self._plan()
        return self

    def _criterion(self, group: Group) -> str:
        """The importance for one group: the chosen one, or its fallback where the group has no BatchNorm."""
        fallback = CRITERIA[self.importance].fallback
        return fallback if fallback and not has_norm(group) else self.importance

    def transform(self, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
        """Narrow ``model`` (in place) to the fitted plan ``plan_``; a plan read back from JSON narrows
        a model the same way through ``apply_plan``."""
        if not hasattr(self, "plan_"):
            raise SlimzipError("ChannelPruner.transform needs a fitted plan: call fit first")
        return apply_plan(model, self.plan_, input_shape)

    def fit_transform(self, model: nn.Module, input_shape: tuple[int, ...],
                      activations: dict[str, torch.Tensor] | None = None) -> nn.Module:
        return self.fit(model, input_shape, activations).transform(model, input_shape)

    def _plan(self) -> ChannelPlan:
        base = {g: (self.base_widths or {}).get(g, len(s)) for g, s in self.scores_.items()}
        ratios = self.layer_ratios or {}
        keep_counts = {g: min(len(s), base[g] - int(ratios.get(g, self.channel_ratio) * base[g]))
                       for g, s in self.scores_.items()}
        # one global threshold over the groups scored by the chosen criterion; fallback scores do not
        # compare with them, so those groups lose the ratio each (layer scope)
        pooled = [g for g in self.scores_ if self.criteria_[g] == self.importance]
        if self.scope == "global" and pooled and not ratios:
            every = torch.cat([self.scores_[g] for g in pooled])
            removed_before = sum(base[g] for g in pooled) - len(every)
            k = max(0, min(len(every), int(self.channel_ratio * sum(base[g] for g in pooled)) - removed_before))
            # exactly the k lowest go: ties (equal scores) are broken by filter norm, then by position
            owner = torch.cat([torch.full((len(self.scores_[g]),), i) for i, g in enumerate(pooled)])
            lowest = owner[_ranked(every, torch.cat([self.tiebreak_[g] for g in pooled]))[:k]]
            removed = torch.bincount(lowest, minlength=len(pooled))
            keep_counts.update({g: len(self.scores_[g]) - int(removed[i]) for i, g in enumerate(pooled)})
        plan = {}
        for g, scores in self.scores_.items():
            n = max(keep_counts[g], self.min_channels)
            n = min(len(scores), -(-n // self.round_to) * self.round_to)
            plan[g] = sorted(_ranked(scores, self.tiebreak_[g]).flip(0)[:n].tolist())
        return plan


def _ranked(scores: torch.Tensor, tiebreak: torch.Tensor) -> torch.Tensor:
    """Indices from the least to the most important channel: by score, equal scores by ``tiebreak``, equal
    both by position (the later channel counts as less important, so the first ones are kept)."""
    position = torch.arange(len(scores), 0, -1, dtype=torch.float64)
    order = position.argsort(stable=True)
    order = order[tiebreak[order].argsort(stable=True)]
    return order[scores[order].argsort(stable=True)]


def _filter_norms(group: Group, size: int) -> torch.Tensor:
    """The secondary score that breaks ties: each channel's filter L1 norm (zeros where the group has no
    conv or linear layer to read it from)."""
    try:
        norms = IMPORTANCES["l1"](group, None, torch.Generator()).float()
    except (RuntimeError, IndexError):  # no prunable layer in the group
        return torch.zeros(size)
    return norms if norms.shape == (size,) else torch.zeros(size)


def apply_plan(model: nn.Module, plan: ChannelPlan, input_shape: tuple[int, ...], *,
               check_roots: bool = False) -> nn.Module:
    """Physically remove the channels a plan does not keep, in place; returns the model. ``check_roots``:
    a plan read from a file, whose roots must be plan roots (``_plan_roots``); slimzip's own plans are."""
    modules = dict(model.named_modules())
    roots = {name: modules.get(name) for name in plan}
    if bad := [n for n, m in roots.items() if not isinstance(m, PRUNABLE)]:
        raise SlimzipError(f"the channel plan names layers this model does not have: {sorted(bad)[:3]}")
    if not plan:
        return model
    sizes = {root: _out_size(m) for root, m in roots.items()}
    example = torch.zeros(1, *input_shape)
    graph = _plan_roots(model, plan, input_shape) if check_roots else dependency_graph(model, example)
    for root, kept in plan.items():
        module = roots[root]
        size = _out_size(module)
        if size != sizes[root]:  # narrowed already, as a member of an earlier root's group
            if len(kept) != size:
                raise NarrowingError(f"channel plan for {root}: its group was narrowed to {size} channels by another "
                                     f"root of the plan, which keeps {len(kept)}")
            continue
        if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= size:
            raise SlimzipError(f"channel plan for {root}: kept indices must be distinct, in [0, {size}), not empty")
        removed = sorted(set(range(size)) - set(kept))
        if removed:
            handler = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
            graph.get_pruning_group(module, handler, idxs=removed).prune()
    _check_runs(model, input_shape)
    return model


def _plan_roots(model: nn.Module, plan: ChannelPlan, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    """The model's dependency graph, once every root of ``plan`` is shown to be a plan root: a conv or
    linear layer whose output channels form one of the model's removable channel groups."""
    with warnings.catch_warnings():  # the groups left unpruned are the search's news, not a reader's
        warnings.simplefilter("ignore")
        groups, graph = channel_groups(model, input_shape)
    names = {m: n for n, m in model.named_modules()}
    allowed = {names[m] for group in groups.values() for m, _ in _out_items(group) if isinstance(m, PRUNABLE)}
    if bad := sorted(set(plan) - allowed):
        raise SlimzipError(f"the channel plan narrows {bad[:3]}: not a plan root (a conv / linear layer whose output "
                           "channels form a removable group; never the model's output layer)")
    return graph


def _out_size(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _check_runs(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """A narrowed model must still run: a layer whose channel count is also kept elsewhere (a split size
    stored in an attribute, a parameter of its own) would fail later with PyTorch's error; it fails here
    with one line instead."""
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    except Exception as e:  # whatever the user's forward raises on a shape it no longer matches
        raise NarrowingError(f"removing channels broke the model: its forward now fails ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:160] if str(e) else ''}); a layer or attribute tied to "
                             "those channels cannot be narrowed") from None
    finally:
        model.train(was)


def zero_channels_hooks(model: nn.Module, plan: ChannelPlan, input_shape: tuple[int, ...],
                        groups: dict[str, Group] | None = None) -> list:
    """Forward hooks that zero, in the unpruned model, every output channel the plan removes: the
    reference a narrowed model must equal. Returns the hook handles. ``groups``: the model's own, if at hand."""
    groups = groups if groups is not None else channel_groups(model, input_shape)[0]
    handles = []
    for root, kept in plan.items():
        group = groups[root]
        removed = sorted(set(range(_root_size(group))) - set(kept))
        for module, idx in _out_items(group, every=True):
            drop = [idx[i] for i in removed]

            def hook(mod, inp, out, drop=drop, dim=-1 if isinstance(module, CHANNELS_LAST) else 1):
                out = out.clone()
                out.index_fill_(dim % out.dim(), torch.tensor(drop, dtype=torch.long, device=out.device), 0)
                return out
            handles.append(module.register_forward_hook(hook))
    return handles


def widths(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv/linear layer, by fqn."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, PRUNABLE)}


def _removed_per_module(groups: dict[str, Group], plan: ChannelPlan) -> tuple[dict, dict]:
    """How many output and input channels the plan removes from each module."""
    out_removed: dict[nn.Module, int] = {}
    in_removed: dict[nn.Module, int] = {}
    for root, kept in plan.items():
        size = _root_size(groups[root])
        n = size - len(kept)
        for item in groups[root]:
            module = item.dep.target.module
            if isinstance(module, nn.Parameter):  # a free per-channel parameter (a layer scale, say)
                out_removed[module] = out_removed.get(module, 0) + n * (module.numel() // size)
            if not isinstance(module, (*PRUNABLE, *NORMS)):
                continue
            side = out_removed if item.dep.handler.__name__ == "prune_out_channels" else in_removed
            # a flatten expands each channel into H x W inputs of the next linear layer
            side[module] = side.get(module, 0) + n * (len(item.idxs) // size)
    return out_removed, in_removed


def plan_cost(model: nn.Module, plan: ChannelPlan, input_shape: tuple[int, ...],
              groups: dict[str, Group] | None = None) -> tuple[int, int]:
    """(params, MACs) the narrowed model will have, computed from the plan and the *unpruned* model's
    layer shapes, without building the narrowed model (a check on ``apply_plan``)."""
    groups = groups if groups is not None else channel_groups(model, input_shape)[0]
    out_removed, in_removed = _removed_per_module(groups, plan)
    positions: dict[nn.Module, int] = {}

    def record(mod: nn.Module, _inp, out: torch.Tensor) -> None:  # output positions per channel (any layout)
        positions[mod] = out[0].numel() // mod.weight.shape[0]
    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, PRUNABLE)]
    _eval_forward(model, torch.zeros(1, *input_shape), hooks)
    counted = {id(p) for m in model.modules() if isinstance(m, (*PRUNABLE, *NORMS))
               for p in m.parameters(recurse=False)}
    params = sum(p.numel() - out_removed.get(p, 0) for p in model.parameters() if id(p) not in counted)
    macs = 0
    for m in model.modules():
        if isinstance(m, NORMS):
            params += 2 * (m.num_features - out_removed.get(m, 0)) if m.affine else 0
        elif isinstance(m, PRUNABLE):
            cout = m.weight.shape[0] - out_removed.get(m, 0)
            depthwise = isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
            groups = m.groups if isinstance(m, nn.Conv2d) else 1
            cin = 1 if depthwise else m.weight.shape[1] - in_removed.get(m, 0) // groups
            per_out = cin * (m.weight[0, 0].numel() if isinstance(m, nn.Conv2d) else 1)
            params += cout * per_out + (cout if m.bias is not None else 0)
            macs += cout * per_out * positions.get(m, 0)
    return params, macs


def validate_plan(plan: object) -> ChannelPlan:
    """A plan read from a file: a dict of fqn -> list of non-negative ints, or an error."""
    if not isinstance(plan, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and v and all(isinstance(i, int) and not isinstance(i, bool)
                                                                    and 0 <= i < 1 << 20 for i in v)
            for k, v in plan.items()):
        raise SlimzipError("the channel plan is malformed (want {layer fqn: [kept channel indices]})")
    return plan


def compose_plans(old: ChannelPlan | None, new: ChannelPlan) -> ChannelPlan:
    """The plan, against the original model, of pruning with ``old`` and then with ``new`` (whose
    indices count the channels ``old`` kept)."""
    old = old or {}
    out = {k: list(v) for k, v in old.items()}
    for root, kept in new.items():
        out[root] = [old[root][i] for i in kept] if root in old else list(kept)
    return out


def registry_input_shape(name: str) -> tuple[int, ...]:
    """The input shape of a registry model: its dataset's image shape."""
    from ..data import get_dataset_spec
    from ..models import get_model_entry

    return get_dataset_spec(get_model_entry(name).dataset).image_shape


def build_model(spec: dict) -> nn.Module:
    """A registry model (or a user's, by its source and ``input_shape``) from its spec ``{"name", "kwargs",
    "plan"?}``: built, then narrowed by the plan."""
    from ..models import create_model

    model = create_model(spec["name"], **spec.get("kwargs", {}))
    if spec.get("plan"):
        shape = tuple(spec["input_shape"]) if "input_shape" in spec else registry_input_shape(spec["name"])
        apply_plan(model, validate_plan(spec["plan"]), shape, check_roots=True)
    return model


@torch.no_grad()
def dead_channel_plan(model: nn.Module, input_shape: tuple[int, ...]) -> ChannelPlan:
    """Channels whose outgoing weights are all zero in every consumer: nothing downstream reads them,
    so removing them changes no output. Returns a plan keeping the others (at least one per group),
    only for groups that lose something."""
    groups, _graph = channel_groups(model, input_shape)
    plan = {}
    for root, group in groups.items():
        size = _root_size(group)
        alive = torch.zeros(size, dtype=torch.bool)
        consumers = 0
        for item in group:
            module = item.dep.target.module
            if item.dep.handler.__name__ != "prune_in_channels":
                continue
            if _has_own_pruner(module):
                alive[:] = True  # read by a parameter-free layer (a shortcut): alive whatever the weights
            if isinstance(module, PRUNABLE):
                consumers += 1
                per = len(item.idxs) // size  # a flatten feeds H x W inputs per channel, channel-major
                cols = module.weight.detach()[:, list(item.idxs)].flatten(2) if module.weight.dim() > 2 \
                    else module.weight.detach()[:, list(item.idxs)].unsqueeze(-1)
                used = cols.ne(0).any(dim=0).any(dim=-1).reshape(size, per).any(dim=1)
                alive |= used
        if consumers and not alive.all():
            kept = alive.nonzero().flatten().tolist() or [0]
            plan[root] = kept
    return plan
