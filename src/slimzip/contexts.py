"""Context-modelled code streams (.slz version 8): each kept weight's codebook index is coded under one of
five adaptive models, chosen by its neighbour, the previous kept weight of the same *unit* (a conv kernel;
a linear layer's row): none (the unit's first kept weight), or that weight's sign and whether it sits right
before this one. Neighbouring weights of a kernel share sign and size more often than chance (DeepCABAC's
contexts exploit the same): on a ResNet-20 file 3.5% fewer code bits, on LeNet-300-100's first layer 12%.

A context depends on a code decoded before it, so the codes are not coded in file order but by their
*rank* in their unit: every unit's first kept weight, then every unit's second, and so on; each rank is a
*step* whose contexts are all known once the step before it is decoded, so a step decodes in blocks of
symbols at once (the blocks of an ``adaptive`` stream, cut again where a step starts). Each context keeps
its own counts from zero plus a pseudo-count ``2**-k`` per symbol (the stream's prior, as ``adaptive``),
updated after every block. docs/FORMAT.md, "Version 8", gives every rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .coding import ADAPTIVE_PRIORS, FormatError, adaptive_blocks

CONTEXTS = 5  # 0: a unit's first kept weight; else 1 + (previous centroid >= 0) + 2 x (previous position adjacent)
CONTEXT_ALPHABET = 256  # the most codebook entries a context stream may have
CONTEXT_WORK = 2 ** 27  # symbols x alphabet, summed over a file's context streams: writer and reader bound
CONTEXT_STEPS = 2 ** 14  # steps (the largest rank + 1), summed over a file's context streams


def unit_size(shape: tuple[int, ...] | list[int]) -> int:
    """Weights per unit: a conv kernel (every dimension after the first two), a linear layer's row."""
    return math.prod(shape[2:]) if len(shape) > 2 else (int(shape[-1]) if shape else 1)


@dataclass(frozen=True)
class CodeContext:
    """Where each kept weight's code sits in a context stream, and what its context reads."""

    order: np.ndarray  # kept-weight indices (file order) in coding order: by rank, then by unit
    first: np.ndarray  # bool per kept weight: its unit's first
    adjacent: np.ndarray  # bool per kept weight: at the position right after the previous kept weight
    nonneg: np.ndarray  # bool per codebook entry: the centroid is >= 0
    bounds: list[int]  # block boundaries in coding order
    steps: int

    def contexts(self, idx: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The context of the kept weights ``idx`` (their previous kept weight's code is in ``codes``)."""
        previous = self.nonneg[codes[idx - 1]].astype(np.int64)  # idx 0 is a first: masked below
        return np.where(self.first[idx], 0, 1 + previous + 2 * self.adjacent[idx])


def plan(positions: np.ndarray, shape: tuple[int, ...] | list[int], codebook: np.ndarray) -> CodeContext:
    """The coding order and context inputs of a tensor's codes, from its kept (sorted, flat) positions."""
    positions = np.asarray(positions, dtype=np.int64)
    n = len(positions)
    unit = positions // max(unit_size(shape), 1)
    first = np.ones(n, dtype=bool)
    first[1:] = unit[1:] != unit[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n])) if n else np.zeros(0, dtype=np.int64)
    order = np.lexsort((unit, rank))
    adjacent = np.zeros(n, dtype=bool)
    adjacent[1:] = positions[1:] == positions[:-1] + 1
    step_starts = np.flatnonzero(np.diff(rank[order])) + 1 if n else np.zeros(0, dtype=np.int64)
    bounds = sorted(set(adaptive_blocks(n)) | set(step_starts.tolist()))
    return CodeContext(order, first, adjacent & ~first, np.asarray(codebook) >= 0, bounds,
                       int(rank.max()) + 1 if n else 0)


def fits(count: int, alphabet: int) -> bool:
    """Whether a context stream of ``count`` codes in [0, ``alphabet``) may be written (alone)."""
    return 1 < alphabet <= CONTEXT_ALPHABET and count * alphabet <= CONTEXT_WORK


def _blocks(ctx: CodeContext, codes: np.ndarray):
    """(kept-weight indices, their contexts) of each block, in coding order."""
    for a, b in zip(ctx.bounds, ctx.bounds[1:]):
        idx = ctx.order[a:b]
        yield idx, ctx.contexts(idx, codes)


def cost(codes: np.ndarray, alphabet: int, ctx: CodeContext) -> tuple[float, int]:
    """(bits, k): the information of ``codes`` under the context model with its cheapest prior ``k``."""
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.zeros((CONTEXTS, alphabet))
    bits = np.zeros(len(ADAPTIVE_PRIORS))
    for idx, c in _blocks(ctx, codes):
        symbols = codes[idx]
        hits, totals = counts[c, symbols], counts[c].sum(axis=1)
        for j, k in enumerate(ADAPTIVE_PRIORS):
            bits[j] -= np.log2((hits + 2.0 ** -k) / (totals + alphabet * 2.0 ** -k)).sum()
        np.add.at(counts, (c, symbols), 1)
    j = int(np.argmin(bits))
    return float(bits[j]), ADAPTIVE_PRIORS[j]


def _probabilities(counts: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    p = counts[c] + 2.0 ** -k
    return p / p.sum(axis=1, keepdims=True)


def push(coder, codes: np.ndarray, alphabet: int, ctx: CodeContext, k: int) -> None:
    """Encode a context stream onto an ANS stack: each block's models from the counts before it (computed
    first to last), pushed last block first so that they decode first to last."""
    import constriction

    codes = np.asarray(codes, dtype=np.int64)
    counts, blocks = np.zeros((CONTEXTS, alphabet)), []
    for idx, c in _blocks(ctx, codes):
        blocks.append((codes[idx].astype(np.int32), c, counts.copy()))
        np.add.at(counts, (c, codes[idx]), 1)
    family = constriction.stream.model.Categorical(perfect=False)
    for symbols, c, before in reversed(blocks):
        coder.encode_reverse(symbols, family, _probabilities(before, c, k))


def pop(coder, count: int, alphabet: int, ctx: CodeContext, k: int) -> np.ndarray:
    """Decode a context stream of ``count`` codes from an ANS stack (``push``'s inverse)."""
    import constriction

    if len(ctx.order) != count:
        raise FormatError("context stream: its tensor's kept positions do not match its count")
    codes, counts = np.zeros(count, dtype=np.int64), np.zeros((CONTEXTS, alphabet))
    family = constriction.stream.model.Categorical(perfect=False)
    for a, b in zip(ctx.bounds, ctx.bounds[1:]):
        idx = ctx.order[a:b]
        c = ctx.contexts(idx, codes)
        codes[idx] = coder.decode(family, _probabilities(counts, c, k))
        np.add.at(counts, (c, codes[idx]), 1)
    return codes
