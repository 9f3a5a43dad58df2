"""Search strategies: each proposes candidates to ``search.evaluate`` and reads back what they measured.

A strategy only walks the (channel ratio, weight sparsity) plane, from the input model (``start`` None)
or from a recovered candidate, and returns where its walk ended; the driver keeps the journal, counts
the cost and picks the smallest file that meets the target. Strategies are plain functions in a
registry, so a new one is a function and a line.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

from .journal import Candidate, Knobs


class Search(Protocol):
    """What a strategy sees of the driver's ``Search``: the config, the target and ``evaluate``."""

    cfg: Any  # driver.SearchConfig (step, refine, max_channel_ratio, max_sparsity, finetune_epochs, ...)
    target: float
    margin: float
    slack: float

    def evaluate(self, knobs: Knobs, parent: Candidate | None, *, epochs: float, rounds: int = 1,
                 centroid_epochs: int = 0, reserved: bool = False, speculative: bool = False,
                 recover: bool = False) -> Candidate: ...

    def evaluate_many(self, requests: list[tuple[Knobs, Candidate | None, dict]]) -> list[Candidate]: ...

    def fits(self, epochs: float) -> bool: ...

    recovering: bool  # walking on from a recovered model: a close step climbs a recovery rung too


Strategy = Callable[[Search, "Candidate | None"], "Candidate | None"]
AXES = ("channel_ratio", "sparsity")
EPS = 1e-9


def _knobs(point: Candidate | None) -> Knobs:
    return point.knobs if point is not None else Knobs()


def _raised(point: Candidate | None, axis: str, step: float) -> Knobs:
    knobs = _knobs(point)
    values = {a: getattr(knobs, a) for a in AXES}
    values[axis] += step
    return Knobs(**values)


def _placed(point: Candidate | None, axis: str, value: float) -> Knobs:
    return _raised(point, axis, value - getattr(_knobs(point), axis))


def _limit(search: Search, axis: str) -> float:
    return search.cfg.max_channel_ratio if axis == "channel_ratio" else search.cfg.max_sparsity


def _linear_walk(search: Search, point: Candidate | None, axis: str, step: float,
                 threshold: float) -> Candidate | None:
    """Raise one knob by ``step`` at a time, warm-starting each candidate from the last one, while
    validation accuracy stays at ``threshold``; returns the last candidate that did (or ``point``)."""
    while True:
        knobs = _raised(point, axis, step)
        if getattr(knobs, axis) > _limit(search, axis) + EPS:
            return point
        if _recovering(search):  # from a recovered model: the recovery ladder (``_try``)
            candidate = _try(search, knobs, point, threshold)
        else:
            candidate = search.evaluate(knobs, point, epochs=search.cfg.finetune_epochs)
        if candidate is None or not candidate.meets(threshold):
            return point
        point = candidate


def _recovering(search: Search) -> bool:
    """Whether the search walks on from a recovered model with recovery rungs (``recover_step_epochs``)."""
    return bool(search.recovering and search.cfg.recover_step_epochs)


def heuristic(search: Search, start: Candidate | None = None) -> Candidate | None:
    """The combined heuristic (Tian et al. 2022): step 1 raises the channel ratio by ``step`` while
    accuracy stays at target + margin; step 2 raises weight sparsity on that model while it stays at
    the target; then ``refine`` rounds halve step and margin and repeat both walks from the best point.
    The paper does not say how step and margin shrink; halving both is slimzip's choice."""
    cfg, target = search.cfg, search.target
    step, margin = cfg.step, search.margin
    point = start
    for _round in range(cfg.refine + 1):
        point = _linear_walk(search, point, "channel_ratio", step, target + margin)
        point = _linear_walk(search, point, "sparsity", step, target)
        step, margin = step / 2, margin / 2
    return point


def _axis(step: float, limit: float) -> list[float]:
    n = int(limit / step + EPS)
    return [round(i * step, 6) for i in range(n + 1)]


