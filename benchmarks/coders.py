"""A yardstick for slimzip's entropy coding: the same quantized levels of each compressed file, coded by
every slimzip coder and, where the ``nncodec`` package is installed, by NNCodec's DeepCABAC (the MPEG NNR
standard's context-adaptive coder), bytes side by side.

For each shared tensor of a .slz file, the streams the file stores before entropy coding (the kept
weights' codebook indices and the gap symbols of their positions) are coded with ``fixed``, ``huffman``,
``rans`` and ``adaptive``; "v4 auto" is the smallest per stream without ``adaptive`` (what .slz version 4
wrote), "v5 auto" the smallest with it (version 5), "+ widths" the same with each tensor's gap-symbol width
chosen by the writer (``--index-bits-* 0``; the codes as "v5 auto"), "v7 file" and "v8 file" the streams of the
file written again as version 7 (the joint stream) and 8 (+ code streams under the context model; what slimzip
writes now): codes, indices and the joint stream's priors and final state. DeepCABAC codes the same
levels as one dense integer tensor per layer (codebook mode: the codebook with a zero inserted, each weight
its signed index from the zero, a pruned weight 0), positions and values at once; its bytes are the
payload of ``deepCABAC.Encoder`` after ``initCtxModels``. Codebooks, small tensors and the manifest are the
same for every coder and are not counted.

nncodec is never a dependency of slimzip (it compiles a C++ extension and asks for torchvision and
opencv): install it beside the CPU torch build in a separate environment for this benchmark only,
``pip install pybind11 && pip install --no-deps --no-build-isolation nncodec``.

Usage: python benchmarks/coders.py [FILE.slz ...] [--out benchmarks/results/coders.json]
writes the JSON and prints the table."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
from pathlib import Path

import numpy as np

from slimzip.codec import decode_model, encode_positions, model_table
from slimzip.coding import CODECS, can_code
from slimzip.container import decode_container, read_container
from slimzip.deploy.stored import Stream, stored_tensors
from slimzip.inspection import inspect_container
from format_versions import rewrites  # benchmarks/format_versions.py
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILES = ("runs/lenet-5-bn.slz", "runs/lv/kd-sub-rec.slz", "runs/l300-bn.slz",
                 "runs/paper_cifar/resnet20-long/step2/frontier.slz")
V4 = ("fixed", "huffman", "rans")  # the coders .slz version 4 may hold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", default=[f for f in DEFAULT_FILES if (ROOT / f).is_file()])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "coders.json")
    args = parser.parse_args()
    cabac = _deepcabac()
    rows = {}
    for file in args.files:
        t0 = time.perf_counter()
        rows[file] = _file_row(Path(file), cabac)
        rows[file]["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"{'file':<52} {'model':<14} {'kept':>7} {'v4 auto':>8} {'v5 auto':>8} {'saved':>6} {'+ widths':>8} "
          f"{'v7 file':>8} {'v8 file':>8} {'DeepCABAC':>9}")
    for file, r in rows.items():
        cab = f"{r['deepcabac']:>9,}" if r["deepcabac"] is not None else f"{'absent':>9}"
        print(f"{file[-52:]:<52} {r['model']:<14} {r['kept']:>7,} {r['v4_auto']:>8,} {r['v5_auto']:>8,} "
              f"{100 * (1 - r['v5_auto'] / r['v4_auto']):>5.1f}% {r['v5_width']:>8,} {r['v7_file']:>8,} "
              f"{r['v8_file']:>8,} {cab}")
    result = {"machine": {"cpu": cpu_name()}, "command": "python benchmarks/coders.py " + " ".join(args.files) +
              f" --out {args.out}",
              "deepcabac": f"nncodec {cabac[1]}" if cabac else None, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _file_row(path: Path, cabac) -> dict:
    container = read_container(path)
    model = decode_model(container)
    streams = {name: t for name, t in stored_tensors(container, model).items() if isinstance(t, Stream)}
    tensors = {name: _tensor_row(s, cabac) for name, s in streams.items()}
    total = {key: sum(t[key] for t in tensors.values()) for key in ("v4_auto", "v5_auto", "v5_width")}
    return {"model": container.manifest.get("model", {}).get("name", "graph"), "file_bytes": container.file_bytes,
            "kept": sum(s.kept for s in streams.values()), **total, **_written(path),
            "deepcabac": sum(t["deepcabac"] for t in tensors.values()) if cabac else None, "tensors": tensors}


def _written(path: Path) -> dict:
    """The streams' bytes in the file written again as version 7 (the joint stream) and 8 (+ context members):
    codes, indices and the joint stream's priors and final state, as ``inspect`` counts them."""
    write = rewrites(path)
    out = {}
    for version in (7, 8):
        container = decode_container(write(version, 8))
        parts = inspect_container(container, model_table(container, decode_model(container)))["components"]
        out[f"v{version}_file"] = parts["codes"] + parts["indices"] + parts.get("stream", 0)
    return out


