"""The .slz model codec: a (narrowed, weight-shared) model to the manifest and sections of a .slz
container, and back. Registry models are named; any other model is stored as its graph (``graph.py``).

The compressed model is *defined* as what the file decodes to: accuracy is always measured on a model
decoded from the bytes, so nothing the file cannot hold (fp32 biases stored as fp16, say) can flatter it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Callable, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from . import contexts
from .coding import (ADAPTIVE_WORK, CODECS, FormatError, adaptive_cost, can_code, entropy_bits, fixed_bytes,
                     gaps_decode, gaps_encode)
from .compact import (AFFINE, CONTEXT, HELD, JOINT, MAX_CENTROIDS, SECTIONS, STREAMS, compact_layer, compact_manifest,
                      context_streams, entry_sections, expand_rows, has_joint_stream, implied, joint_streams, plan_form)
from .container import (CONTEXT_CODES, FIXED_COSTS, IMPLIED_LENGTHS, JOINT_STREAM, VERSION, Container, ContainerError,
                        encode_container, in_effect)
from .joint import JointReader, context_work, joint_encode, joint_work
from .errors import SlimzipError
from .graph import GraphError, build as build_graph, traced
from .sharing import FLOAT16_MAX, SharedLayer
from .state import load_state

FORMAT = "slimzip-model"
RAW_DTYPES = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16)}
MAX_CLASSES = 100_000  # a manifest asking for more is hostile, not a model
FLOAT32_OVERFLOW = 3.4028235677973366e38  # the largest float32 plus half an ulp: from here a value rounds to infinity


class EncodeSettings(Protocol):
    """What the encoder reads of a config (a ``deep_compression.CompressConfig``; a dataclass, whose
    fields the manifest records)."""

    fold_bn: bool
    coder: str
    raw_dtype: str
    raw_bits: int
    index_bits_conv: int
    index_bits_fc: int


ENCODINGS = tuple(SECTIONS)
SINCE = {"constant": 2, "graph": 3, "compact": 4, "quantized": 4, "adaptive": 5,
         "packed": FIXED_COSTS, "joint": JOINT_STREAM, "context": CONTEXT_CODES}  # the version that introduced it


# --- encoding ------------------------------------------------------------------------------------

def _index_bits(module: nn.Module, cfg: EncodeSettings) -> int:
    return cfg.index_bits_conv if isinstance(module, nn.Conv2d) else cfg.index_bits_fc


class Stream(NamedTuple):
    """A coded stream: its coder, its bytes (none for a stream in the joint stream) and what it costs the
    file in bytes (its bytes and its section's entry in the table; in the joint stream, its information)."""

    coder: str
    data: bytes
    cost: float


SECTION_COST = 2  # bytes a section's entry in the table costs (a length and a comma), beside its data


def encode_stream(symbols: np.ndarray, alphabet: int, coder: str, version: int = VERSION,
                  joint: bool = False) -> Stream:
    """Code one stream with ``coder``, or with whichever coder gives the fewest bytes ('auto') among those a
    file of format ``version`` may hold and that can code this stream (``adaptive`` bounds its work);
    ``joint``: the joint stream (version 7) is one of them, whose cost is the stream's information."""
    usable = [n for n in CODECS if SINCE.get(n, 1) <= version and can_code(n, len(symbols), alphabet)]
    if coder != "auto" and coder not in usable:
        raise SlimzipError(f"coder {coder!r} cannot code this file ({len(symbols):,} symbols in [0, {alphabet}) in "
                           f"a version-{version} file); use --coder auto")
    names = usable if coder == "auto" else [coder]
    coded = [Stream(n, data, len(data) + SECTION_COST) for n in names for data in [CODECS[n].encode(symbols, alphabet)]]
    if joint and coder == "auto" and version >= SINCE[JOINT] and can_code("adaptive", len(symbols), alphabet):
        coded.append(Stream(JOINT, b"", adaptive_cost(symbols, alphabet)[0] / 8))
    return min(coded, key=lambda c: c.cost)


INDEX_WIDTHS = range(2, 13)  # the gap symbol widths (index bits) the writer weighs for a tensor
INDEX_WIDTHS_CODED = 3  # the widths its estimate ranks first, each coded before the descent


def encode_positions(positions: np.ndarray, index_bits: int, coder: str, version: int = VERSION,
                     joint: bool = False) -> tuple[int, np.ndarray, Stream]:
    """A tensor's kept (sorted, flat) positions as gap symbols of ``index_bits`` bits, coded; 0: the width
    whose stream costs least, near enough: the widths ranked by an estimate of their stream (the symbols'
    order-0 entropy, plus what an adaptive model pays to learn each distinct symbol), the first few coded,
    then a descent to either side of the cheapest while the cost falls.
    Returns (width, symbols, stream)."""
    if index_bits:
        gaps = gaps_encode(positions, index_bits)
        return index_bits, gaps, encode_stream(gaps, 2 ** index_bits, coder, version, joint)
    symbols = {width: gaps_encode(positions, width) for width in INDEX_WIDTHS}
    tried: dict[int, tuple[int, np.ndarray, Stream]] = {}

    def coded(width: int) -> tuple[int, np.ndarray, Stream]:
        if width not in tried:
            tried[width] = (width, symbols[width], encode_stream(symbols[width], 2 ** width, coder, version, joint))
        return tried[width]

    def estimate(width: int) -> float:
        gaps = symbols[width]
        return len(gaps) * entropy_bits(gaps) + np.count_nonzero(np.bincount(gaps)) * (1 + np.log2(len(gaps) + 1))

    def cost(c: tuple[int, np.ndarray, Stream]) -> float:
        return c[2].cost
    best = min((coded(w) for w in sorted(INDEX_WIDTHS, key=estimate)[:INDEX_WIDTHS_CODED]), key=cost)
    for step in (-1, 1):
        width = best[0] + step
        while width in INDEX_WIDTHS and cost(coded(width)) < cost(best):
            best, width = coded(width), width + step
    return best


def _bias_feeding(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """BatchNorm fqn -> the conv / linear layer whose biased output only that BatchNorm reads (its bias
    can move into the BatchNorm's shift). Empty when the model cannot be traced."""
    try:
        from .structured import dependency_graph  # torch-pruning, loaded where a model is written

        graph = dependency_graph(model, torch.zeros(1, *input_shape))
    except SlimzipError:
        return {}
    names = {m: n for n, m in model.named_modules()}
    pairs = {}
    for module, node in graph.module2node.items():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and len(node.inputs) == 1:
            src = node.inputs[0]
            if isinstance(src.module, (nn.Conv2d, nn.Linear)) and src.module.bias is not None and \
                    len(src.outputs) == 1 and src.module in names:
                pairs[names[module]] = names[src.module]
    return pairs


def fold_batchnorm(model: nn.Module, input_shape: tuple[int, ...],
                   keep: frozenset[str] = frozenset()) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The model's state with every BatchNorm folded, for storage: running mean 0 and variance 1 become
    constants, weight and bias the scale and shift that give the same eval-mode output, and a conv /
    linear bias read only by a BatchNorm moves into its shift (a constant 0 left behind). Returns the
    state and ``{tensor name: constant value}``; tensors named in ``keep`` (coded elsewhere) are left as
    they are. Train-mode behaviour is not kept (batch statistics)."""
    state = {k: v.detach().cpu().float().clone() for k, v in model.state_dict().items()}
    constants: dict[str, float] = {}
    feeding = _bias_feeding(model, input_shape)
    for name, bn in model.named_modules():
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or not (bn.affine and bn.track_running_stats):
            continue
        w, b = f"{name}.weight", f"{name}.bias"
        if w in keep or b in keep:
            continue
        scale = state[w] / torch.sqrt(state[f"{name}.running_var"] + bn.eps)
        shift = state[b] - state[f"{name}.running_mean"] * scale
        if name in feeding and f"{feeding[name]}.bias" not in keep:
            bias = f"{feeding[name]}.bias"
            shift, constants[bias] = shift + scale * state[bias], 0.0
        state[w], state[b] = scale * math.sqrt(1.0 + bn.eps), shift  # decoded variance 1: (x - 0) / sqrt(1 + eps)
        constants[f"{name}.running_mean"], constants[f"{name}.running_var"] = 0.0, 1.0
    return state, constants


def spec_input_shape(spec: dict) -> tuple[int, ...]:
    """The input shape of the model a manifest's ``model`` entry describes (registry name or graph)."""
    if "graph" in spec:
        return tuple(spec["graph"]["input_shape"])
    if "input_shape" in spec:  # a user's model that could not be traced: the file holds no graph
        return tuple(spec["input_shape"])
    from .structured import registry_input_shape

    return registry_input_shape(spec["name"])


def file_model(model: nn.Module, spec: dict | None, plan: dict, shape: tuple[int, ...]) -> tuple[nn.Module, dict]:
    """The model to encode and the manifest's ``model`` entry: a registry spec with the plan composed in;
    for a user's model its graph (and the model rebuilt from it, whose tensors the graph names), or, when
    it cannot be traced, the plan and input shape only (the file then loads into the user's class)."""
    if spec is not None:
        from .structured import compose_plans

        full = compose_plans(spec.get("plan"), plan)
        return model, ({**spec, "plan": full} if full else {k: v for k, v in spec.items() if k != "plan"})
    try:
        graph, rebuilt = traced(model, shape)
    except GraphError as e:
        warnings.warn(f"the file will not hold the model's architecture ({e}); load it with "
                      "slimzip.load(path, model=YourModel())", stacklevel=2)
        return model, {"plan": plan, "input_shape": list(shape)}
    return rebuilt, {"graph": graph, "plan": plan}


def self_describing(manifest: dict) -> bool:
    """Whether a file rebuilds its model alone (a registry name or a graph), without the user's class."""
    spec = manifest.get("model")
    return isinstance(spec, dict) and ("name" in spec or "graph" in spec)


def encode_model(model: nn.Module, spec: dict, layers: dict[str, SharedLayer], cfg: EncodeSettings,
                 extra: dict | None = None, version: int = VERSION) -> bytes:
    """Serialise a shared model into .slz bytes. ``spec``: ``{"name", "kwargs", "plan"?}`` of the registry,
    or ``{"graph", "plan"?}`` (``graph.describe``; ``model`` then is ``graph.portable`` of it, so that its
    tensors are the ones the graph rebuilds). Written as ``version`` (4: the compact manifest, for a
    model the file rebuilds alone; a file that cannot rebuild its model keeps version 3's named entries)."""
    compact = version >= SINCE["compact"] and ("name" in spec or "graph" in spec) and \
        all(bool((layer.centroids.abs() <= FLOAT16_MAX).all()) for layer in layers.values())
    version = version if compact else min(version, 3)
    if compact:
        layers = {k: compact_layer(v) for k, v in layers.items()}
    sections: list[bytes] = []
    tensors = []
    modules = dict(model.named_modules())

    def add(data: bytes) -> int:
        sections.append(data)
        return len(sections) - 1

    state, constants = model.state_dict(), {}
    if cfg.fold_bn:
        state, constants = fold_batchnorm(model, spec_input_shape(spec), frozenset(layers))
    joint = version >= SINCE[JOINT] and compact and cfg.coder == "auto"
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue  # a training counter; inference never reads it
        if name in constants:
            tensors.append({"name": name, "shape": list(value.shape), "encoding": "constant",
                            "value": constants[name]})
        elif name in layers:
            index_bits = _index_bits(modules[name.rsplit(".", 1)[0]], cfg)
            tensors.append(_shared_entry(name, value.shape, layers[name], index_bits, cfg.coder, compact, version,
                                         joint, add))
        else:
            fields, data = _small_tensor(value.detach().cpu().float().numpy(), cfg.raw_dtype, cfg.raw_bits, compact,
                                         version)
            tensors.append({"name": name, "shape": list(value.shape), **fields, "data": add(data)})
    manifest = {"format": FORMAT, "model": spec, "config": dataclasses.asdict(cfg), "tensors": tensors,
                **(extra or {})}
    if compact:
        return encode_container(*compact_manifest(manifest, sections, version, _joint_section(tensors, add)),
                                version=version)
    return encode_container(manifest, sections, version=version)


def _shared_entry(name: str, shape: torch.Size, layer: SharedLayer, index_bits: int, coder: str, compact: bool,
                  version: int, joint: bool, add: Callable[[bytes], int]) -> dict:
    """A shared tensor's keyed entry, its codebook and coded streams added as sections (a stream held in the
    joint stream keeps its symbols in the entry, for ``_joint_section``)."""
    positions = np.flatnonzero(layer.mask.numpy().reshape(-1))
    index_bits, gaps, index = encode_positions(positions, index_bits, coder, version, joint)
    codes = layer.codes.numpy()
    alphabet = len(layer.centroids) if compact else 2 ** layer.bits
    streams = {"codes": (encode_stream(codes, alphabet, coder, version, joint), codes, alphabet),
               "index": (index, gaps, 2 ** index_bits)}
    if joint and version >= SINCE[CONTEXT] and contexts.fits(len(codes), alphabet):
        streams["codes"] = _context_choice(streams["codes"], positions, shape, layer.centroids.numpy())
    size = {"centroids": alphabet} if compact else {"bits": layer.bits}
    entry = {"name": name, "shape": list(shape), "encoding": "shared", **size, "index_bits": index_bits,
             "coders": {k: v[0].coder for k, v in streams.items()}, "nnz": len(codes), "gap_symbols": len(gaps),
             "codebook": add(layer.centroids.numpy().astype("<f2" if compact else "<f4").tobytes()),
             "code_entropy": round(entropy_bits(codes), 4), "index_entropy": round(entropy_bits(gaps), 4)}
    for key, (stream, *held) in streams.items():
        if stream.coder in HELD:
            entry.setdefault("symbols", {})[key] = tuple(held)
        else:
            entry[key] = add(stream.data)
    return entry


def _context_choice(best: tuple, positions: np.ndarray, shape: torch.Size, codebook: np.ndarray) -> tuple:
    """A code stream's ``(stream, codes, alphabet)`` as a context member of the joint stream when its information
    under the context model is less than ``best``'s cost (``best`` kept beside it: the writer falls back to it
    when the file's context streams pass their bounds)."""
    stream, codes, alphabet = best
    plan = contexts.plan(positions, tuple(shape), codebook)
    bits, _ = contexts.cost(codes, alphabet, plan)
    if bits / 8 < stream.cost and plan.steps <= contexts.CONTEXT_STEPS:
        return Stream(CONTEXT, b"", bits / 8), codes, alphabet, plan, stream
    return best


def _joint_section(tensors: list[dict], add: Callable[[bytes], int]) -> bytes | None:
    """The joint stream of a version-7 file: its adaptive members in row order (names sorted), codes first, while
    their work fits ``ADAPTIVE_WORK`` (a stream past it is coded alone, adaptively, in its own section), then its
    context members (version 8) while theirs fits the context bounds (a stream past them takes the coding it had
    before the context model); None when no stream is held in it. Removes the symbols ``_shared_entry`` left in
    the entries."""
    rows = sorted(tensors, key=lambda e: e["name"])
    members = _context_members(rows, add)
    streams: list[tuple[np.ndarray, int]] = []
    work = 0
    for e, key in joint_streams(rows):
        symbols, alphabet = e["symbols"][key]
        if work + joint_work([(len(symbols), alphabet)]) <= ADAPTIVE_WORK:
            streams.append((symbols, alphabet))
            work += joint_work([(len(symbols), alphabet)])
        else:
            e["coders"][key], e[key] = "adaptive", add(CODECS["adaptive"].encode(symbols, alphabet))
    for e in tensors:
        e.pop("symbols", None)
    return joint_encode(streams, members) if streams or members else None


def _context_members(rows: list[dict], add: Callable[[bytes], int]) -> list[tuple]:
    """The context members ``(codes, alphabet, plan)`` of the joint stream, in row order, while their work and
    steps fit; a code stream past them goes back to its coding before the context model."""
    members: list[tuple] = []
    work = steps = 0
    for e in context_streams(rows):
        codes, alphabet, plan, before = e["symbols"]["codes"]
        if work + context_work([(len(codes), alphabet)]) <= contexts.CONTEXT_WORK and \
                steps + plan.steps <= contexts.CONTEXT_STEPS:
            members.append((codes, alphabet, plan))
            work, steps = work + context_work([(len(codes), alphabet)]), steps + plan.steps
        elif before.coder == JOINT:
            e["coders"]["codes"], e["symbols"]["codes"] = JOINT, (codes, alphabet)
        else:
            e["coders"]["codes"], e["codes"] = before.coder, add(before.data)
    return members


def recoder(container: Container) -> Callable[..., bytes]:
    """A file that rebuilds its model alone, decoded once; the returned ``write(cfg, version=VERSION)`` writes
    it again with ``cfg``'s coding as ``version``: the same architecture, codebooks, codes and kept positions,
    small tensors coded again from their decoded values."""
    model = decode_model(container)
    table = model_table(container, model)
    layers = {e["name"]: decode_shared(container, e, e["shape"]) for e in table if e["encoding"] == "shared"}
    spec = dict(container.manifest["model"])
    if "plan" in spec and container.version >= SINCE["compact"]:
        spec["plan"] = plan_form(container.version)[1](spec["plan"])
    extra = {k: v for k, v in container.manifest.items() if k in ("dataset", "data")}

    def write(cfg: EncodeSettings, version: int = VERSION) -> bytes:
        return encode_model(model, spec, layers, cfg, extra, version=version)
    return write


# --- decoding ------------------------------------------------------------------------------------

NO_ARCHITECTURE = ("this file does not store its model's architecture (the model could not be traced to a graph "
                   "when it was written): load it in Python with slimzip.load(path, model=YourModel()), as trained")


def check_model_spec(manifest: dict, container_version: int, with_model: bool = False) -> dict:
    """The manifest's ``model`` entry, if it is one a reader can act on: a registry name or a graph (or,
    with the user's own class given, a plan alone; only in a version-3 file, whose tensor rows carry their
    names and shapes). Refuses the rest in one line."""
    spec = manifest.get("model")
    if manifest.get("format") != FORMAT:
        raise ContainerError("manifest does not describe a slimzip model")
    if not isinstance(spec, dict):
        raise ContainerError(f"manifest model: {'missing' if spec is None else 'not an object'}")
    if not ("name" in spec or "graph" in spec):
        if container_version >= SINCE["compact"]:
            raise ContainerError("manifest model: a version-4 file names a registry model or stores a graph")
        if not with_model:
            raise ContainerError(NO_ARCHITECTURE)
    return spec


def _model_from_manifest(manifest: dict, model: nn.Module | None = None, container_version: int = 3) -> nn.Module:
    """The architecture a manifest describes: a registry model, the graph it stores, or ``model`` (the
    user's own class) narrowed to the stored plan."""
    spec = check_model_spec(manifest, container_version, model is not None)
    if container_version >= SINCE["compact"] and "plan" in spec:
        spec = {**spec, "plan": plan_form(container_version)[1](spec["plan"])}
    if model is not None:
        return _narrowed(model, spec)
    if "graph" in spec:
        if container_version < SINCE["graph"]:
            raise ContainerError("model graphs exist from format version 3")
        if set(spec) - {"graph", "plan"}:
            raise ContainerError("manifest model arguments are not supported")
        try:
            return build_graph(spec["graph"])
        except GraphError as e:
            raise ContainerError(f"manifest model graph: {e}") from None
    if not isinstance(spec.get("name"), str):
        raise ContainerError("manifest does not describe a slimzip model")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict) or set(kwargs) - {"num_classes"} or set(spec) - {"name", "kwargs", "plan"}:
        raise ContainerError("manifest model arguments are not supported")
    classes = kwargs.get("num_classes", 10)
    if not isinstance(classes, int) or isinstance(classes, bool) or not 2 <= classes <= MAX_CLASSES:
        raise ContainerError("manifest asks for an impossible number of classes")
    try:
        from .structured import build_model  # a registry model's plan narrows it (torch-pruning)

        return build_model(spec)
    except SlimzipError as e:
        raise ContainerError(f"manifest model: {e}") from None


def _narrowed(model: nn.Module, spec: dict) -> nn.Module:
    """The user's model, copied and narrowed to the file's channel plan (relative to that model)."""
    model = copy.deepcopy(model).cpu()
    plan = spec.get("plan")
    if plan:
        try:
            shape = spec_input_shape(spec)
            from .structured import apply_plan, validate_plan

            apply_plan(model, validate_plan(plan), tuple(shape), check_roots=True)
        except (SlimzipError, KeyError, TypeError) as e:
            raise ContainerError(f"the file's channel plan does not fit the given model: {e}") from None
    return model


def _section(container: Container, entry: dict, key: str) -> bytes:
    i = entry.get(key)
    if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(container.sections):
        raise ContainerError(f"tensor {entry.get('name')}: bad section reference {key!r}")
    return container.sections[i]


def _int_field(entry: dict, key: str, low: int, high: int) -> int:
    v = entry.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise ContainerError(f"tensor {entry.get('name')}: field {key!r} out of range")
    return v


def _finite(value: int | float) -> bool:
    """A JSON number that is a finite float32 (an integer of 400 digits, or 1e308, is not)."""
    try:
        return math.isfinite(float(value)) and abs(float(value)) < FLOAT32_OVERFLOW  # rounds to a finite float32
    except OverflowError:
        return False


def _constant(entry: dict) -> float:
    value = entry.get("value")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not _finite(value):
        raise ContainerError(f"tensor {entry['name']}: a constant needs a finite number")
    return float(value)


# the dtype of a quantized section's lo and step, by the version that set it
QUANTIZED_HEADER = {SINCE["quantized"]: "<f4", FIXED_COSTS: "<f2"}


def quantized_header(version: int) -> np.dtype:
    """The dtype of a quantized or packed section's ``lo`` and ``step`` in a file of ``version``."""
    return np.dtype(in_effect(QUANTIZED_HEADER, version))


def _small_tensor(values: np.ndarray, raw_dtype: str, raw_bits: int, compact: bool,
                  version: int) -> tuple[dict, bytes]:
    """A tensor the codebooks do not share: steps of a byte when asked for (a compact file whose lo and step
    fit the version's header dtype; version 6: ``raw_bits``-bit steps, packed), else raw in ``raw_dtype``
    (float32 when float16 would overflow)."""
    if raw_dtype == "uint8" and compact:
        header = quantized_header(version)
        bits = raw_bits if version >= SINCE["packed"] else 8
        found = quantize_affine(values, header, bits)
        if found is not None:
            lo, step, q = found
            head = np.array([lo, step], dtype=header).tobytes()
            if bits == 8:
                return {"encoding": "quantized"}, head + q.tobytes()
            return {"encoding": "packed", "bits": bits}, head + pack_bits(q, bits)
    dtype = "float16" if raw_dtype == "uint8" else raw_dtype  # version 3 has no uint8 tensors
    if dtype == "float16" and values.size and np.abs(values).max() > FLOAT16_MAX:
        dtype = "float32"
    np_dtype = np.dtype(RAW_DTYPES[dtype][0]).newbyteorder("<")
    return {"encoding": "raw", "dtype": dtype}, values.astype(np_dtype).tobytes()


def quantize_affine(values: np.ndarray, header: np.dtype = np.dtype("<f4"),
                   bits: int = 8) -> tuple[float, float, np.ndarray] | None:
    """(lo, step, q): values ~ lo + step x q with q in [0, 2^bits - 1] (float32 arithmetic, as decoded), lo and
    step exact in ``header`` (lo rounded down, step up, so that [lo, lo + top x step] covers the values); None
    when they do not fit it."""
    if values.size == 0:
        return 0.0, 0.0, np.zeros(values.shape, dtype=np.uint8)
    kind, top = header.type, np.float32(2 ** bits - 1)
    lo, hi = np.float32(values.min()), np.float32(values.max())
    lo_h = kind(lo)
    if np.float32(lo_h) > lo:
        lo_h = np.nextafter(lo_h, kind(-np.inf))
    step_h = kind((hi - np.float32(lo_h)) / top)
    while np.isfinite(step_h) and np.float32(lo_h) + top * np.float32(step_h) < hi:
        step_h = np.nextafter(step_h, kind(np.inf))
    lo, step = np.float32(lo_h), np.float32(step_h)
    if not (np.isfinite(lo) and np.isfinite(step)):
        return None
    if step == 0:
        return float(lo), 0.0, np.zeros(values.shape, dtype=np.uint8)
    return float(lo), float(step), np.clip(np.rint((values - lo) / step), 0, top).astype(np.uint8)


def pack_bits(q: np.ndarray, bits: int) -> bytes:
    """``bits``-bit unsigned integers, most significant bit first, back to back, zero-padded to a byte."""
    planes = np.unpackbits(q.reshape(-1, 1).astype(np.uint8), axis=1)[:, 8 - bits:]
    return np.packbits(planes.reshape(-1)).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """The inverse of ``pack_bits`` (the caller checks the length and the padding)."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count * bits].reshape(count, bits)
    return np.packbits(np.pad(planes, ((0, 0), (8 - bits, 0))), axis=1).reshape(-1)


def dequantize_affine(lo: float, step: float, q: np.ndarray) -> np.ndarray:
    return (np.float32(lo) + np.float32(step) * q.astype(np.float32)).astype(np.float32)


def quantized_parts(container: Container, entry: dict, numel: int) -> tuple[float, float, np.ndarray]:
    """A quantized or packed section's (lo, step, q), checked: its header dtype is the file version's, a
    packed one's ``bits`` in [1, 8] and its padding bits zero."""
    data, header = _section(container, entry, "data"), quantized_header(container.version)
    bits = _int_field(entry, "bits", 1, 8) if entry["encoding"] == "packed" else 8
    if len(data) != 2 * header.itemsize + (numel * bits + 7) // 8:
        raise ContainerError(f"tensor {entry['name']}: {len(data)} bytes for {numel} values")
    lo, step = (float(v) for v in np.frombuffer(data[:2 * header.itemsize], dtype=header))
    if not (math.isfinite(lo) and math.isfinite(step) and step >= 0):
        raise ContainerError(f"tensor {entry['name']}: lo and step must be finite numbers, step >= 0")
    body = data[2 * header.itemsize:]
    if bits == 8:
        return lo, step, np.frombuffer(body, dtype=np.uint8)
    if numel * bits % 8 and body[-1] & ((1 << (8 - numel * bits % 8)) - 1):
        raise ContainerError(f"tensor {entry['name']}: the padding bits after its packed values are not zero")
    return lo, step, unpack_bits(body, bits, numel)


def _decode_tensor(container: Container, entry: dict, like: torch.Tensor) -> torch.Tensor:
    numel = like.numel()
    if entry.get("encoding") == "constant":
        return torch.full(like.shape, _constant(entry))
    if entry.get("encoding") == "raw":
        if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in RAW_DTYPES:
            raise ContainerError(f"tensor {entry['name']}: unknown dtype")
        np_dtype = np.dtype(RAW_DTYPES[entry["dtype"]][0]).newbyteorder("<")
        data = _section(container, entry, "data")
        if len(data) != numel * np_dtype.itemsize:
            raise ContainerError(f"tensor {entry['name']}: {len(data)} bytes for {numel} values")
        return torch.from_numpy(np.frombuffer(data, dtype=np_dtype).astype(np.float32)).reshape(like.shape)
    if entry.get("encoding") in AFFINE:
        return torch.from_numpy(dequantize_affine(*quantized_parts(container, entry, numel))).reshape(like.shape)
    if entry.get("encoding") != "shared":
        raise ContainerError(f"tensor {entry.get('name')}: unknown encoding")
    return decode_shared(container, entry, like.shape).weight()


STREAM_CODERS = {"codes": (*CODECS, *HELD), "index": (*CODECS, JOINT)}  # only a code stream has contexts


class SharedFields(NamedTuple):
    alphabet: int  # codebook entries (codes are below it)
    bits: int
    codebook_dtype: str
    index_bits: int
    nnz: int
    gap_count: int


def shared_fields(container: Container, entry: dict, shape: torch.Size | list[int]) -> SharedFields:
    """A shared tensor's fields, each checked against ``shape`` (the model's) and the file's version before
    anything is decoded. Version 4: ``centroids`` float16 entries, codes below that; before: ``2**bits``
    float32 entries."""
    numel = math.prod(shape)
    if container.version >= SINCE["compact"]:
        alphabet, codebook_dtype = _int_field(entry, "centroids", 1, MAX_CENTROIDS), "<f2"
        bits = max(1, math.ceil(math.log2(alphabet)))
    else:
        bits = _int_field(entry, "bits", 1, 16)
        alphabet, codebook_dtype = 2 ** bits, "<f4"
    coders = entry.get("coders")
    if not isinstance(coders, dict) or not all(isinstance(coders.get(k), str) and coders[k] in STREAM_CODERS[k]
                                               for k in STREAMS):
        raise ContainerError(f"tensor {entry.get('name')}: unknown encoding")
    for coder in set(coders.values()) & {"adaptive", *HELD}:
        if container.version < SINCE[coder]:
            raise ContainerError(f"tensor {entry['name']}: the {coder} coder exists from format version {SINCE[coder]}")
    if coders["codes"] == CONTEXT and not 1 < alphabet <= contexts.CONTEXT_ALPHABET:
        raise ContainerError(f"tensor {entry['name']}: a context stream's codebook has 2 to "
                             f"{contexts.CONTEXT_ALPHABET} entries")
    for key in ("code_entropy", "index_entropy"):  # informational (inspect shows them), still checked
        v = entry.get(key, 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not _finite(v) or not 0 <= v <= 64:
            raise ContainerError(f"tensor {entry.get('name')}: field {key!r} out of range")
    index_bits = _int_field(entry, "index_bits", 1, 16)
    nnz = _int_field(entry, "nnz", 0, numel)
    gap_count = _int_field(entry, "gap_symbols", nnz, nnz + numel // (2 ** index_bits - 1) + 1)
    return SharedFields(alphabet, bits, codebook_dtype, index_bits, nnz, gap_count)


def _stream_specs(fields: SharedFields) -> dict[str, tuple[int, int]]:
    """A shared tensor's streams as (symbol count, alphabet)."""
    return {"codes": (fields.nnz, fields.alphabet), "index": (fields.gap_count, 2 ** fields.index_bits)}


def decode_shared(container: Container, entry: dict, shape: torch.Size | list[int]) -> SharedLayer:
    """A shared tensor's codebook, codes and kept positions exactly as stored, every field checked
    against ``shape`` (the registry model's) before anything is decoded; a stream held in the joint stream
    was decoded with the table (``tensor_table``)."""
    f = shared_fields(container, entry, shape)
    centroids = _codebook(container, entry, f)
    try:
        codes = _stream_symbols(container, entry, "codes", f)
        positions = _positions(container, entry, shape, f)
    except FormatError as e:
        raise ContainerError(f"tensor {entry['name']}: {e}") from None
    mask = np.zeros(math.prod(shape), dtype=bool)
    mask[positions] = True
    return SharedLayer(torch.from_numpy(centroids), torch.from_numpy(np.asarray(codes, dtype=np.int64)),
                       torch.from_numpy(mask).reshape(shape), f.bits)


def _codebook(container: Container, entry: dict, f: SharedFields) -> np.ndarray:
    codebook = _section(container, entry, "codebook")
    if len(codebook) != np.dtype(f.codebook_dtype).itemsize * f.alphabet:
        raise ContainerError(f"tensor {entry['name']}: codebook has the wrong size")
    centroids = np.frombuffer(codebook, dtype=f.codebook_dtype).astype(np.float32)
    if not np.isfinite(centroids).all():
        raise ContainerError(f"tensor {entry['name']}: codebook holds a value that is not finite")
    return centroids


def _stream_symbols(container: Container, entry: dict, key: str, f: SharedFields) -> np.ndarray:
    """A shared tensor's decoded ``key`` stream: from the joint stream (decoded with the table) or its section."""
    if entry["coders"][key] in HELD:
        return entry["symbols"][key][0]
    return CODECS[entry["coders"][key]].decode(_section(container, entry, key), *_stream_specs(f)[key])


def _positions(container: Container, entry: dict, shape: torch.Size | list[int], f: SharedFields) -> np.ndarray:
    """A shared tensor's kept (sorted, flat) positions, exactly ``nnz`` of them."""
    positions = gaps_decode(_stream_symbols(container, entry, "index", f), f.index_bits, math.prod(shape))
    if len(positions) != f.nnz:
        raise ContainerError(f"tensor {entry['name']}: index holds {len(positions)} weights, expected {f.nnz}")
    return positions


def _implied_length(container: Container, entry: dict, key: str) -> int:
    """The length of a section a version-7 row implies (``compact.implied``), its fields checked first."""
    numel = math.prod(entry["shape"])
    if entry["encoding"] == "shared":
        f = shared_fields(container, entry, entry["shape"])
        if key == "codebook":
            return 2 * f.alphabet
        return fixed_bytes(*_stream_specs(f)[key])
    if entry["encoding"] == "raw":
        if not isinstance(entry.get("dtype"), str) or entry["dtype"] not in RAW_DTYPES:
            raise ContainerError(f"tensor {entry['name']}: unknown dtype")
        return numel * np.dtype(RAW_DTYPES[entry["dtype"]][0]).itemsize
    bits = _int_field(entry, "bits", 1, 8) if entry["encoding"] == "packed" else 8
    return 2 * quantized_header(container.version).itemsize + (numel * bits + 7) // 8


def _cut_payload(container: Container, entries: list[dict]) -> list[dict]:
    """Version 7: the payload cut into the rows' sections, in place (``Container.sections``): each section's
    length implied by its row and shape or, for a coded stream that is not ``fixed``, the next length of the
    table; the joint stream, when a row names it, is the rest. Returns ``entries``."""
    table = container.manifest.get("sections", [])
    if not all(type(n) is int and n >= 0 for n in table):
        raise ContainerError("section table: every length must be a non-negative integer")
    listed, lengths = iter(table), []
    for entry in entries:
        for key in entry_sections(entry):
            length = _implied_length(container, entry, key) if implied(entry, key) else next(listed, None)
            if length is None:
                raise ContainerError("the section table lists fewer lengths than the file's coded streams")
            lengths.append(length)
    if next(listed, None) is not None:
        raise ContainerError("the section table lists more lengths than the file's coded streams")
    rest, joint = len(container.payload) - sum(lengths), has_joint_stream(entries)
    if rest < 0 or (rest and not joint):
        raise ContainerError("section lengths do not add up to the payload")
    starts = np.cumsum([0] + lengths + ([rest] if joint else [])).tolist()
    container.sections[:] = [container.payload[a:b] for a, b in zip(starts, starts[1:])]
    return entries


def _decode_joint(container: Container, entries: list[dict]) -> list[dict]:
    """Version 7: the joint stream (the last section) decoded, each of its members' symbols and bits left in
    its entry (``entry["symbols"][stream] = (symbols, bits)``): the adaptive members, then the context members
    (version 8), each once its tensor's positions are known. The fields it needs are checked first, and the
    members' work against the bounds the writer keeps."""
    held, context = joint_streams(entries), context_streams(entries)
    if not held and not context:
        return entries
    specs = [_stream_specs(shared_fields(container, e, e["shape"]))[key] for e, key in held]  # rows: shared
    context_fields = [shared_fields(container, e, e["shape"]) for e in context]
    context_specs = [_stream_specs(f)["codes"] for f in context_fields]
    if joint_work(specs) > ADAPTIVE_WORK or context_work(context_specs) > contexts.CONTEXT_WORK:
        raise ContainerError("the joint stream is larger than slimzip writes")
    try:
        reader = JointReader(container.sections[-1], len(held) + len(context))
        for (e, key), spec in zip(held, specs):
            e.setdefault("symbols", {})[key] = reader.adaptive(*spec)
        steps = 0
        for e, f, (count, alphabet) in zip(context, context_fields, context_specs):
            plan = _context_plan(container, e, f)
            steps += plan.steps
            if steps > contexts.CONTEXT_STEPS:
                raise FormatError("the context streams take more steps than slimzip writes")
            e.setdefault("symbols", {})["codes"] = reader.context(count, alphabet, plan)
        reader.close()
    except FormatError as e:
        raise ContainerError(str(e)) from None
    return entries


def _context_plan(container: Container, entry: dict, f: SharedFields) -> contexts.CodeContext:
    """The coding order and context inputs of a context member: its tensor's positions and codebook."""
    try:
        positions = _positions(container, entry, entry["shape"], f)
    except FormatError as e:
        raise ContainerError(f"tensor {entry['name']}: {e}") from None
    return contexts.plan(positions, entry["shape"], _codebook(container, entry, f))


def decode_model(container: Container, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model a container describes (registry model or stored graph; with ``model``, a copy
    of that module narrowed to the stored plan) and load its decoded weights. The tensor table is checked
    whole (names, shapes, sections) before any tensor is decoded."""
    user = _user_model(container, model)
    model = _model_from_manifest(container.manifest, model, container.version)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    layout = state  # version 4's rows follow the stored model's tensors: the graph's, not the user's class's
    if user and container.version >= SINCE["compact"]:
        stored = _model_from_manifest(container.manifest, None, container.version)
        layout = {k: v for k, v in stored.state_dict().items() if not k.endswith("num_batches_tracked")}
    entries = tensor_table(container, layout)
    names = _check_table(container, entries, state, subset=user)
    for entry in entries:
        state[entry["name"]] = _decode_tensor(container, entry, state[entry["name"]])
    try:
        load_state(model, {n: state[n] for n in names}, strict=False)
    except (RuntimeError, ValueError) as e:
        raise ContainerError(f"the decoded tensors do not load into the model ({str(e).splitlines()[0][:200]})") \
            from None
    return model


def _check_table(container: Container, entries: list[dict], state: dict[str, torch.Tensor],
                 subset: bool = False) -> list[str]:
    """The whole tensor table against the model's tensors (``state``; ``subset``: a user's class may hold
    more): names, shapes, encodings, constants, version rules, every section used once. Returns the names."""
    names = [e.get("name") for e in entries]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ContainerError("the file's tensor table names a tensor twice or not by a string")
    if set(names) != set(state) and not (subset and set(names) <= set(state)):
        raise ContainerError("the file's tensors do not match the model's")
    for entry in entries:
        if entry.get("shape") != list(state[entry["name"]].shape):
            raise ContainerError(f"tensor {entry['name']}: shape does not match the model")
        if entry.get("encoding") not in ENCODINGS:
            raise ContainerError(f"tensor {entry['name']}: unknown encoding")
        if entry["encoding"] == "constant":
            _constant(entry)
            if container.version < SINCE["constant"]:
                raise ContainerError(f"tensor {entry['name']}: constant tensors exist from format version 2")
        if entry["encoding"] in AFFINE and container.version < SINCE[entry["encoding"]]:
            raise ContainerError(f"tensor {entry['name']}: {entry['encoding']} tensors exist from format version "
                                 f"{SINCE[entry['encoding']]}")
    _sections_used_once(container, entries)
    return names


MAX_TABLE_ELEMENTS = 1 << 27  # a file that stores no model: the most values its own table may claim


def table_alone(container: Container) -> list[dict]:
    """The tensor table of a version-3 file that stores no architecture (a plan alone), checked as
    ``decode_model`` checks a table against a model, the table's own names and shapes standing for the
    model's, and every tensor decoded: what ``inspect`` shows of such a file is what a reader accepts."""
    entries = tensor_table(container, {})
    shapes = {}
    for e in entries:
        shape = e.get("shape")
        if not isinstance(shape, list) or len(shape) > 8 or \
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 24 for d in shape):
            raise ContainerError(f"tensor {str(e.get('name'))[:40]}: malformed shape")
        shapes[str(e.get("name"))] = shape
    if sum(math.prod(s) for s in shapes.values()) > MAX_TABLE_ELEMENTS:
        raise ContainerError(f"the file's tensor table claims more than {MAX_TABLE_ELEMENTS:,} values")
    state = {n: torch.empty(s, device="meta") for n, s in shapes.items()}
    _check_table(container, entries, state)
    for e in entries:
        _decode_tensor(container, e, torch.empty(shapes[e["name"]], device="meta"))
    return entries


def tensor_table(container: Container, state: dict[str, torch.Tensor]) -> list[dict]:
    """The file's tensor entries, keyed (name, shape, encoding, fields, section numbers) whatever the
    version: version 4's rows are named and shaped by the rebuilt model's ``state`` (state_dict order)."""
    entries = container.manifest.get("tensors")
    if container.version >= SINCE["compact"]:
        shapes = {k: list(v.shape) for k, v in state.items()}
        if container.version >= IMPLIED_LENGTHS:
            return _decode_joint(container, _cut_payload(container, expand_rows(entries, shapes, None)))
        return _decode_joint(container, expand_rows(entries, shapes, len(container.sections)))
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ContainerError("manifest has no tensor table")
    return entries


def with_entropies(container: Container, table: list[dict]) -> list[dict]:
    """``table`` with each shared tensor's empirical entropies measured from its decoded streams (bits per
    code; index bits per kept weight), the floor any coder of i.i.d. symbols reaches: version 4's compact
    rows do not store them, version 3's informational fields are replaced by the measurement."""
    out = []
    for e in table:
        if e.get("encoding") == "shared":
            layer = decode_shared(container, e, e["shape"])
            positions = np.flatnonzero(layer.mask.flatten().numpy())
            gaps = gaps_encode(positions, int(e["index_bits"]))
            e = {**e, "code_entropy": entropy_bits(layer.codes.numpy()),
                 "index_entropy": entropy_bits(gaps), "gap_symbols": len(gaps)}
        out.append(e)
    return out


def model_table(container: Container, model: nn.Module) -> list[dict]:
    """The keyed tensor table of a file whose model is decoded (what ``inspect`` shows)."""
    return tensor_table(container, {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")})


def _sections_used_once(container: Container, entries: list[dict]) -> None:
    """Every section belongs to exactly one tensor field: none shared, none left over (a strict reader)."""
    used = []
    for entry in entries:
        encoding = entry.get("encoding")
        keys = entry_sections(entry) if isinstance(encoding, str) else ()
        used += [entry.get(k) for k in keys]
    sections = len(container.sections) - (1 if has_joint_stream(entries) else 0)  # the joint stream: the last
    if not all(type(u) is int for u in used) or sorted(used) != list(range(sections)):
        raise ContainerError("the tensor table does not use every section exactly once")


def _user_model(container: Container, model: nn.Module | None) -> bool:
    """Decoding into the user's own class: the graph kept only the tensors its forward reads."""
    return model is not None and "graph" in container.manifest.get("model", {})
