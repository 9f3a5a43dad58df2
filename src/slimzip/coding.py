"""Entropy coding (deep compression, step 3): the sparse relative-index transform and the symbol coders.

Every coder turns a 1-D array of small non-negative integers (symbols < ``alphabet``) into a
self-contained byte string (its own tables included) and back. All work is vectorised numpy; none
loops over symbols in Python.

- ``fixed``: ``ceil(log2(alphabet))`` bits per symbol, packed.
- ``huffman``: canonical Huffman, code lengths limited to 16 bits. The symbols are coded in blocks whose
  bit offsets are stored, so the decoder walks all blocks in lock step (one numpy step decodes one
  symbol of every block).
- ``rans``: range-ANS through the ``constriction`` package, with the empirical symbol counts as the
  model: it gets within a fraction of a percent of the empirical entropy, plus a table of the counts.
- ``adaptive``: range-ANS with no table: the model is the counts of the symbols decoded so far, updated
  block by block (format version 5).
"""

from __future__ import annotations

import heapq
import math
import struct
from typing import Protocol

import numpy as np

MAX_CODE_LEN = 16  # Huffman decode table: 2**16 entries
HUFFMAN_BLOCK = 1024  # symbols per independently decodable block


class FormatError(ValueError):
    """A coded stream is malformed (truncated, corrupted, or inconsistent with its header)."""


# --- sparse relative indices ---------------------------------------------------------------------

def gaps_encode(positions: np.ndarray, index_bits: int) -> np.ndarray:
    """Sorted flat positions of kept weights -> gap symbols in [0, 2**index_bits).

    A gap ``d`` (distance from the previous kept position, the first from -1) is written as ``d - 1``.
    A gap that does not fit is preceded by filler symbols ``E = 2**index_bits - 1``, each meaning "skip
    E positions, no weight here" (deep compression's filler zero).
    """
    escape = 2 ** index_bits - 1
    gaps = np.diff(positions.astype(np.int64), prepend=-1) - 1
    fillers, rest = np.divmod(gaps, escape)
    out = np.full(len(gaps) + int(fillers.sum()), escape, dtype=np.int64)
    out[np.cumsum(fillers + 1) - 1] = rest  # each real symbol sits after its fillers
    return out


def gaps_decode(symbols: np.ndarray, index_bits: int, numel: int) -> np.ndarray:
    """Inverse of ``gaps_encode``; checks every position is inside a tensor of ``numel`` elements."""
    escape = 2 ** index_bits - 1
    symbols = symbols.astype(np.int64)
    real = symbols != escape
    positions = np.cumsum(np.where(real, symbols + 1, escape))[real] - 1
    if len(positions) and (positions[-1] >= numel or positions[0] < 0):
        raise FormatError(f"sparse index points past the end of a tensor of {numel} elements")
    return positions


# --- coders --------------------------------------------------------------------------------------

class Codec(Protocol):
    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes: ...
    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray: ...


def check_symbols(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.ndim != 1:
        raise ValueError("symbols must be a 1-D array")
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet})")
    return symbols


