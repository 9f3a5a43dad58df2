"""DropNet (Tan and Motani, ICML 2020): iteratively train, then drop the fraction of remaining nodes and
filters with the lowest mean post-activation, until accuracy falls below kappa x the original or only
a fraction of the units remains.

Each cycle starts from the initial weights theta0 narrowed to the surviving units (``reset='init'``),
from the trained weights (``'none'``), or from a fresh random initialisation (``'random'``); trains with
early stopping on validation loss; and is recorded (remaining fraction, accuracies, params) in
``cycles.jsonl``. A killed run started again resumes after the last finished cycle.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import atomic_write_bytes, load_tensors, save_tensors
from ..data import Loaders
from ..errors import SlimzipError, check_range, unknown
from ..measure import measure
from ..progress import log
from ..trainer import TrainConfig, evaluate, fit
from .criteria import CRITERIA, collect_activations
from .groups import channel_groups
from .plans import ChannelPlan, ChannelPruner, apply_plan, compose_plans, zero_channels_hooks

METRICS = {  # DropNet's metric name -> (importance, scope): each criterion's name, and with '_layer' per layer
    **{f"{c.dropnet}{suffix}": (name, scope) for name, c in CRITERIA.items() if c.dropnet
       for suffix, scope in (("", "global"), ("_layer", "layer"))},
    "oracle": ("oracle", "global"),  # greedy, one unit at a time: small nets only
}
RESETS = ("init", "none", "random")


def _glorot(model: nn.Module) -> nn.Module:
    """Keras's default initialisation, which DropNet's code used: Glorot-uniform weights, zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


INITS: dict[str, Callable[[nn.Module], nn.Module]] = {"torch": lambda m: m, "glorot": _glorot}


@dataclass(frozen=True)
class DropNetConfig:
    metric: str = "min_layer"
    fraction: float = 0.2  # of the remaining units dropped per cycle
    stop_remaining: float = 0.1  # stop once this fraction of the units (or fewer) remains
    kappa: float = 0.0  # stop once val accuracy < kappa x the first cycle's (0: off)
    reset: str = "init"
    seed: int = 0
    max_cycles: int = 50
    oracle_images: int = 5000  # training images the oracle measures the loss on
    init: str = "torch"  # weight initialisation of theta0: PyTorch's defaults, or 'glorot' (Keras's, DropNet's code)

    def validate(self) -> "DropNetConfig":
        if self.metric not in METRICS:
            raise unknown("DropNet metric", self.metric, list(METRICS))
        if self.init not in INITS:
            raise unknown("init", self.init, list(INITS))
        if self.reset not in RESETS:
            raise unknown("reset", self.reset, list(RESETS))
        check_range("fraction", self.fraction, 0.0, 1.0, high_open=True)
        check_range("stop remaining", self.stop_remaining, 0.0, 1.0)
        check_range("kappa", self.kappa, 0.0, 1.0)
        check_range("oracle images", self.oracle_images, 1, 10_000_000)
        if self.fraction == 0:
            raise SlimzipError("fraction must be above 0")
        return self


