"""What a search will cost, before it runs: bounds on its epochs from the strategy's own rules (exact for
the grid), turned into time with a measured training speed (``slimzip compress --dry-run``)."""

from __future__ import annotations

import math
from typing import Callable

from .driver import BITS_CANDIDATES, SearchConfig, rate_ladder
from .strategies import _axis


# a strategy's bound: (candidates, proxy epochs, moves: the steps a walk from a recovered model takes)
Bound = tuple[int, float, int]


def _grid(cfg: SearchConfig) -> Bound:
    rows, cols = len(_axis(cfg.step, cfg.max_channel_ratio)), len(_axis(cfg.step, cfg.max_sparsity)) - 1
    return (rows + rows * cols, (rows - 1) * cfg.finetune_epochs + rows * cols * cfg.finetune_epochs * cfg.prune_steps,
            _heuristic(cfg)[2])  # from a recovered model a grid walks the heuristic's walks


def _heuristic(cfg: SearchConfig) -> Bound:
    steps = [cfg.step / 2 ** r for r in range(cfg.refine + 1)]
    walked = sum(math.floor(cfg.max_channel_ratio / s + 1e-9) + math.floor(cfg.max_sparsity / s + 1e-9)
                 for s in steps)
    return walked, walked * cfg.finetune_epochs, walked


def _frontier(cfg: SearchConfig) -> Bound:
    """Moves: each gallop doubles, then bisects to the finest step; the staircase moves a finest step of
    one knob per success and tries both knobs at most per move; each move climbs at most a screen, a
    short and a full fine-tune."""
    finest_c, finest_s = cfg.step / 2 ** cfg.refine, 1.0 / 2 ** cfg.refine
    halvings = -math.log2(1 - cfg.max_sparsity)
    gallop = sum(2 * (math.ceil(math.log2(max(span / finest, 1))) + 1)
                 for span, finest in ((cfg.max_channel_ratio, finest_c), (halvings, finest_s)))
    stairs = 2 * (math.floor(cfg.max_channel_ratio / finest_c) + math.floor(halvings / finest_s))
    moves = gallop + stairs
    return 3 * moves, moves * (cfg.short_epochs + cfg.finetune_epochs), moves


BOUNDS: dict[str, Callable[[SearchConfig], Bound]] = {"grid": _grid, "heuristic": _heuristic,
                                                                   "frontier": _frontier}


def search_bounds(cfg: SearchConfig, layers: int = 0) -> dict:
    """The proxy search's candidates and epochs (at most; exactly for the grid; a budget caps the epochs),
    the winner's polish (centroids, bits ladders; ``layers``: the model's shared layers, which the layer
    ladder lowers one by one) and recovery's full-data epochs (at least, at most)."""
    candidates, epochs, moves = BOUNDS[cfg.strategy](cfg)
    if cfg.max_epochs is not None:
        epochs = min(epochs, cfg.max_epochs)
    ladder = (cfg.bits_conv - cfg.min_bits) + (cfg.bits_fc - cfg.min_bits) if cfg.min_bits else 0
    bases = BITS_CANDIDATES + (1 if cfg.recover_epochs else 0)  # and the smallest recovered file
    per_layer = layers * max(max(cfg.bits_conv, cfg.bits_fc) - cfg.min_bits, 0) \
        if cfg.min_bits and cfg.bits_ladder == "layer" else 0  # once, from the smallest file
    polish = cfg.centroid_epochs * (1 + bases * max(ladder, 0) + per_layer + len(rate_ladder(cfg)))
    recovery = (0.0, 0.0)
    if cfg.recover_epochs:
        rungs = moves * cfg.recover_step_epochs  # every step of a walk from a recovered model, at most
        recovery = (float(cfg.recover_epochs), float(cfg.recover_epochs * (cfg.recover_rounds + 1) +
                                                     rungs * cfg.recover_rounds))
    return {"strategy": cfg.strategy, "exact": cfg.strategy == "grid" and cfg.max_epochs is None,
            "candidates": candidates, "proxy_epochs": epochs, "polish_epochs": polish,
            "recovery_epochs": {"at_least": recovery[0], "at_most": recovery[1]}}
