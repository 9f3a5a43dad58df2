"""Structured pruning: channels are physically removed, so the result is a narrower dense model.

Coupled channels (a residual add, a concatenation, a BatchNorm after its convolution) are found by
Torch-Pruning's dependency graph: a *group* is everything that must lose the same channels together,
named by its root module's fqn. A channel plan is plain JSON, ``{root fqn: [kept channel indices]}``:
``ChannelPruner.fit`` produces it from an importance criterion, ``apply_plan`` narrows a model with it,
and a registry name plus a plan rebuilds the narrowed model anywhere.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch_pruning as tp
from torch import nn

from .errors import SlimzipError, check_range, unknown

ChannelPlan = dict[str, list[int]]
Group = tp.dependency.Group
PRUNABLE = (nn.Conv2d, nn.Linear)
NORMS = (nn.modules.batchnorm._BatchNorm,)
CHANNELS_LAST = (nn.Linear,)  # its channels are the output's last axis, not axis 1
CHANNEL_STATS = (nn.LayerNorm, nn.GroupNorm)  # statistics over channels: removing one changes the others
TRACE_SECONDS = 120  # graph tracing and grouping give up after this long instead of hanging


# --- groups --------------------------------------------------------------------------------------

def _forward_order(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """Conv/linear modules in the order a forward pass runs them."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod)) for m in model.modules()
             if isinstance(m, PRUNABLE)]
    _eval_forward(model, example, hooks)
    return order


@contextlib.contextmanager
def _mode_kept(model: nn.Module) -> Iterator[None]:
    """Whatever the block does to the model's train / eval mode, it comes back as it was."""
    was_training = model.training
    try:
        yield
    finally:
        model.train(was_training)


def _eval_forward(model: nn.Module, example: torch.Tensor, hooks: list) -> None:
    """One forward pass in eval mode (BatchNorm statistics untouched) for ``hooks`` to watch; the hooks
    are removed and the model's train / eval mode restored afterwards."""
    try:
        with _mode_kept(model), torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()


