"""Structure-aware fuzzing of the .slz reader: mutate a valid file's manifest (a field replaced by a hostile
value, removed, or duplicated into another tensor entry), re-encode it with correct checksums so the
mutation reaches the deep decoder; a share of the inputs instead get graph-aware mutations: a layer argument,
a node's arguments or target, the input shape), then read it as each command does: `inspect`, `slimzip.load`,
`eval` (the decoded model on a batch) and, for the first inputs that load and run, `export` (ONNX checked
by onnxruntime). Every exception other than slimzip's own error type is a crash; a read over 5 s is a hang.

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

from slimzip.container import decode_container, encode_container
from slimzip.errors import SlimzipError

HOSTILE = [None, True, -1, 0, 1, 17, 2**31, 2**63, -2**63, 1e308, -1e308, 10**400, 0.5, "", "x", "float64", "rans",
           "huffman", "fixed", "shared", "raw", "constant", "joint", "context", [], [0], [-1], [2**31, 2**31], [1, 0], {},
           {"a": 1}, {"codes": "rans"}, {"codes": "zzz", "index": "rans"}, "a" * 1000]


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
    from slimzip.structured import ChannelPruner

    model = create_model("lenet-5-bn").eval()  # version 6 and 7: a plan as counts, small tensors packed in 5 bits
    pruner = ChannelPruner(importance="l1", channel_ratio=0.5, scope="layer").fit(model, (1, 28, 28))
    model = pruner.transform(model, (1, 28, 28))
    masks = MagnitudePruner(sparsity=0.8).fit(model).masks_
    apply_masks_(model, masks)
    layers = WeightSharer(bits_conv=3, bits_fc=2).fit(model, masks).layers_
    for version, cfg in ((6, CompressConfig(raw_dtype="uint8", raw_bits=5)),  # version 7: the joint stream, and
                         (7, CompressConfig(raw_dtype="uint8", raw_bits=5)), (7, CompressConfig(coder="rans"))):  # a table
        blobs.append(encode_model(model, {"name": "lenet-5-bn", "kwargs": {}, "plan": pruner.plan_}, layers, cfg,
                                  version=version))
    from slimzip.graph import describe, portable

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    graph = describe(model, (1, 8, 8))
    gm = portable(model, graph)
    masks = MagnitudePruner(sparsity=0.5).fit(gm).masks_
    apply_masks_(gm, masks)
    layers = WeightSharer(bits_conv=2, bits_fc=2).fit(gm, masks).layers_
    for version in (3, 4, 6, 7):
        blobs.append(encode_model(gm, {"graph": graph, "plan": {}}, layers, CompressConfig(raw_dtype="uint8", raw_bits=4)
                                  if version >= 6 else CompressConfig(), version=version))
    return blobs + [_context_seed()]


def _context_seed() -> bytes:
    """Version 8: a LeNet-300-100 whose weights follow their row neighbour, so that its code streams are context
    members of the joint stream."""
    from slimzip.codec import encode_model
    from slimzip.deep_compression import CompressConfig
    from slimzip.models import create_model
    from slimzip.sharing import WeightSharer
    from slimzip.unstructured import MagnitudePruner, apply_masks_

    model = create_model("lenet-300-100")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(torch.cumsum(torch.randn_like(m.weight), dim=-1) / (3 * m.weight.shape[-1]))
    masks = MagnitudePruner(sparsity=0.9).fit(model).masks_
    apply_masks_(model, masks)
    layers = WeightSharer(bits_conv=4, bits_fc=3).fit(model, masks).layers_
    return encode_model(model, {"name": "lenet-300-100", "kwargs": {}}, layers, CompressConfig(), version=8)


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
    manifest = copy.deepcopy(container.manifest)
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


GRAPH_VALUES = [0, -1, 1, 2, 3, 64, 2**24, 2**24 + 1, 0.5, None, True, "same", {"t": [0, 0]}, {"t": [99, 99]},
                {"t": [1]}, [], {"n": 0}, {"n": 99}]


def mutate_graph(blob: bytes, rng: random.Random) -> bytes | None:
    """A mutation that knows the graph: a layer argument, a node's argument or target, or a node moved,
    each to a value a careless writer or an attacker might put there (None: the file has no graph)."""
    container = decode_container(blob)
    manifest = copy.deepcopy(container.manifest)
    graph = manifest.get("model", {}).get("graph") if isinstance(manifest.get("model"), dict) else None
    if not isinstance(graph, dict):
        return None
    nodes, layers = graph["nodes"], graph["layers"]
    roll = rng.random()
    if roll < 0.45 and layers:
        layer = layers[rng.choice(sorted(layers))]
        args = layer["args"]
        key = rng.choice(sorted(args) + ["kernel_size", "stride", "padding", "groups", "inplace", "bogus"])
        args[key] = copy.deepcopy(rng.choice(GRAPH_VALUES))
    elif roll < 0.7 and len(nodes) > 2:
        node = nodes[rng.randrange(1, len(nodes))]
        node["args"] = [copy.deepcopy(rng.choice(GRAPH_VALUES)) if rng.random() < 0.5 else a for a in node["args"]] \
            or [copy.deepcopy(rng.choice(GRAPH_VALUES))]
    elif roll < 0.85 and len(nodes) > 2:
        node = nodes[rng.randrange(1, len(nodes) - 1)]
        node["target"] = rng.choice(["torch.flatten", "operator.add", "torch.cat", "operator.getitem", "view",
                                     "builtins.getattr", "torch.nn.functional.conv2d", sorted(layers or ["x"])[0]])
        node["op"] = {"view": "call_method"}.get(node["target"], "call_module" if node["target"] in layers
                                                 else "call_function")
    else:
        graph["input_shape"] = copy.deepcopy(rng.choice([[1, 8, 8], [1, 2, 2], [4, 8, 8], [1, 8], [0], [1, 1 << 13,
                                                                                               1 << 13]]))
    return encode_container(manifest, list(container.sections), version=container.version)


def _input_shape(model: torch.nn.Module, manifest: dict) -> tuple[int, ...]:
    spec = manifest.get("model", {})
    if "graph" in spec:
        return tuple(spec["graph"]["input_shape"])
    from slimzip.structured.plans import registry_input_shape

    return registry_input_shape(spec["name"])


ENTRY_POINTS = ("inspect", "load", "eval", "export")


def read_like_the_cli(path: Path, export: bool) -> dict[str, str]:
    """What each command does with a file: ``inspect``, ``slimzip.load``, ``eval`` (the decoded model on a
    batch of its input shape) and, with ``export``, the ONNX export checked by onnxruntime. Returns each
    entry point's outcome: ok, refused (slimzip's own error) or the crash."""
    from slimzip.api.files import inspect_file
    from slimzip.deploy.onnx import check_onnx, to_onnx
    from slimzip.reader import load

    outcome: dict[str, str] = {}

    def run(name: str, fn):
        try:
            value = fn()
        except SlimzipError:
            outcome[name] = "refused"
            return None
        except Exception as e:  # a crash: not slimzip's own error type
            where = traceback.extract_tb(e.__traceback__)[-1]
            outcome[name] = f"{type(e).__name__} at {Path(where.filename).name}:{where.lineno}"
            return None
        outcome[name] = "ok"
        return value

    run("inspect", lambda: inspect_file(path))
    model = run("load", lambda: load(path))
    if model is None:
        return outcome
    shape = _input_shape(model, decode_container(path.read_bytes()).manifest)
    batch = torch.randn(2, *shape)
    with torch.no_grad():
        run("eval", lambda: model.eval()(batch))
    if export and outcome["eval"] == "ok":
        start = time.perf_counter()
        run("export", lambda: check_onnx(model, to_onnx(model, shape), batch))
        outcome["export_seconds"] = time.perf_counter() - start  # type: ignore[assignment]
    return outcome


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--graph-share", type=float, default=0.3, help="share of inputs mutated by the graph-aware mutator")
    p.add_argument("--exports", type=int, default=300, help="export (ONNX + onnxruntime) at most this many of the "
                                                            "inputs that load and run")
    p.add_argument("--crashes", default="benchmarks/results/fuzz_crashes")
    p.add_argument("--out", default="benchmarks/results/fuzz_slz.json")
    args = p.parse_args()
    import tempfile

    rng, seeds = random.Random(args.seed), seed_files()
    stats = {e: Counter() for e in ENTRY_POINTS}
    crashes, kept, hangs, slowest, exported = Counter(), {}, 0, 0.0, 0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.slz"
        for i in range(args.inputs):
            seed = rng.choice(seeds)
            blob = (mutate_graph(seed, rng) if rng.random() < args.graph_share else None) or mutate(seed, rng)
            path.write_bytes(blob)
            start = time.perf_counter()
            outcome = read_like_the_cli(path, exported < args.exports)
            exported += "export" in outcome
            took = time.perf_counter() - start - outcome.pop("export_seconds", 0.0)  # a reader's time
            slowest, hangs = max(slowest, took), hangs + (took > 5.0)
            for entry, verdict in outcome.items():
                stats[entry]["inputs"] += 1
                stats[entry][verdict if verdict in ("ok", "refused") else "crashes"] += 1
                if verdict not in ("ok", "refused"):
                    crashes[f"{entry}: {verdict}"] += 1
                    kept.setdefault(f"{entry}: {verdict}", blob)
            if (i + 1) % 10000 == 0 or i + 1 == args.inputs:  # resumable reading: the JSON so far
                print(f"{i + 1:,} inputs, {sum(crashes.values())} crashes, {time.perf_counter() - t0:.0f} s", flush=True)
                _write(args, i + 1, time.perf_counter() - t0, crashes, kept, hangs, slowest, stats)
    _report(json.loads(Path(args.out).read_text()), stats, crashes)


def _write(args, inputs: int, seconds: float, crashes: Counter, kept: dict, hangs: int, slowest: float,
           stats: dict) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"inputs": inputs, "seconds": seconds, "inputs_per_second": inputs / seconds,
              "crashes": sum(crashes.values()), "crash_kinds": dict(crashes), "hangs_over_5s": hangs,
              "slowest_seconds": slowest, "peak_memory_mb": peak_mb, "seed": args.seed,
              "graph_share": args.graph_share, "per_entry_point": {e: dict(c) for e, c in stats.items()}}
    crash_dir = Path(args.crashes)
    for n, (key, blob) in enumerate(sorted(kept.items())):
        crash_dir.mkdir(parents=True, exist_ok=True)
        (crash_dir / f"crash{n:03d}.slz").write_bytes(blob)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


def _report(result: dict, stats: dict, crashes: Counter) -> None:
    print(f"{'entry':>8} {'inputs':>8} {'ok':>8} {'refused':>8} {'crashes':>8}")
    for e, c in stats.items():
        print(f"{e:>8} {c['inputs']:>8,} {c['ok']:>8,} {c['refused']:>8,} {c['crashes']:>8}")
    print(f"{result['inputs']:,} inputs, {result['inputs_per_second']:.0f}/s, {result['hangs_over_5s']} hangs over "
          f"5 s (slowest {result['slowest_seconds']:.3f} s, export excluded), peak memory "
          f"{result['peak_memory_mb']:.0f} MB")
    for key, n in crashes.most_common():
        print(f"  {n:>6} x {key}")


if __name__ == "__main__":
    main()
