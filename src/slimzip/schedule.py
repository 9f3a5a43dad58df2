"""The geometric pruning schedule, shared by weight pruning's rounds and gradual channel pruning's passes."""

from __future__ import annotations


def sparsity_steps(start: float, end: float, rounds: int) -> list[float]:
    """Fractions removed after each of ``rounds`` rounds from ``start`` to ``end``: the kept fraction
    shrinks geometrically, ``1 - (1 - r)^(i / n)`` from 0 (0 -> 0.875 in 3 rounds: 0.5, 0.75, 0.875)."""
    kept0, kept1 = 1 - start, 1 - end
    return [1 - kept0 * (kept1 / kept0) ** ((i + 1) / rounds) for i in range(rounds)]
