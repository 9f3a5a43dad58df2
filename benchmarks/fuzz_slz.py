"""Structure-aware fuzzing of the .slz reader: mutate a valid file's manifest (a field replaced by a hostile
value, removed, or duplicated into another tensor entry), re-encode it with correct checksums so the
mutation reaches the deep decoder, then read it as `inspect` and `eval` do. Every exception other than
slimzip's own error type is a crash; a read over 5 s is a hang.

    python benchmarks/fuzz_slz.py --inputs 100000 --seed 0

prints inputs, inputs/s, crashes (by exception type and place), hangs and peak memory, and writes JSON
to benchmarks/results/fuzz_slz.json. The crashing inputs are written to --crashes (default
benchmarks/results/fuzz_crashes/) to become corpus files.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import time
import traceback
from collections import Counter
from pathlib import Path

import torch

from slimzip.codec import decode_model, model_table
from slimzip.container import decode_container, encode_container
from slimzip.errors import SlimzipError
from slimzip.inspection import inspect_container

HOSTILE = [None, True, -1, 0, 1, 17, 2**31, 2**63, -2**63, 1e308, -1e308, 10**400, 0.5, "", "x", "float64", "rans",
           "huffman", "fixed", "shared", "raw", "constant", [], [0], [-1], [2**31, 2**31], [1, 0], {}, {"a": 1},
           {"codes": "rans"}, {"codes": "zzz", "index": "rans"}, "a" * 1000]


def seed_files() -> list[bytes]:
    """Valid files to mutate: registry models (named) and a user's model (graph)."""
    from slimzip.codec import encode_model
    from slimzip.deep_compression import CompressConfig
    from slimzip.models import create_model
    from slimzip.sharing import WeightSharer
    from slimzip.unstructured import MagnitudePruner, apply_masks_

    torch.manual_seed(0)
    blobs = []
    for name in ("lenet-5-bn", "lenet-300-100"):
        model = create_model(name)
        masks = MagnitudePruner(sparsity=0.9).fit(model).masks_
        apply_masks_(model, masks)
        layers = WeightSharer(bits_conv=4, bits_fc=3).fit(model, masks).layers_
        for version in (3, 4):  # the compact manifest and the keyed one before it
            blobs.append(encode_model(model, {"name": name, "kwargs": {}}, layers, CompressConfig(), version=version))
    from slimzip.graph import describe, portable

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    graph = describe(model, (1, 8, 8))
    gm = portable(model, graph)
    masks = MagnitudePruner(sparsity=0.5).fit(gm).masks_
    apply_masks_(gm, masks)
    layers = WeightSharer(bits_conv=2, bits_fc=2).fit(gm, masks).layers_
    for version in (3, 4):
        blobs.append(encode_model(gm, {"graph": graph, "plan": {}}, layers, CompressConfig(), version=version))
    return blobs


def _paths(obj, prefix=()):
    """Every (path, value) inside a JSON value."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def mutate(blob: bytes, rng: random.Random) -> bytes:
    container = decode_container(blob)
    manifest = copy.deepcopy({k: v for k, v in container.manifest.items() if k != "sections"})
    sections = list(container.sections)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = [p for p, _ in _paths(manifest) if p]
        path = rng.choice(paths)
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        roll = rng.random()
        if roll < 0.6:
            parent[path[-1]] = copy.deepcopy(rng.choice(HOSTILE))
        elif roll < 0.75 and isinstance(parent, dict):
            del parent[path[-1]]
        elif roll < 0.9 and sections:
            i = rng.randrange(len(sections))
            data = bytearray(sections[i])
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            sections[i] = bytes(data) + (b"\0" if rng.random() < 0.3 else b"")
        elif isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] = parent[path[-1]] + rng.choice([-1, 1, 2**20])
    return encode_container(manifest, sections, version=container.version)


def read_like_the_cli(blob: bytes) -> None:
    """What inspect and eval do with a file: decode the container, the model, and account for its bytes."""
    container = decode_container(blob)
    inspect_container(container, model_table(container, decode_model(container)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crashes", default="benchmarks/results/fuzz_crashes")
    p.add_argument("--out", default="benchmarks/results/fuzz_slz.json")
    args = p.parse_args()
    rng, seeds = random.Random(args.seed), seed_files()
    crashes, hangs, slowest, kept = Counter(), 0, 0.0, {}
    t0 = time.perf_counter()
    for i in range(args.inputs):
        blob = mutate(rng.choice(seeds), rng)
        start = time.perf_counter()
        try:
            read_like_the_cli(blob)
        except SlimzipError:
            pass
        except Exception as e:  # a crash: not slimzip's own error type
            where = traceback.extract_tb(e.__traceback__)[-1]
            key = f"{type(e).__name__} at {Path(where.filename).name}:{where.lineno}"
            crashes[key] += 1
            kept.setdefault(key, blob)
        took = time.perf_counter() - start
        slowest, hangs = max(slowest, took), hangs + (took > 5.0)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"inputs": args.inputs, "seconds": seconds, "inputs_per_second": args.inputs / seconds,
              "crashes": sum(crashes.values()), "crash_kinds": dict(crashes), "hangs_over_5s": hangs,
              "slowest_seconds": slowest, "peak_memory_mb": peak_mb, "seed": args.seed}
    crash_dir = Path(args.crashes)
    for n, (key, blob) in enumerate(sorted(kept.items())):
        crash_dir.mkdir(parents=True, exist_ok=True)
        (crash_dir / f"crash{n:03d}.slz").write_bytes(blob)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'inputs':>10} {'inputs/s':>9} {'crashes':>8} {'hangs':>6} {'slowest s':>10} {'peak MB':>8}")
    print(f"{args.inputs:>10,} {result['inputs_per_second']:>9.0f} {result['crashes']:>8} {hangs:>6} "
          f"{slowest:>10.3f} {peak_mb:>8.0f}")
    for key, n in crashes.most_common():
        print(f"  {n:>6} x {key}")


if __name__ == "__main__":
    main()
