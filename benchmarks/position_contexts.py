"""Would a context-modelled bitmap code the kept positions in fewer bytes than .slz's gap symbols?

For each shared tensor of a .slz file, the kept / pruned bit of every weight (its mask, in storage order)
is costed, without writing a coder, as the ideal code length of an adaptive binary model: each bit's
probability from the counts of the bits before it (pseudo-count 1/2), separately per *context*, the bits
at a few fixed distances back. Distances tried: one weight back (the left neighbour), a kernel row, a
kernel, an image row (a linear layer on a square image), and one output unit back (the same input
position in the previous filter); the smallest of every choice of up to three is kept per tensor, and
never more than no context at all. Two settings:

- ``with left``: the left neighbour may be a context; decoding it reads one bit at a time;
- ``chunked``: distances of 2 or more only, the counts updated once per chunk of the shortest distance,
  so a decoder reads a chunk at a time (what a vectorized decoder can do).

Against each file's own position streams as stored (gap symbols with the .slz coders), the same gaps at
the writer's per-tensor width (``--index-bits-* 0``), and those gaps in another storage order (a linear
layer's weights column by column, a conv's input channel by input channel: whole dead inputs become
long runs).

Usage: python benchmarks/position_contexts.py [FILE.slz ...]
writes benchmarks/results/position_contexts.json and prints the table."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np

from slimzip.codec import decode_model, encode_positions, model_table
from slimzip.container import read_container
from slimzip.unstructured import prunable_weights
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILES = ("runs/lenet-5-bn.slz", "runs/l300-bn.slz", "runs/paper_cifar/resnet20-long/step2/frontier.slz")
MAX_CHUNK = 4096  # the chunked model's counts are updated at least this often


def code_length(bits: np.ndarray, distances: list[int], chunk: int) -> float:
    """Bits of an adaptive binary code of ``bits`` whose context is the bits ``distances`` back, the
    counts updated after every ``chunk`` bits (1: after every bit)."""
    context = np.zeros(len(bits), dtype=np.int64)
    for j, d in enumerate(distances):
        context[d:] += bits[:-d] << j
    counts, total = np.zeros((1 << len(distances), 2)), 0.0
    if chunk == 1:  # the sequential model's code length in closed form, per context (Krichevsky-Trofimov)
        for c in range(1 << len(distances)):
            ones = int(bits[context == c].sum())
            zeros = int((context == c).sum()) - ones
            total -= (math.lgamma(zeros + .5) + math.lgamma(ones + .5) - 2 * math.lgamma(.5)
                      - math.lgamma(zeros + ones + 1)) / math.log(2)
        return total
    for a in range(0, len(bits), chunk):
        b, c = bits[a:a + chunk], context[a:a + chunk]
        p1 = (counts[c, 1] + .5) / (counts[c].sum(1) + 1)
        total -= np.log2(np.where(b == 1, p1, 1 - p1)).sum()
        np.add.at(counts, (c, b), 1)
    return total


def distances(shape: tuple[int, ...]) -> list[int]:
    """The distances back worth trying for a weight of ``shape``: a kernel row, a kernel, an image row
    (a linear layer whose inputs form a square), one output unit."""
    fan_in = math.prod(shape[1:])
    found = {fan_in}
    if len(shape) == 4:
        found |= {shape[-1], shape[-1] * shape[-2]}
    elif (side := math.isqrt(fan_in)) ** 2 == fan_in:
        found.add(side)
    return sorted(d for d in found if 2 <= d < math.prod(shape))


def best(bits: np.ndarray, shape: tuple[int, ...], left: bool) -> float:
    """The smallest code length over every choice of up to three distances (with or without the left
    neighbour), never above no context at all."""
    far = distances(shape)
    if left:
        choices = [[1, *combo] for k in range(0, 3) for combo in itertools.combinations(far, k)]
        return min(code_length(bits, d, 1) for d in choices)
    choices = [list(combo) for k in range(1, 4) for combo in itertools.combinations(far, k)]
    plain = code_length(bits, [], MAX_CHUNK)
    return min([plain, *(code_length(bits, d, min(min(d), MAX_CHUNK)) for d in choices)])


def file_row(path: Path) -> dict:
    container = read_container(path)
    model = decode_model(container)
    stored = {e["name"]: len(container.sections[e["index"]]) for e in model_table(container, model)
              if e.get("encoding") == "shared"}
    row = {"model": container.manifest["model"].get("name", "graph"), "file_bytes": path.stat().st_size,
           "kept": 0, "stored_positions": 0, "widths": 0, "transposed": 0, "with_left": 0.0, "chunked": 0.0}
    for name, w in prunable_weights(model).items():
        if name not in stored:
            continue
        bits = (w.detach().numpy() != 0).astype(np.int64)
        row["kept"] += int(bits.sum())
        row["stored_positions"] += stored[name]
        row["widths"] += len(encode_positions(np.flatnonzero(bits.reshape(-1)), 0, "auto")[2][1])
        other = bits.T if bits.ndim == 2 else bits.transpose(1, 0, *range(2, bits.ndim))
        row["transposed"] += len(encode_positions(np.flatnonzero(other.reshape(-1)), 0, "auto")[2][1])
        row["with_left"] += best(bits.reshape(-1), bits.shape, left=True) / 8
        row["chunked"] += best(bits.reshape(-1), bits.shape, left=False) / 8
    row["with_left"], row["chunked"] = round(row["with_left"]), round(row["chunked"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=[f for f in DEFAULT_FILES if (ROOT / f).is_file()])
    args = parser.parse_args()
    rows = {file: file_row(Path(file)) for file in args.files}
    print(f"{'file':<52} {'kept':>7} {'stored':>8} {'widths':>8} {'transposed':>10} {'with left':>10} {'chunked':>8}")
    for file, r in rows.items():
        print(f"{file[-52:]:<52} {r['kept']:>7,} {r['stored_positions']:>8,} {r['widths']:>8,} {r['transposed']:>10,} "
              f"{r['with_left']:>10,} {r['chunked']:>8,}")
    out = ROOT / "benchmarks" / "results" / "position_contexts.json"
    out.write_text(json.dumps({"machine": {"cpu": cpu_name()},
                               "command": "python benchmarks/position_contexts.py " + " ".join(args.files),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
