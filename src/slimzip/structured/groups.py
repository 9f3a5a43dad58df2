"""Channel groups: what must lose the same channels together.

Coupled channels (a residual add, a concatenation, a BatchNorm after its convolution) are found by
Torch-Pruning's dependency graph: a *group* is everything that must lose the same channels together,
named by its root module's fqn. Tracing runs user code, so it is time-limited and its failures are
user errors.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from typing import Callable, Iterable, Iterator

import torch
import torch_pruning as tp
from torch import nn

from ..errors import SlimzipError

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


class _TraceTimeout(BaseException):
    """Not an ``Exception``: a step that tolerates Torch-Pruning's own failures (``except Exception``,
    e.g. one channel group that cannot be formed) must not swallow the time limit too."""


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


@contextlib.contextmanager
def _tolerant_reshapes() -> Iterator[None]:
    """Torch-Pruning divides by a reshape's inferred input channels, which are 0 for a reshape it cannot
    follow back to a layer (a channel shuffle over a split of the block's input): that one reshape gets no
    index mapping instead of failing the whole graph; the groups through it are then inconsistent and
    left whole (``_consistent``)."""
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_reshape_index_mapping

    def tolerant(graph, node):
        try:
            original(graph, node)
        except ZeroDivisionError:
            pass
    index_mapping.update_reshape_index_mapping = tolerant
    try:
        yield
    finally:
        index_mapping.update_reshape_index_mapping = original


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (traced through autograd, so grad is enabled). The
    model comes back in the train / eval mode it had (tracing leaves it in eval mode)."""
    def build() -> tp.DependencyGraph:
        with torch.enable_grad(), _tolerant_reshapes():
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
    skipped: dict[str, list[str]] = {}
    groups = _traced(lambda: _all_groups(graph, order[-1:], skipped, names))
    out: dict[str, Group] = {}
    for group in groups:
        root = names[group[0].dep.target.module]
        if any(_is_grouped(item.dep.target.module) for item in group):
            continue
        if (why := _unprunable(group)) is None:
            out[root] = group
        else:
            skipped.setdefault(why, []).append(root)
    for why, roots in skipped.items():
        more = f" and {len(roots) - 8} more" if len(roots) > 8 else ""
        warnings.warn(f"channel groups left unpruned ({why}): {', '.join(roots[:8])}{more}", stacklevel=2)
    return out, graph


def _all_groups(graph: tp.DependencyGraph, ignored: list, skipped: dict[str, list[str]],
                names: dict) -> list[Group]:
    """Torch-Pruning's ``get_all_groups`` (every conv / linear output as a root, each module in one group),
    but a root whose group cannot be formed (Torch-Pruning raises on some index mappings, e.g. a channel
    shuffle's) is left whole and named in ``skipped`` instead of failing the whole model."""
    visited, groups = set(), []
    ignored = list(ignored) + list(graph.IGNORED_LAYERS_IN_TRACING)
    for m in list(graph.module2node.keys()):
        if m in ignored or not isinstance(m, PRUNABLE) or m in visited:
            continue
        pruner = graph.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        try:
            group = graph.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        except Exception as e:  # Torch-Pruning's own failure on this group only
            why = f"Torch-Pruning cannot follow their channels ({type(e).__name__})"
            skipped.setdefault(why, []).append(names.get(m, type(m).__name__))
            visited.add(m)
            continue
        prunable = True
        for dep, _ in group:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                prunable &= dep.target.module not in ignored
        if prunable:
            groups.append(group)
    return groups


def _unprunable(group: Group) -> str | None:
    """Why a group cannot lose channels exactly, or None."""
    if any(isinstance(item.dep.target.module, CHANNEL_STATS) for item in group):
        return "normalised across channels, e.g. by a LayerNorm: fewer channels change its statistics"
    if own := [type(m).__name__ for item in group if (m := item.dep.target.module) is not None and _extra_tensors(m)]:
        return (f"a layer holds per-channel tensors of its own besides weight and bias ({own[0]}, e.g. a weight-"
                "standardised conv's gain) that slimzip cannot narrow")
    if not _consistent(group):
        ops = sorted({OPS[t] for item in group if (t := type(item.dep.target.module).__name__) in OPS})
        through = " and ".join(ops) if ops else "an operation"
        return f"their channels pass through {through} whose channel mapping slimzip cannot follow exactly"
    return None


# Torch-Pruning's nodes for parameter-free operations, as a person names them
OPS = {"_ReshapeOp": "a reshape (e.g. a channel shuffle)", "_ConcatOp": "a concatenation", "_SplitOp": "a split",
       "_ExpandOp": "an expand", "_UnbindOp": "an unbind", "_SliceOp": "a slice"}


def _extra_tensors(module: object) -> bool:
    """A subclass of a conv or linear layer with parameters or buffers of its own (not ``weight`` / ``bias``)."""
    if not isinstance(module, PRUNABLE) or type(module) in PRUNABLE:
        return False
    names = {n for n, _ in module.named_parameters(recurse=False)} | {n for n, _ in module.named_buffers(recurse=False)}
    return bool(names - {"weight", "bias"})


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