def grid(search: Search, start: Candidate | None = None) -> Candidate | None:
    """Brute force: every (channel ratio, sparsity) pair on the step grid, each from the input model
    with the same budget (``finetune_epochs`` after channel removal, then ``prune_steps`` rounds of
    weight pruning with ``finetune_epochs`` each). The channel stage of a ratio is computed once and
    shared by that ratio's row, which changes no result, only the cost. From the input model only
    (``start`` is not a grid's: the driver goes on from a recovered model with the heuristic's walks);
    returns None (a grid has no walk's end)."""
    cfg = search.cfg
    rows = search.evaluate_many([(Knobs(ratio, 0.0), None, {"epochs": cfg.finetune_epochs if ratio else 0})
                                 for ratio in _axis(cfg.step, cfg.max_channel_ratio)])  # independent: in parallel
    search.evaluate_many([(Knobs(row.knobs.channel_ratio, sparsity), row,
                           {"epochs": cfg.finetune_epochs, "rounds": cfg.prune_steps})
                          for row in rows if row.status == "ok" for sparsity in _axis(cfg.step, cfg.max_sparsity)[1:]])
    return None


# A walk coordinate for a knob, and back: channels walk linearly; sparsity walks in *halvings* of the
# kept weights (s = 0.5, 0.75, 0.875, ... are 1, 2, 3 halvings), so one step removes the same share of
# what is left wherever the walk is, as deep compression's iterative pruning does.
Scale = tuple[Callable[[float], float], Callable[[float], float]]
LINEAR: Scale = (lambda v: v, lambda x: x)
HALVINGS: Scale = (lambda s: -math.log2(1 - s), lambda u: 1 - 2 ** -u)


def _gallop(search: Search, point: Candidate | None, axis: str, threshold: float, scale: Scale, step: float,
            finest: float) -> Candidate | None:
    """Walk one knob (in ``scale``'s coordinate) with a step that doubles after every success until the
    first failure, then bisects between the last success and the first failure, down to ``finest``.
    Each candidate climbs ``_try``'s budget ladder (screen, short fine-tune, full fine-tune) only as far
    as it needs to, and only a success becomes the next parent."""
    to_walk, to_knob = scale
    failed_at = to_walk(_limit(search, axis)) + 2 * EPS  # the smallest coordinate known to fail, or the limit
    while step >= finest - EPS:
        x = to_walk(getattr(_knobs(point), axis)) + step
        if x > failed_at - 2 * EPS:
            step /= 2
            continue
        # the move after a failure (bisect: half the step from the same point), run ahead if speculating
        fallback = _placed(point, axis, to_knob(x - step / 2)) if step / 2 >= finest - EPS else None
        if (accepted := _try(search, _placed(point, axis, to_knob(x)), point, threshold, fallback)) is not None:
            point = accepted
            step = step * 2 if failed_at > to_walk(_limit(search, axis)) + EPS else step / 2
        else:
            failed_at, step = x, step / 2
    return point