class _TraceTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise ``_TraceTimeout`` inside the block after ``seconds`` (main thread only; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def expire(_signum, _frame):
        raise _TraceTimeout()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _traced(fn: Callable, seconds: float = TRACE_SECONDS):
    """Run a tracing step; tracing fails in many ways on arbitrary user code, all of them user errors,
    and must not hang (some graphs make the grouping search run for minutes)."""
    try:
        with time_limit(seconds):
            return fn()
    except _TraceTimeout:
        raise SlimzipError(f"tracing the model for channel pruning took over {seconds:g} s; gave up") from None
    except Exception as e:
        raise SlimzipError(f"cannot trace the model for channel pruning ({type(e).__name__}: {e})") from None


def _has_own_pruner(module: object) -> bool:
    """A module type that says how it loses channels: a class attribute ``channel_pruner`` holding a
    Torch-Pruning ``BasePruningFunc`` (e.g. ResNet's option-A shortcut, an index map, not a layer)."""
    return hasattr(type(module), "channel_pruner")


def _custom_pruners(model: nn.Module) -> dict[type, object]:
    return {type(m): type(m).channel_pruner for m in model.modules() if _has_own_pruner(m)}


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (traced through autograd, so grad is enabled). The
    model comes back in the train / eval mode it had (tracing leaves it in eval mode)."""
    def build() -> tp.DependencyGraph:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                         customized_pruners=_custom_pruners(model))
    with _mode_kept(model):
        return _traced(build)


def channel_groups(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, Group], tp.DependencyGraph]:
    """Every prunable channel group, by root fqn, and the graph they live in (keep it alive while the
    groups are used). The last layer (the classifier) is never pruned."""
    example = torch.zeros(1, *input_shape)
    order = _traced(lambda: _forward_order(model, example))
    graph = dependency_graph(model, example)
    names = {m: n for n, m in model.named_modules()}
    groups = _traced(lambda: list(graph.get_all_groups(ignored_layers=order[-1:],
                                                        root_module_types=list(PRUNABLE))))
    out: dict[str, Group] = {}
    skipped: dict[str, list[str]] = {}
    for group in groups:
        root = names[group[0].dep.target.module]
        if any(_is_grouped(item.dep.target.module) for item in group):
            continue
        if (why := _unprunable(group)) is None:
            out[root] = group
        else:
            skipped.setdefault(why, []).append(root)
    for why, roots in skipped.items():
        warnings.warn(f"channel groups left unpruned ({why}): {', '.join(roots)}", stacklevel=2)
    return out, graph


def _unprunable(group: Group) -> str | None:
    """Why a group cannot lose channels exactly, or None."""
    if any(isinstance(item.dep.target.module, CHANNEL_STATS) for item in group):
        return "normalised across channels, e.g. by a LayerNorm: fewer channels change its statistics"
    if not _consistent(group):
        return "their channels pass through a reshape slimzip cannot follow, e.g. a channel shuffle"
    return None


def _channel_dim(module: object, handler: str) -> int | None:
    """The size of the axis a group's item prunes, or None for a parameter-free node."""
    if isinstance(module, nn.Parameter):
        return None
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        w = module.weight
        if handler == "prune_out_channels":
            return w.shape[0]
        return w.shape[1] * (module.groups if isinstance(module, nn.Conv2d) else 1)
    if isinstance(module, NORMS):
        return module.num_features
    return None


def _consistent(group: Group) -> bool:
    """Every layer in the group loses channels that exist, as many as the root loses (a flatten into a
    linear layer: a whole multiple of them). Torch-Pruning's index mapping through some reshapes (a
    channel shuffle) breaks this; such a group is not pruned."""
    size = _root_size(group)
    for item in group:
        dim = _channel_dim(item.dep.target.module, item.dep.handler.__name__)
        if dim is None:
            continue
        idxs = list(item.idxs)
        if not idxs or max(idxs) >= dim or min(idxs) < 0 or len(idxs) % size or len(set(idxs)) != len(idxs):
            return False
    return True


def prunable_channels(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """How many channels channel pruning may choose from (the roots of every prunable group)."""
    groups, _graph = channel_groups(model, input_shape)
    return sum(_root_size(g) for g in groups.values())


def _is_grouped(module: object) -> bool:
    """A grouped (not depthwise) convolution: removing its channels must keep every group equal, which
    a free channel choice does not, so channels coupled to one are kept."""
    return isinstance(module, nn.Conv2d) and 1 < module.groups < module.in_channels


def _out_items(group: Group, every: bool = False) -> Iterable[tuple[nn.Module, list[int]]]:
    """(module, channel indices) for every parameterised module whose outputs the group removes (with
    ``every``: also parameter-free modules with their own channel pruner)."""
    for item in group:
        module = item.dep.target.module
        if item.dep.handler.__name__ == "prune_out_channels" and \
                (isinstance(module, (*PRUNABLE, *NORMS)) or (every and _has_own_pruner(module))):
            yield module, list(item.idxs)


def _root_size(group: Group) -> int:
    return len(group[0].idxs)


# --- importance criteria: (group, activations of the group's root) -> one score per channel --------

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


# --- the pruner ----------------------------------------------------------------------------------

@dataclass
class ChannelPruner:
    """Choose which channels to keep.

    ``scope='global'``: one threshold over the scores of all groups (network slimming's percentile of
    |gamma|; DropNet's ``min``). ``scope='layer'``: every group loses ``channel_ratio`` of its channels
    (DropNet's ``min_layer``). A group always keeps at least ``min_channels``; kept widths are rounded
    up to a multiple of ``round_to``. ``base_widths`` (by fqn) counts the ratio against those widths
    instead of the current ones: a later step of a gradual prune, where earlier steps removed the rest,
    ends at exactly the widths one step at the same ratio gives.
    """

    importance: str = "bn_scale"
    channel_ratio: float = 0.5  # fraction of channels removed
    scope: str = "global"
    min_channels: int = 1
    round_to: int = 1
    seed: int = 0
    base_widths: dict[str, int] | None = None

    def fit(self, model: nn.Module, input_shape: tuple[int, ...],
            activations: dict[str, torch.Tensor] | None = None) -> "ChannelPruner":
        check_range("channel ratio", self.channel_ratio, 0.0, 1.0, high_open=True)
        if self.importance not in IMPORTANCES:
            raise unknown("importance", self.importance, list(IMPORTANCES))
        if self.scope not in ("global", "layer"):
            raise unknown("scope", self.scope, ["global", "layer"])
        if self.min_channels < 1 or self.round_to < 1:
            raise SlimzipError("min_channels and round_to must be at least 1 (a layer never loses its last channel)")
        groups, self.graph_ = channel_groups(model, input_shape)
        self.groups_ = groups  # valid while the model is unchanged (the graph holds the modules)
        gen = torch.Generator().manual_seed(self.seed)
        self.criteria_ = {k: self._criterion(g) for k, g in groups.items()}
        self.scores_ = {k: IMPORTANCES[self.criteria_[k]](g, (activations or {}).get(k), gen).float()
                        for k, g in groups.items()}
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
        keep_counts = {g: min(len(s), base[g] - int(self.channel_ratio * base[g])) for g, s in self.scores_.items()}
        # one global threshold over the groups scored by the chosen criterion; fallback scores do not
        # compare with them, so those groups lose the ratio each (layer scope)
        pooled = [g for g in self.scores_ if self.criteria_[g] == self.importance]
        if self.scope == "global" and pooled:
            every = torch.cat([self.scores_[g] for g in pooled])
            removed_before = sum(base[g] for g in pooled) - len(every)
            k = min(len(every), int(self.channel_ratio * sum(base[g] for g in pooled)) - removed_before)
            threshold = every.sort().values[k - 1].item() if k > 0 else -math.inf
            keep_counts.update({g: int((self.scores_[g] > threshold).sum()) for g in pooled})
        plan = {}
        for g, scores in self.scores_.items():
            n = max(keep_counts[g], self.min_channels)
            n = min(len(scores), -(-n // self.round_to) * self.round_to)
            plan[g] = sorted(scores.argsort(descending=True, stable=True)[:n].tolist())
        return plan


def apply_plan(model: nn.Module, plan: ChannelPlan, input_shape: tuple[int, ...]) -> nn.Module:
    """Physically remove the channels a plan does not keep, in place; returns the model."""
    modules = dict(model.named_modules())
    roots = {name: modules.get(name) for name in plan}
    if bad := [n for n, m in roots.items() if not isinstance(m, PRUNABLE)]:
        raise SlimzipError(f"the channel plan names layers this model does not have: {sorted(bad)[:3]}")
    graph = dependency_graph(model, torch.zeros(1, *input_shape))
    for root, kept in plan.items():
        module = roots[root]
        size = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= size:
            raise SlimzipError(f"channel plan for {root}: kept indices must be distinct, in [0, {size}), not empty")
        removed = sorted(set(range(size)) - set(kept))
        if removed:
            handler = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
            graph.get_pruning_group(module, handler, idxs=removed).prune()
    return model


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
    from .data import get_dataset_spec
    from .models import get_model_entry

    return get_dataset_spec(get_model_entry(name).dataset).image_shape


def build_model(spec: dict) -> nn.Module:
    """A registry model (or a user's, by its source and ``input_shape``) from its spec ``{"name", "kwargs",
    "plan"?}``: built, then narrowed by the plan."""
    from .models import create_model

    model = create_model(spec["name"], **spec.get("kwargs", {}))
    if spec.get("plan"):
        shape = tuple(spec["input_shape"]) if "input_shape" in spec else registry_input_shape(spec["name"])
        apply_plan(model, validate_plan(spec["plan"]), shape)
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
