"""A .slz file's tensors as the file keeps them: shared weights as codebook + codes + gap symbols (the
streams before entropy coding), small tensors as float32, uint8 (lo + step x q) or one constant."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..codec import RAW_DTYPES, _section, decode_shared, model_table, quantized_parts
from ..coding import gaps_decode, gaps_encode
from ..compact import AFFINE
from ..container import Container
from ..errors import SlimzipError


@dataclass(frozen=True)
class Stream:
    """A shared tensor: kept weight k is ``codebook[codes[k]]`` at the k-th position the gaps spell."""

    shape: tuple[int, ...]
    codebook: np.ndarray  # float32
    code_bits: int
    codes: np.ndarray  # int64, one per kept weight
    index_bits: int
    gaps: np.ndarray  # int64 gap symbols, escape 2**index_bits - 1 meaning "skip that many, no weight"

    @property
    def kept(self) -> int:
        return len(self.codes)

    def positions(self) -> np.ndarray:
        return gaps_decode(self.gaps, self.index_bits, math.prod(self.shape))

    def narrowest(self) -> Stream:
        """The same positions as gap symbols of the width whose fixed-width packing is smallest (the file
        picks its width for the entropy coder behind it; a device reading fixed-width fields wants this)."""
        positions = self.positions()
        best = min(range(1, 17), key=lambda bits: len(gaps_encode(positions, bits)) * bits)
        return Stream(self.shape, self.codebook, self.code_bits, self.codes, best, gaps_encode(positions, best))


@dataclass(frozen=True)
class Vector:
    """A dense tensor: ``values`` (float32), or ``lo + step * q`` (uint8 q), or ``lo`` everywhere."""

    shape: tuple[int, ...]
    values: np.ndarray | None = None
    q: np.ndarray | None = None
    lo: float = 0.0
    step: float = 0.0

    def dense(self) -> np.ndarray:
        if self.values is not None:
            return self.values.reshape(self.shape)
        if self.q is not None:
            return (np.float32(self.lo) + np.float32(self.step) * self.q.astype(np.float32)).reshape(self.shape)
        return np.full(self.shape, self.lo, dtype=np.float32)


Stored = Stream | Vector


def stored_tensors(container: Container, model) -> dict[str, Stored]:
    """Every tensor of the file decoded into ``model``, by state-dict name, as the file keeps it."""
    out: dict[str, Stored] = {}
    for entry in model_table(container, model):
        shape = tuple(int(d) for d in entry["shape"])
        out[entry["name"]] = _stored(container, entry, shape)
    return out


def _stored(container: Container, entry: dict, shape: tuple[int, ...]) -> Stored:
    encoding = entry["encoding"]
    if encoding == "constant":
        return Vector(shape, lo=float(entry["value"]))
    if encoding in AFFINE:
        lo, step, q = quantized_parts(container, entry, math.prod(shape))
        return Vector(shape, q=q.copy(), lo=lo, step=step)
    if encoding == "raw":
        dtype = np.dtype(RAW_DTYPES[entry["dtype"]][0]).newbyteorder("<")
        return Vector(shape, values=np.frombuffer(_section(container, entry, "data"), dtype=dtype).astype(np.float32))
    if encoding != "shared":
        raise SlimzipError(f"tensor {entry['name']}: encoding {encoding!r} has no deployed form")
    layer = decode_shared(container, entry, shape)
    index_bits = int(entry["index_bits"])
    positions = np.flatnonzero(layer.mask.flatten().numpy())
    codebook = layer.centroids.numpy().astype(np.float32)
    return Stream(shape, codebook, max(1, math.ceil(math.log2(len(codebook)))), layer.codes.numpy(), index_bits,
                  gaps_encode(positions, index_bits))


def dense_vector(tensor) -> Vector:
    """A tensor the file does not hold (a buffer the graph reads), as float32."""
    values = tensor.detach().cpu().float().numpy()
    return Vector(tuple(values.shape), values=values.flatten())