def _pack_bits(values: np.ndarray, lengths: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Concatenate each value's low ``lengths`` bits, MSB first; returns (bytes, bit start of each)."""
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(starts[-1])
    owner = np.repeat(np.arange(len(values)), lengths)
    shift = lengths[owner] - 1 - (np.arange(total) - starts[owner])
    bits = ((values[owner] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits).tobytes(), starts


def _windows(payload: np.ndarray, bitpos: np.ndarray) -> np.ndarray:
    """The 16 bits starting at each bit position (payload padded with 3 zero bytes)."""
    byte = bitpos >> 3
    v = (payload[byte].astype(np.uint32) << 16) | (payload[byte + 1].astype(np.uint32) << 8) | payload[byte + 2]
    return (v >> (8 - (bitpos & 7)).astype(np.uint32)) & 0xFFFF


def fixed_width(alphabet: int) -> int:
    """The ``fixed`` coder's bits per symbol (at least 1)."""
    return max(1, math.ceil(math.log2(alphabet)))


def fixed_bytes(count: int, alphabet: int) -> int:
    """The length of a ``fixed`` stream of ``count`` symbols (version 7 implies it)."""
    return (count * fixed_width(alphabet) + 7) // 8


class FixedCodec:
    """Fixed-width bit packing: the baseline the entropy coders are measured against."""

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        symbols = check_symbols(symbols, alphabet)
        return _pack_bits(symbols, np.full(len(symbols), fixed_width(alphabet), dtype=np.int64))[0]

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        width = fixed_width(alphabet)
        if len(data) != fixed_bytes(count, alphabet):
            raise FormatError("fixed-width stream has the wrong length")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        if bits[count * width:].any():
            raise FormatError("fixed-width stream has non-zero padding bits")
        symbols = (bits[: count * width].reshape(count, width).astype(np.int64) << np.arange(width - 1, -1, -1)).sum(1)
        if len(symbols) and symbols.max() >= alphabet:
            raise FormatError("fixed-width stream holds a symbol outside the alphabet")
        return symbols


def huffman_lengths(counts: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Code length per symbol (0 for unused symbols), no longer than ``max_len``.

    Over the alphabet only (at most 65,536 entries), never over the data. When the optimal tree is too
    deep, the counts are flattened (halved, rounded up) until it fits."""
    counts = np.asarray(counts, dtype=np.int64).copy()
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    symbols = [int(s) for s in used]
    while symbols:
        heap = [(int(counts[s]), i, [s]) for i, s in enumerate(symbols)]
        heapq.heapify(heap)
        depth = dict.fromkeys(symbols, 0)
        tie = len(heap)
        while len(heap) > 1:
            c1, _, s1 = heapq.heappop(heap)
            c2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
            tie += 1
        if max(depth.values()) <= max_len:
            lengths[symbols] = [depth[s] for s in symbols]
            return lengths
        counts[used] = (counts[used] + 1) // 2
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical Huffman code values for the given lengths (symbols in order of (length, symbol))."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    order = order[lengths[order] > 0]
    code, prev = 0, int(lengths[order[0]]) if len(order) else 0
    for sym in order:  # loop over the alphabet, not the data
        code <<= int(lengths[sym]) - prev
        prev = int(lengths[sym])
        codes[sym] = code
        code += 1
    return codes


class HuffmanCodec:
    """Canonical Huffman with block offsets for a lock-step vectorised decoder.

    Layout: ``u32 n_used`` then per used symbol ``u16 symbol, u8 length`` (sparse table), then
    ``u32`` bit offset of every block after the first, then the bit payload.
    """

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        symbols = check_symbols(symbols, alphabet)
        lengths = huffman_lengths(np.bincount(symbols, minlength=alphabet))
        codes = canonical_codes(lengths)
        used = np.flatnonzero(lengths)
        table = struct.pack("<I", len(used)) + b"".join(struct.pack("<HB", int(s), int(lengths[s])) for s in used)
        payload, starts = _pack_bits(codes[symbols], lengths[symbols])
        offsets = starts[HUFFMAN_BLOCK:-1:HUFFMAN_BLOCK].astype("<u4").tobytes()
        return table + offsets + payload

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        lengths, pos = self._read_table(data, alphabet)
        nblocks = -(-count // HUFFMAN_BLOCK)
        if count == 0:
            if len(data) != 4 or pos != 4:
                raise FormatError("an empty huffman stream is its 4-byte header (no table, no payload)")
            return np.zeros(0, dtype=np.int64)
        if pos == 4:
            raise FormatError("huffman table is empty for a non-empty stream")
        end = pos + 4 * (nblocks - 1)
        if end > len(data):
            raise FormatError("huffman stream truncated in its block offsets")
        starts = np.concatenate([[0], np.frombuffer(data[pos:end], dtype="<u4")]).astype(np.int64)
        payload = np.frombuffer(data[end:] + b"\0\0\0", dtype=np.uint8)
        total_bits = 8 * (len(payload) - 3)
        if np.any(np.diff(starts) < 0) or starts[-1] > total_bits:
            raise FormatError("huffman block offsets are out of order or past the payload")
        sym_table, len_table = self._decode_table(lengths)
        sizes = np.full(nblocks, HUFFMAN_BLOCK)
        sizes[-1] = count - HUFFMAN_BLOCK * (nblocks - 1)
        out = np.zeros((nblocks, HUFFMAN_BLOCK), dtype=np.int64)
        bitpos, bad = starts.copy(), np.zeros(nblocks, dtype=bool)
        for step in range(int(sizes.max())):
            live = sizes > step
            w = _windows(payload, np.minimum(bitpos, total_bits))
            out[:, step] = sym_table[w]
            bad |= live & (len_table[w] == 0)
            bitpos += np.where(live, len_table[w], 0)
        if bad.any() or bitpos.max() > total_bits:
            raise FormatError("huffman payload is corrupt")
        _check_huffman_ends(payload[:-3], starts, bitpos)
        return out.reshape(-1)[:count]

    @staticmethod
    def _read_table(data: bytes, alphabet: int) -> tuple[np.ndarray, int]:
        if len(data) < 4:
            raise FormatError("huffman stream truncated in its header")
        (n_used,) = struct.unpack_from("<I", data)
        if n_used > alphabet or len(data) < 4 + 3 * n_used:
            raise FormatError("huffman table is larger than the alphabet or truncated")
        entries = np.frombuffer(data[4:4 + 3 * n_used], dtype=[("s", "<u2"), ("l", "u1")])
        lengths = np.zeros(alphabet, dtype=np.int64)
        if np.any(entries["s"] >= alphabet) or np.any(entries["l"] < 1) or np.any(entries["l"] > MAX_CODE_LEN):
            raise FormatError("huffman table holds an impossible symbol or length")
        if np.any(np.diff(entries["s"].astype(np.int64)) <= 0):
            raise FormatError("huffman table symbols are not in increasing order")
        lengths[entries["s"]] = entries["l"]
        if n_used == 1 and entries["l"][0] != 1:
            raise FormatError("a one-symbol huffman table has code length 1")
        if n_used > 1 and np.sum(2.0 ** -lengths[lengths > 0]) != 1.0:  # exact in binary floating point
            raise FormatError("huffman code lengths are not a complete prefix code")
        return lengths, 4 + 3 * n_used

    @staticmethod
    def _decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For every 16-bit window: the symbol whose code starts it, and that code's length (0: none)."""
        codes = canonical_codes(lengths)
        sym_table = np.zeros(2 ** MAX_CODE_LEN, dtype=np.int64)
        len_table = np.zeros(2 ** MAX_CODE_LEN, dtype=np.int64)
        for s in np.flatnonzero(lengths):  # over the alphabet
            shift = MAX_CODE_LEN - int(lengths[s])
            lo = int(codes[s]) << shift
            sym_table[lo:lo + (1 << shift)] = s
            len_table[lo:lo + (1 << shift)] = lengths[s]
        return sym_table, len_table


def _check_huffman_ends(payload: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """Blocks tile the payload: each ends where the next starts, the last in the final byte, and the
    bits after it are zero (a strict reader accepts one encoding of each stream)."""
    if np.any(ends[:-1] != starts[1:]):
        raise FormatError("huffman block offsets do not match where the blocks end")
    last = int(ends[-1])
    if len(payload) != (last + 7) // 8:
        raise FormatError("huffman payload has bytes after its last code")
    if last % 8 and int(payload[-1]) & ((1 << (8 - last % 8)) - 1):
        raise FormatError("huffman payload has non-zero padding bits")


class RansCodec:
    """Range ANS (constriction's AnsCoder) with the empirical counts as a categorical model.

    Layout: ``u32 n_used``, per used symbol ``u16 symbol, u32 count``, then the coder's u32 words.
    """

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        symbols = check_symbols(symbols, alphabet)
        counts = np.bincount(symbols, minlength=alphabet)
        used = np.flatnonzero(counts)
        table = struct.pack("<I", len(used)) + b"".join(struct.pack("<HI", int(s), int(counts[s])) for s in used)
        if len(used) <= 1:  # a constant stream carries no information beyond its table
            return table
        import constriction

        dense = np.searchsorted(used, symbols).astype(np.int32)
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(dense, self._model(counts[used]))
        return table + coder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        if len(data) < 4:
            raise FormatError("rans stream truncated in its header")
        (n_used,) = struct.unpack_from("<I", data)
        if n_used > alphabet or len(data) < 4 + 6 * n_used:
            raise FormatError("rans table is larger than the alphabet or truncated")
        entries = np.frombuffer(data[4:4 + 6 * n_used], dtype=[("s", "<u2"), ("c", "<u4")])
        used, counts = entries["s"].astype(np.int64), entries["c"].astype(np.int64)
        if np.any(used >= alphabet) or np.any(np.diff(used) <= 0) or np.any(counts == 0) or counts.sum() != count:
            raise FormatError("rans table is inconsistent with the stream")
        words = data[4 + 6 * n_used:]
        if n_used <= 1:
            if words:
                raise FormatError("a constant rans stream is its table alone (words follow it)")
            return np.full(count, used[0] if n_used else 0, dtype=np.int64)
        if len(words) % 4:
            raise FormatError("rans payload is not whole 32-bit words")
        import constriction

        try:  # constriction refuses some corrupt inputs when the coder is made, others when decoding
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
            dense = coder.decode(self._model(counts), count)
        except Exception as e:  # constriction raises its own error types on corrupt input
            raise FormatError(f"rans payload is corrupt ({e})") from None
        if not coder.is_empty():
            raise FormatError("rans payload is corrupt (words left over)")
        dense = dense.astype(np.int64)
        if not np.array_equal(np.bincount(dense, minlength=len(counts)), counts):  # the table is the stream's
            raise FormatError("rans payload contradicts its count table (the symbols it decodes to are not counted so)")
        return used[dense]

    @staticmethod
    def _model(counts: np.ndarray):
        import constriction

        return constriction.stream.model.Categorical((counts / counts.sum()).astype(np.float64), perfect=False)


ADAPTIVE_PRIORS = (1, 3, 5, 7)  # the pseudo-count of every symbol is 2**-k for one of these k (header byte)
ADAPTIVE_FIRST, ADAPTIVE_BLOCK = 16, 256  # block lengths: 16, 32, ..., then 256 symbols each
ADAPTIVE_WORK = 2 ** 25  # blocks x alphabet a stream may cost (a model per block): writer and reader bound


def adaptive_blocks(count: int) -> list[int]:
    """The block boundaries of an adaptive stream of ``count`` symbols: lengths double from
    ``ADAPTIVE_FIRST`` to ``ADAPTIVE_BLOCK``, then stay."""
    bounds, length = [0], ADAPTIVE_FIRST
    while bounds[-1] < count:
        bounds.append(min(bounds[-1] + length, count))
        length = min(2 * length, ADAPTIVE_BLOCK)
    return bounds


class AdaptiveCodec:
    """Adaptive range ANS with no table: each block of symbols is coded with the counts of every symbol
    before it plus a pseudo-count ``2**-k`` per symbol of the alphabet (blocks of 16, 32, ... 256
    symbols), so the model learns the stream as the decoder reads it; the writer picks ``k`` from
    ``ADAPTIVE_PRIORS`` (the smallest stream).

    Layout: ``u8 k``, then the coder's u32 words (none for an empty stream). A stream whose blocks x
    alphabet exceed ``ADAPTIVE_WORK`` is not written (``fits``) and is refused when read."""

    @staticmethod
    def fits(count: int, alphabet: int) -> bool:
        return (len(adaptive_blocks(count)) - 1) * alphabet <= ADAPTIVE_WORK

    def encode(self, symbols: np.ndarray, alphabet: int) -> bytes:
        symbols = check_symbols(symbols, alphabet)
        if not self.fits(len(symbols), alphabet):
            raise ValueError(f"a stream of {len(symbols)} symbols in [0, {alphabet}) is too large to code adaptively")
        if alphabet <= 1:  # one symbol carries no information: the prior byte alone
            return bytes([ADAPTIVE_PRIORS[0]])
        blocks, before = block_counts(symbols, alphabet)
        costs = sorted(prior_bits(blocks, before))
        # a prior whose information is a word (32 bits) or more above the best one's codes no fewer words
        return min((self._encode(blocks, before, k) for bits, k in costs if bits < costs[0][0] + 32), key=len)

    @staticmethod
    def _encode(blocks: list[np.ndarray], before: np.ndarray, k: int) -> bytes:
        """``blocks`` coded with prior ``k``; ``before[j]``: the counts of every symbol in blocks before j."""
        import constriction

        coder = constriction.stream.stack.AnsCoder()
        push_adaptive(coder, blocks, before, k)
        return bytes([k]) + coder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, count: int, alphabet: int) -> np.ndarray:
        if len(data) < 1 or data[0] not in ADAPTIVE_PRIORS:
            raise FormatError("adaptive stream has no valid prior byte")
        if not self.fits(count, alphabet):
            raise FormatError(f"adaptive stream of {count} symbols in [0, {alphabet}) is larger than slimzip writes")
        if (len(data) - 1) % 4:
            raise FormatError("adaptive payload is not whole 32-bit words")
        k = data[0]
        if alphabet <= 1:
            if len(data) > 1:
                raise FormatError("adaptive payload is corrupt (words left over)")
            return np.zeros(count, dtype=np.int64)
        import constriction

        try:
            coder = constriction.stream.stack.AnsCoder(np.frombuffer(data[1:], dtype="<u4").astype(np.uint32))
            out = pop_adaptive(coder, count, alphabet, k)
        except Exception as e:  # constriction raises its own error types on corrupt input
            raise FormatError(f"adaptive payload is corrupt ({e})") from None
        if not coder.is_empty():
            raise FormatError("adaptive payload is corrupt (words left over)")
        return out


def block_counts(symbols: np.ndarray, alphabet: int) -> tuple[list[np.ndarray], np.ndarray]:
    """An adaptive stream's blocks and, for each, the counts of every symbol in the blocks before it."""
    bounds = adaptive_blocks(len(symbols))
    blocks = [symbols[a:b].astype(np.int32) for a, b in zip(bounds, bounds[1:])]
    before = np.cumsum([np.zeros(alphabet)] + [np.bincount(x, minlength=alphabet) for x in blocks[:-1]], axis=0)
    return blocks, before


def push_adaptive(coder, blocks: list[np.ndarray], before: np.ndarray, k: int) -> None:
    """Encode one adaptive stream onto an ANS stack (the last block first, so that it decodes first to last)."""
    for block, counts in zip(reversed(blocks), before[::-1]):
        coder.encode_reverse(block, _categorical(counts + 2.0 ** -k))


def pop_adaptive(coder, count: int, alphabet: int, k: int) -> np.ndarray:
    """Decode one adaptive stream of ``count`` symbols from an ANS stack (``push_adaptive``'s inverse)."""
    bounds, out = adaptive_blocks(count), np.zeros(count, dtype=np.int64)
    counts = np.zeros(alphabet, dtype=np.float64)
    for a, b in zip(bounds, bounds[1:]):
        out[a:b] = coder.decode(_categorical(counts + 2.0 ** -k), b - a)
        counts += np.bincount(out[a:b], minlength=alphabet)
    return out


def adaptive_cost(symbols: np.ndarray, alphabet: int) -> tuple[float, int]:
    """(bits, k): the information content of ``symbols`` under the adaptive model with the prior ``k`` of
    ``ADAPTIVE_PRIORS`` that makes it smallest: what the stream adds to a joint stream."""
    symbols = check_symbols(symbols, alphabet)
    if alphabet <= 1 or len(symbols) == 0:
        return 0.0, ADAPTIVE_PRIORS[0]
    return prior_costs(*block_counts(symbols, alphabet))


def prior_bits(blocks: list[np.ndarray], before: np.ndarray) -> list[tuple[float, int]]:
    """(bits, k) of an adaptive stream's blocks under each prior ``k``: each symbol's probability is its count
    before its block plus ``2**-k``, over the block's total."""
    if not blocks:  # an empty stream carries no information
        return [(0.0, k) for k in ADAPTIVE_PRIORS]
    which = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    hits, totals = before[which, np.concatenate(blocks)], before.sum(axis=1)[which]
    alphabet = before.shape[1]
    return [(-float(np.log2((hits + 2.0 ** -k) / (totals + alphabet * 2.0 ** -k)).sum()), k) for k in ADAPTIVE_PRIORS]


def prior_costs(blocks: list[np.ndarray], before: np.ndarray) -> tuple[float, int]:
    """(bits, k) of an adaptive stream's blocks under its cheapest prior ``k``."""
    return min(prior_bits(blocks, before))


def can_code(name: str, count: int, alphabet: int) -> bool:
    """Whether coder ``name`` writes a stream of ``count`` symbols in [0, ``alphabet``) (``adaptive``
    bounds its work; the others take any)."""
    fits = getattr(CODECS[name], "fits", None)
    return fits is None or fits(count, alphabet)


def _categorical(weights: np.ndarray):
    import constriction

    return constriction.stream.model.Categorical(weights / weights.sum(), perfect=False)


CODECS: dict[str, Codec] = {"fixed": FixedCodec(), "huffman": HuffmanCodec(), "rans": RansCodec(),
                            "adaptive": AdaptiveCodec()}


def entropy_bits(symbols: np.ndarray) -> float:
    """Empirical entropy in bits per symbol (the floor for any coder of i.i.d. symbols)."""
    if len(symbols) == 0:
        return 0.0
    p = np.bincount(np.asarray(symbols, dtype=np.int64)) / len(symbols)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())