def _tensor_row(s: Stream, cabac) -> dict:
    """Bytes of one tensor's streams by each coder, the smallest per stream with and without adaptive."""
    alphabet = len(s.codebook)
    coded = {kind: {name: len(codec.encode(symbols, size)) for name, codec in CODECS.items()
                    if can_code(name, len(symbols), size)}
             for kind, symbols, size in (("codes", s.codes, alphabet), ("index", s.gaps, 2 ** s.index_bits))}
    return {"kept": s.kept, "numel": int(np.prod(s.shape)), "index_bits": s.index_bits, "centroids": alphabet,
            **{f"{kind}_{name}": n for kind, by in coded.items() for name, n in by.items()},
            "v4_auto": sum(min(by[n] for n in V4) for by in coded.values()),
            "v5_auto": sum(min(by.values()) for by in coded.values()),
            "v5_width": min(coded["codes"].values()) + len(encode_positions(s.positions(), 0, "auto")[2][1]),
            "deepcabac": _cabac_bytes(s, cabac[0]) if cabac else None}


def _levels(s: Stream) -> tuple[np.ndarray, int, int]:
    """The tensor as NNR codebook levels: the codebook sorted with a zero inserted, each kept weight its
    index minus the zero's, every pruned weight 0. Returns (levels, codebook size, zero offset)."""
    order = np.argsort(s.codebook, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    zero = int(np.searchsorted(s.codebook[order], 0.0))  # the zero sits before the first positive centroid
    levels = np.zeros(int(np.prod(s.shape)), dtype=np.int32)
    levels[s.positions()] = np.where(rank[s.codes] >= zero, rank[s.codes] + 1, rank[s.codes]) - zero
    return levels.reshape(s.shape[0], -1), len(order) + 1, zero


def _cabac_bytes(s: Stream, deepcabac) -> int:
    levels, size, zero = _levels(s)
    from nncodec.extensions.deepCABAC import HdspMode

    encoder = deepcabac.Encoder()
    encoder.initCtxModels(10, 0)  # cabac_unary_length_minus1 + 1 (NNCodec's default 10), no parameter optimisation
    encoder.encodeLayer(levels, 0, 0, 1, 0, 0, np.zeros(levels.shape[0], dtype=np.int32), HdspMode.AlwaysOff,
                        np.zeros(2, dtype=np.int8), size, zero)
    stream = encoder.finish().tobytes()
    decoder = deepcabac.Decoder()  # the yardstick's bytes decode back to the same levels
    decoder.setStream(np.frombuffer(stream, dtype=np.uint8))
    decoder.initCtxModels(10)
    back = np.zeros_like(levels)
    decoder.decodeLayer(back, 0, 0, 1, 0, HdspMode.AlwaysOff, np.zeros(2, dtype=np.int8), size, zero)
    if not np.array_equal(back, levels):
        raise AssertionError("DeepCABAC did not decode the levels it coded")
    return len(stream)


def _deepcabac():
    try:
        from nncodec.extensions import deepCABAC
    except ImportError:
        print("nncodec is not installed here: the DeepCABAC column stays empty (see the module's docstring)")
        return None
    return deepCABAC, importlib.metadata.version("nncodec")


if __name__ == "__main__":
    main()
