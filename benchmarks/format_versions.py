"""What each .slz format version costs for the same compressed model: every file is decoded and written
again as version 4, 5, 6 and 7 (the same codebooks, codes and kept positions; each version's coders, the
writer choosing per stream and per tensor as it does), then read back and scored on the test split.

Version 5 adds the table-free adaptive coder, version 6 stores channel plans as counts and the small
tensors' lo and step in float16, version 7 codes the streams in one joint stream. A file's small tensors are quantized again from its decoded values
(uint8 files) and its BatchNorm folded again, so the test accuracy of each row is measured, not assumed.

Usage: python benchmarks/format_versions.py FILE.slz [FILE.slz ...] [--raw-bits 8,5,4]
       [--out benchmarks/results/format_versions.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Callable

import torch

from slimzip.api.files import inspect_file
from slimzip.api.training import evaluate_path
from slimzip.codec import recoder
from slimzip.config import CompressConfig
from slimzip.container import VERSION, read_container
from slimzip.measure import dense_fp32_bytes
from slimzip.models import create_model
from machine import cpu_name  # benchmarks/machine.py

VERSIONS = tuple(range(4, VERSION + 1))


def rewrites(path: Path) -> Callable[[int, int], bytes]:
    """The file decoded once; ``write(version, raw_bits)``: its model and shared layers written as ``version``
    (small tensors in ``raw_bits``-bit steps when the file stores them in steps)."""
    container = read_container(path)
    uint8 = any(row[0] in ("q", "p") for row in container.manifest["tensors"] if isinstance(row, list))
    write = recoder(container)
    return lambda version, raw_bits: write(CompressConfig(coder="auto", raw_dtype="uint8" if uint8 else "float16",
                                                          raw_bits=raw_bits), version)


def row(path: Path, write: Callable[[int, int], bytes], version: int, work: Path, raw_bits: int = 8) -> dict:
    out = work / f"{path.stem}-v{version}-{raw_bits}.slz"
    out.write_bytes(write(version, raw_bits))
    info = inspect_file(out)
    acc = evaluate_path(out)["accuracy"]
    spec = info["model"]  # the ratio is over the full-width model's dense fp32 bytes, as compress reports it
    dense = dense_fp32_bytes(create_model(spec["name"], **spec.get("kwargs", {}))) if "name" in spec else \
        sum(t["weights"] for t in info["tensors"]) * 4
    return {"model": info["architecture"], "version": version, "raw_bits": raw_bits, "file_bytes": info["file_bytes"],
            "compression_ratio": round(dense / info["file_bytes"], 1), "test_accuracy": round(acc, 4),
            "components": info["components"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--raw-bits", default="8", help="comma-separated small-tensor step bits to try at the "
                        "newest version (uint8 files; decoded small tensors quantized again, the rows scored)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/format_versions.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.files:
            write = rewrites(path)
            rows += [{"file": str(path), **row(path, write, v, Path(tmp))} for v in VERSIONS]
            rows += [{"file": str(path), **row(path, write, VERSION, Path(tmp), int(b))}
                     for b in args.raw_bits.split(",") if int(b) != 8]
    print(f"{'file':<32} {'version':>7} {'raw bits':>8} {'bytes':>8} {'ratio':>8} {'test acc':>8}  components")
    for r in rows:
        parts = ", ".join(f"{k} {v:,}" for k, v in r["components"].items())
        print(f"{r['file'][-32:]:<32} {r['version']:>7} {r['raw_bits']:>8} {r['file_bytes']:>8,} {r['compression_ratio']:>7}x "
              f"{100 * r['test_accuracy']:>7.2f}%  {parts}")
    command = "python benchmarks/format_versions.py " + " ".join(map(str, args.files)) + \
        (f" --raw-bits {args.raw_bits}" if args.raw_bits != "8" else "")
    args.out.write_text(json.dumps({"machine": {"cpu": cpu_name()}, "command": command, "rows": rows}, indent=1) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
