"""The joint stream (.slz version 7; context streams from version 8): several streams in one range-ANS
coder, each with its own adaptive model and prior: one coder's final state instead of one per stream, and
no lengths between them. Its *members*, in the order they decode: the ``adaptive`` members (a shared
tensor's code or gap stream, rows in order, codes first), then the ``context`` members (code streams
under ``contexts``' model, rows in order), whose contexts need their tensors' positions, which the first
members or the tensors' own sections hold.

Layout: the members' priors, 2 bits each (an index into ``ADAPTIVE_PRIORS``, the first member in the high
bits of byte 0), zero-padded to a byte; then the coder's u32 words."""

from __future__ import annotations

import numpy as np

from . import contexts
from .coding import (ADAPTIVE_PRIORS, ADAPTIVE_WORK, FormatError, adaptive_blocks, block_counts, check_symbols,
                     pop_adaptive, prior_costs, push_adaptive)


def joint_work(streams: list[tuple[int, int]]) -> int:
    """Blocks x alphabet of the adaptive members ``(count, alphabet)``: bounded by ``ADAPTIVE_WORK``."""
    return sum((len(adaptive_blocks(count)) - 1) * alphabet for count, alphabet in streams)


def context_work(streams: list[tuple[int, int]]) -> int:
    """Symbols x alphabet of the context members ``(count, alphabet)``: bounded by ``CONTEXT_WORK``."""
    return sum(count * alphabet for count, alphabet in streams)


ContextMember = tuple[np.ndarray, int, "contexts.CodeContext"]  # (codes, alphabet, plan)


def joint_encode(streams: list[tuple[np.ndarray, int]], context: list[ContextMember] = ()) -> bytes:
    """The adaptive members ``(symbols, alphabet)`` and the context members ``(codes, alphabet, plan)`` as
    one joint stream, each with the prior that makes it smallest."""
    if joint_work([(len(x), a) for x, a in streams]) > ADAPTIVE_WORK or \
            context_work([(len(x), a) for x, a, _ in context]) > contexts.CONTEXT_WORK or \
            sum(p.steps for _, _, p in context) > contexts.CONTEXT_STEPS:
        raise ValueError("these streams are too large to code as one joint stream")
    import constriction

    coded = [block_counts(check_symbols(x, a), a) if a > 1 and len(x) else None for x, a in streams]
    priors = [prior_costs(*c)[1] if c else ADAPTIVE_PRIORS[0] for c in coded]
    for x, a, p in context:
        check_symbols(x, a)
    context_priors = [contexts.cost(x, a, p)[1] for x, a, p in context]
    coder = constriction.stream.stack.AnsCoder()
    for (x, a, p), k in zip(reversed(context), reversed(context_priors)):  # LIFO: the last member first
        contexts.push(coder, x, a, p, k)
    for c, k in zip(reversed(coded), reversed(priors)):
        if c:
            push_adaptive(coder, *c, k)
    head = _pack2([ADAPTIVE_PRIORS.index(k) for k in priors + context_priors])
    return head + coder.get_compressed().astype("<u4").tobytes()


class JointReader:
    """Reads a joint stream of ``members`` members one at a time, in the writer's order; ``close`` checks
    that every word was used. Every error is a ``FormatError``."""

    def __init__(self, data: bytes, members: int):
        head = (2 * members + 7) // 8
        if len(data) < head or (len(data) - head) % 4:
            raise FormatError("joint stream truncated or not whole 32-bit words after its priors")
        if 2 * members % 8 and data[head - 1] & ((1 << (8 - 2 * members % 8)) - 1):
            raise FormatError("joint stream: the padding bits after its priors are not zero")
        import constriction

        self._priors = iter(ADAPTIVE_PRIORS[i] for i in _unpack2(data[:head], members))
        try:
            self._coder = constriction.stream.stack.AnsCoder(np.frombuffer(data[head:], dtype="<u4").astype(np.uint32))
        except Exception as e:  # constriction raises its own error types on corrupt input
            raise FormatError(f"joint stream is corrupt ({e})") from None

    def _read(self, pop) -> tuple[np.ndarray, float]:
        before = self._coder.num_valid_bits()
        try:
            symbols = pop(self._coder, next(self._priors))
        except FormatError:
            raise
        except Exception as e:  # constriction raises its own error types on corrupt input
            raise FormatError(f"joint stream is corrupt ({e})") from None
        return symbols, float(before - self._coder.num_valid_bits())

    def adaptive(self, count: int, alphabet: int) -> tuple[np.ndarray, float]:
        """The next adaptive member's symbols and the bits it took of the coder (what ``inspect`` shows)."""
        if alphabet <= 1:
            return self._read(lambda coder, k: np.zeros(count, dtype=np.int64))
        return self._read(lambda coder, k: pop_adaptive(coder, count, alphabet, k))

    def context(self, count: int, alphabet: int, plan: contexts.CodeContext) -> tuple[np.ndarray, float]:
        """The next context member's codes and the bits it took."""
        return self._read(lambda coder, k: contexts.pop(coder, count, alphabet, plan, k))

    def close(self) -> None:
        if not self._coder.is_empty():
            raise FormatError("joint stream is corrupt (words left over)")


def joint_decode(data: bytes, streams: list[tuple[int, int]]) -> list[tuple[np.ndarray, float]]:
    """A joint stream of adaptive members ``(count, alphabet)`` only: each member's symbols and bits."""
    if joint_work(streams) > ADAPTIVE_WORK:
        raise FormatError("the joint stream is larger than slimzip writes")
    reader = JointReader(data, len(streams))
    out = [reader.adaptive(count, alphabet) for count, alphabet in streams]
    reader.close()
    return out


def _pack2(values: list[int]) -> bytes:
    """2-bit values, the first in the high bits of the first byte, zero-padded to a byte."""
    q = np.array(values, dtype=np.uint8).reshape(-1, 1)
    return np.packbits(np.unpackbits(q, axis=1)[:, 6:].reshape(-1)).tobytes()


def _unpack2(data: bytes, count: int) -> list[int]:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:2 * count].reshape(count, 2)
    return (bits[:, 0] * 2 + bits[:, 1]).astype(int).tolist()