def run_dropnet(make_model: Callable[[], nn.Module], loaders: Loaders, cfg: DropNetConfig, train_cfg: TrainConfig,
                run_dir: str | Path, verbose: bool = True) -> list[dict]:
    """The DropNet loop; returns one row per cycle (also in ``run_dir/cycles.jsonl``)."""
    cfg.validate()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    shape = loaders.spec.image_shape
    torch.manual_seed(cfg.seed)
    theta0 = INITS[cfg.init](make_model())
    if (run / "theta0.safetensors").is_file():
        theta0.load_state_dict(load_tensors(run / "theta0.safetensors"))
    else:
        save_tensors(run / "theta0.safetensors", theta0.state_dict())
    groups, _graph = channel_groups(theta0, shape)
    full = {r: len(groups[r][0].idxs) for r in groups}
    rows = _read_rows(run)
    model, plan = None, {}
    if rows:  # resume: rebuild the last finished cycle's trained model
        plan = rows[-1]["plan"]
        model = apply_plan(copy.deepcopy(theta0), plan, shape) if plan else copy.deepcopy(theta0)
        model.load_state_dict(load_tensors(run / f"cycle{len(rows) - 1}.safetensors"))
        if _done(rows, cfg):
            return rows
        model, plan = _next(model, theta0, make_model, plan, shape, cfg, loaders, len(rows))
    while len(rows) < cfg.max_cycles:
        cycle = len(rows)
        if model is None:
            model = copy.deepcopy(theta0)
        # a killed cycle resumes from its last epoch (train{cycle}/); cycles.jsonl is the commit point of
        # a finished cycle, written after its weights, so a kill between the two retrains nothing twice
        fit(model, loaders.train, loaders.val, dataclasses.replace(train_cfg, seed=cfg.seed + cycle),
            run_dir=run / f"train{cycle}", verbose=verbose)
        save_tensors(run / f"cycle{cycle}.safetensors", model.state_dict())
        remaining = sum(len(plan.get(r, range(n))) for r, n in full.items()) / sum(full.values())
        rows.append({"cycle": cycle, "remaining": remaining, "val_accuracy": evaluate(model, loaders.val)[1],
                     "test_accuracy": evaluate(model, loaders.test)[1], "params": measure(model, shape).params,
                     "plan": plan})
        atomic_write_bytes(run / "cycles.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
        log(f"cycle {cycle}: {remaining:.1%} of units remain, val {rows[-1]['val_accuracy']:.4f}, "
            f"test {rows[-1]['test_accuracy']:.4f}, {rows[-1]['params']:,} params", verbose=verbose)
        if _done(rows, cfg):
            break
        model, plan = _next(model, theta0, make_model, plan, shape, cfg, loaders, cycle + 1)
    return rows


def _holds(row: dict, first: dict, cfg: DropNetConfig) -> bool:
    """Whether a cycle keeps kappa x the first cycle's validation accuracy (always, with kappa 0)."""
    return row["val_accuracy"] >= cfg.kappa * first["val_accuracy"]


def _done(rows: list[dict], cfg: DropNetConfig) -> bool:
    return rows[-1]["remaining"] <= cfg.stop_remaining or not _holds(rows[-1], rows[0], cfg)


def result_cycle(rows: list[dict], cfg: DropNetConfig) -> int:
    """The cycle a run hands on as its checkpoint: the last that keeps the kappa bound (with kappa 0,
    the last one)."""
    return max(i for i, r in enumerate(rows) if _holds(r, rows[0], cfg))


def _next(model: nn.Module, theta0: nn.Module, make_model: Callable[[], nn.Module], plan: ChannelPlan,
          shape: tuple[int, ...], cfg: DropNetConfig, loaders: Loaders, cycle: int) -> tuple[nn.Module, ChannelPlan]:
    """Score the trained model's units, drop a fraction, and return the next cycle's starting model."""
    importance, scope = METRICS[cfg.metric]
    if importance == "oracle":
        groups = channel_groups(model, shape)[0]
        units = sum(len(g[0].idxs) for g in groups.values())
        step_plan = oracle_plan(model, groups, shape, loaders.train.slice(0, cfg.oracle_images),
                                max(1, int(cfg.fraction * units)))
    else:
        acts = None if importance == "random" else collect_activations(model, channel_groups(model, shape)[0],
                                                                       loaders.train)
        step = ChannelPruner(importance=importance, channel_ratio=cfg.fraction, scope=scope, seed=cfg.seed + cycle)
        step_plan = step.fit(model, shape, acts).plan_
    plan = compose_plans(plan, step_plan)
    if cfg.reset == "none":  # keep training the surviving trained weights
        return apply_plan(model, step_plan, shape), plan
    if cfg.reset == "random":
        torch.manual_seed(cfg.seed + 1000 + cycle)
        return apply_plan(INITS[cfg.init](make_model()), plan, shape), plan
    return apply_plan(copy.deepcopy(theta0), plan, shape), plan  # DropNet's default: back to theta0


def _read_rows(run: Path) -> list[dict]:
    path = run / "cycles.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


@torch.no_grad()
def oracle_plan(model: nn.Module, groups: dict, input_shape: tuple[int, ...], batches: Iterable,
                count: int) -> ChannelPlan:
    """DropNet's oracle: remove ``count`` units one at a time, each time the one whose removal raises the
    loss on ``batches`` least (every remaining unit is tried at every step, so the cost is about
    count x units forward passes: small nets only). A layer keeps at least one unit."""
    data = list(batches)
    plan = {root: list(range(len(g[0].idxs))) for root, g in groups.items()}
    was_training = model.training
    model.eval()
    try:
        for _ in range(count):
            trials = [(root, c) for root, kept in plan.items() if len(kept) > 1 for c in kept]
            if not trials:
                break
            losses = [_loss_without(model, plan, root, c, input_shape, groups, data) for root, c in trials]
            root, c = trials[min(range(len(trials)), key=losses.__getitem__)]
            plan[root] = [k for k in plan[root] if k != c]
    finally:
        model.train(was_training)
    return plan


def _loss_without(model: nn.Module, plan: ChannelPlan, root: str, unit: int, input_shape: tuple[int, ...],
                  groups: dict, data: list) -> float:
    """Mean cross-entropy with the plan's removed units, and ``unit`` of ``root``, zeroed."""
    trial = {**plan, root: [k for k in plan[root] if k != unit]}
    handles = zero_channels_hooks(model, trial, input_shape, groups)
    try:
        total = sum(F.cross_entropy(model(x), y, reduction="sum").item() for x, y in data)
    finally:
        for h in handles:
            h.remove()
    return total / sum(len(y) for _x, y in data)