def _try(search: Search, knobs: Knobs, point: Candidate | None, threshold: float,
         alternative: Knobs | None = None) -> Candidate | None:
    """Climb the budget ladder (successive halving in spirit): screen ``knobs`` from ``point`` with no
    training; a candidate that misses by less than the screen gap gets a short fine-tune (a fraction of
    an epoch, ``short_epochs``); one that still misses, by less than a quarter of the allowed drop
    (baseline - target: the same rule whatever the margin, so ablations climb alike), gets a full
    ``finetune_epochs``. Walking on from a recovered model the ladder has one rung instead: a screen that
    misses by less than the allowed drop is retrained ``recover_step_epochs`` on the whole training split
    (a fine-tune on the proxy's few images undoes what recovery gained). Each rung continues from the
    last. Returns the candidate that meets ``threshold``, or None.

    ``alternative``: the move the walk tries next from ``point`` if this one fails. When the search
    speculates (``--speculate on``), it climbs its own ladder beside this one, rung by rung, while this
    one climbs (on another worker: the same wall time); the walk then finds its rungs journaled. Its
    cost counts; what the walk never asks for is not a candidate. The walk's rules are unchanged, but
    its path can differ from a search without speculation: candidates run ahead take journal ids
    earlier, and a candidate's training images are chosen from its key (``CandidatePipeline._images``)."""
    cfg = search.cfg
    rungs = [(epochs, gap, {}) for epochs, gap in ((cfg.short_epochs, cfg.screen_gap),
                                                    (cfg.finetune_epochs, max(search.slack / 4, 1e-3))) if epochs]
    if _recovering(search):  # a proxy fine-tune undoes a recovered model's gain: the whole split, or nothing
        rungs = [(cfg.recover_step_epochs, max(search.slack, 1e-3), {"recover": True})]
    moves = [knobs] + ([alternative] if alternative and cfg.speculate == "on" else [])  # [1]: speculative
    current = search.evaluate_many([(k, point, {"epochs": 0, "speculative": i > 0}) for i, k in enumerate(moves)])
    for epochs, gap, extra in rungs:
        climbing = [i for i, c in enumerate(current) if not c.meets(threshold) and c.meets(threshold - gap)]
        if 0 not in climbing:  # this move is decided: the alternative waits for the walk to ask
            break
        if not extra and not search.fits(2 * epochs):  # speculation needs room in a budget for both
            climbing = [0]
        rung = search.evaluate_many([(moves[i], current[i], {"epochs": epochs, "speculative": i > 0, **extra})
                                     for i in climbing])
        for i, c in zip(climbing, rung):
            current[i] = c
    return current[0] if current[0].meets(threshold) else None


def _staircase(search: Search, point: Candidate, walks: dict, threshold: float) -> Candidate:
    """Walk the staircase boundary from ``point``: screen a finest step of each knob (no training), send
    the more promising move (fewer accuracy points lost per byte saved) up the budget ladder, the other
    only if that one fails; stop when neither moves."""
    while True:
        steps = []
        for axis, (scale, _step, finest) in walks.items():
            to_walk, to_knob = scale
            x = to_walk(getattr(point.knobs, axis)) + finest
            if x <= to_walk(_limit(search, axis)) + EPS:
                steps.append(_placed(point, axis, to_knob(x)))
        screens = search.evaluate_many([(knobs, point, {"epochs": 0}) for knobs in steps])  # independent
        moves = [knobs for knobs, _ in sorted(zip(steps, screens), key=lambda m: _loss_per_byte(point, m[1]))]
        for i, knobs in enumerate(moves):  # the next move, if this one fails, runs ahead when speculating
            if (accepted := _try(search, knobs, point, threshold, (moves[i + 1:] or [None])[0])) is not None:
                point = accepted
                break
        else:
            return point


def _loss_per_byte(point: Candidate, screen: Candidate) -> float:
    if screen.status != "ok":
        return math.inf
    saved = max(point.file_bytes - screen.file_bytes, 1)
    return (point.val_accuracy - screen.val_accuracy) / saved


def frontier(search: Search, start: Candidate | None = None) -> Candidate | None:
    """slimzip's strategy: the heuristic's two walks (channels at target + margin, then sparsity at the
    target), but galloping (steps double until the first failure, then bisect: the boundary is found
    in logarithmically many candidates, to a finer resolution; sparsity in halvings of the kept
    weights) and screening every candidate with zero training, then a short fine-tune, before paying
    for a full one (early steps often lose no accuracy at all, and a fraction of an epoch recovers most
    of what a later one loses). Then it walks the staircase boundary with the margin spent, one finest
    step at a time, always trying first the knob whose screen promises the cheaper bytes."""
    cfg, target = search.cfg, search.target
    walks = {"channel_ratio": (LINEAR, cfg.step, cfg.step / 2 ** cfg.refine),
             "sparsity": (HALVINGS, 1.0, 1.0 / 2 ** cfg.refine)}
    point = start
    for axis, (scale, step, finest) in walks.items():
        point = _gallop(search, point, axis, target + (search.margin if axis == "channel_ratio" else 0.0), scale,
                        step, finest)
    return _staircase(search, point, walks, target) if point is not None else None


STRATEGIES: dict[str, Strategy] = {"heuristic": heuristic, "grid": grid, "frontier": frontier}
