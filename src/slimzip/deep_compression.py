"""Deep compression end to end: prune, retrain with masks held, share weights, fine-tune centroids,
entropy-code into a .slz container, and decode a container back into a registry model.

The compressed model is *defined* as what the file decodes to: accuracy is always measured on a model
decoded from the bytes, so nothing the file cannot hold (fp32 biases stored as fp16, say) can flatter it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .coding import CODECS, FormatError, entropy_bits, gaps_decode, gaps_encode
from .container import HEADER, TRAILER, Container, ContainerError, encode_container
from .data import DeviceLoader
from .errors import SlimzipError, check_range, unknown
from .graph import GraphError, build as build_graph
from .options import knob
from .structured import (ChannelPruner, apply_plan, build_model, compose_plans, dead_channel_plan, dependency_graph,
                         registry_input_shape, validate_plan)
from .progress import log
from .sharing import SharedLayer, WeightSharer, tie_centroids_, untie_centroids_
from .trainer import TrainConfig, fit
from .unstructured import MagnitudePruner, Masks, apply_masks_, mask_hook, masks_from_zeros

FORMAT = "slimzip-model"
RAW_DTYPES = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16)}
MAX_CLASSES = 100_000  # a manifest asking for more is hostile, not a model


CHANNEL_SCOPES = ("auto", "global", "layer")


@dataclass(frozen=True)
class CompressConfig:
    """The knobs of deep compression. Saved in the file's manifest."""

    channel_ratio: float = knob(0.0, "fixed knobs: fraction of channels removed first, then retrained")
    channel_scope: str = knob("auto", "channel threshold: global, layer, or auto (global where the model has BN)")
    sparsity: float = knob(0.9, "fixed knobs: fraction of conv/linear weights set to zero")
    scope: str = knob("layer", "weight-pruning threshold: layer (each at the sparsity) or global")
    prune_steps: int = knob(3, "prune-retrain rounds; sparsity rises geometrically over them", positive=True)
    retrain_epochs: int = knob(2, "fixed knobs: retraining epochs (masks held) after each pruning round")
    bits_conv: int = knob(8, "codebook index bits, conv layers")
    bits_fc: int = knob(5, "codebook index bits, linear layers")
    centroid_epochs: int = knob(1, "centroid fine-tuning epochs after weight sharing")
    centroid_grad: str = "mean"  # 'mean' or 'sum' of the cluster's weight gradients (see sharing.py)
    index_bits_conv: int = knob(8, "relative-index bits, conv layers (fillers past 2^bits - 1)")
    index_bits_fc: int = knob(5, "relative-index bits, linear layers")
    coder: str = knob("auto", "rans, huffman, fixed, or auto: the smallest of them for each stream")
    raw_dtype: str = knob("float16", "fixed knobs: float16 or float32 for BN, biases and other small tensors")
    fold_bn: bool = knob(True, "store BatchNorm as scale + shift (a preceding bias folded in): exact in eval mode",
                         flag="--no-fold-bn")
    lr: float = knob(0.01, "retraining / fine-tuning learning rate (cosine within each round)")

    def validate(self) -> "CompressConfig":
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        check_range("channel ratio", self.channel_ratio, 0.0, 1.0, high_open=True)
        if self.channel_scope not in CHANNEL_SCOPES:
            raise unknown("channel scope", self.channel_scope, list(CHANNEL_SCOPES))
        for name in ("bits_conv", "bits_fc", "index_bits_conv", "index_bits_fc"):
            check_range(name.replace("_", " "), getattr(self, name), 1, 16)
        if self.coder not in (*CODECS, "auto"):
            raise unknown("coder", self.coder, [*CODECS, "auto"])
        if self.raw_dtype not in RAW_DTYPES:
            raise unknown("raw dtype", self.raw_dtype, list(RAW_DTYPES))
        if self.prune_steps < 1 or self.retrain_epochs < 0 or self.centroid_epochs < 0:
            raise SlimzipError("prune steps must be >= 1 and epochs >= 0")
        return self


def sparsity_steps(start: float, end: float, rounds: int) -> list[float]:
    """Sparsities after each of ``rounds`` pruning rounds from ``start`` to ``end``: the kept fraction
    shrinks geometrically (0 -> 0.875 in 3 rounds: 0.5, 0.75, 0.875)."""
    kept0, kept1 = 1 - start, 1 - end
    return [1 - kept0 * (kept1 / kept0) ** ((i + 1) / rounds) for i in range(rounds)]


Tune = Callable[[nn.Module, "Masks | None"], float]  # fine-tune holding the masks; returns the epochs spent
RemoveChannels = Callable[[nn.Module], "tuple[nn.Module, dict[str, list[int]]]"]  # -> narrowed model, its plan


@dataclass
class Pruned:
    """A model after the structured and unstructured steps, before weight sharing."""

    model: nn.Module
    plan: dict[str, list[int]]  # channels removed, relative to the model the sequence started from
    masks: "Masks | None"
    epochs: float


def prune_and_retrain(model: nn.Module, plan: dict, masks: "Masks | None", *, remove_channels: RemoveChannels | None,
                      sparsities: Sequence[float], scope: str, tune: Tune, verbose: bool = True) -> Pruned:
    """The deep-compression sequence that ``compress`` and every search candidate run: remove channels
    (structured first) and fine-tune; then prune weights to each of ``sparsities`` in turn (magnitude,
    ``scope``), fine-tuning with the masks held after each. ``masks`` (None: no weights pruned yet) are
    the current masks, rebuilt from the zeros after channels go."""
    spent = 0.0
    if remove_channels is not None:
        model, removed = remove_channels(model)
        plan = compose_plans(plan, removed)
        masks = masks_from_zeros(model) if masks is not None else None
        spent += tune(model, masks)
    for i, sparsity in enumerate(sparsities):
        masks = MagnitudePruner(sparsity=sparsity, scope=scope).fit(model).masks_
        apply_masks_(model, masks)
        log(f"pruning round {i + 1}/{len(sparsities)}: sparsity {sparsity:.4f}", verbose=verbose)
        spent += tune(model, masks)
    return Pruned(model, plan, masks, spent)


def remove_dead_units(pruned: Pruned, input_shape: tuple[int, ...], verbose: bool = True) -> Pruned:
    """Units no weight reads any more, removed physically (as the combined heuristic's paper does); this
    changes no output."""
    dead = dead_channel_plan(pruned.model, input_shape)
    if not dead:
        return pruned
    log(f"removing dead units in {len(dead)} layers", verbose=verbose)
    model = apply_plan(pruned.model, dead, input_shape)
    return Pruned(model, compose_plans(pruned.plan, dead), masks_from_zeros(model), pruned.epochs)


@dataclass
class DeepCompressed:
    """What ``deep_compress`` produced besides the (narrowed, shared) model itself."""

    model: nn.Module
    layers: dict[str, SharedLayer]
    plan: dict[str, list[int]]  # channels removed (the ratio, then dead units), relative to the input model
    epochs: int


def deep_compress(model: nn.Module, train: DeviceLoader, val: DeviceLoader | None, cfg: CompressConfig,
                  train_cfg: TrainConfig, input_shape: tuple[int, ...], verbose: bool = True) -> DeepCompressed:
    """Remove channels (``channel_ratio``), prune weights and retrain, remove dead units, share weights,
    fine-tune centroids, with fixed knobs (``prune_and_retrain``). Retraining keeps the checkpoint's own
    recipe (its L1 penalty included) at ``cfg.lr``. ``model`` may be replaced: use the returned model."""
    cfg.validate()
    tune_cfg = lambda n: dataclasses.replace(train_cfg, epochs=n, lr=cfg.lr, schedule="cosine", patience=0)  # noqa: E731

    def tune(m: nn.Module, masks: "Masks | None") -> float:
        if cfg.retrain_epochs:
            fit(m, train, val, tune_cfg(cfg.retrain_epochs), after_step=[mask_hook(masks)] if masks else [],
                verbose=verbose)
        return cfg.retrain_epochs

    def remove_channels(m: nn.Module) -> tuple[nn.Module, dict]:
        pruner = default_channel_pruner(m, cfg.channel_ratio, cfg.channel_scope)
        plan = pruner.fit(m, input_shape).plan_
        log(f"removed {cfg.channel_ratio:.0%} of channels ({pruner.importance}, {pruner.scope})", verbose=verbose)
        return apply_plan(m, plan, input_shape), plan

    pruned = prune_and_retrain(model, {}, None, remove_channels=remove_channels if cfg.channel_ratio > 0 else None,
                               sparsities=sparsity_steps(0.0, cfg.sparsity, cfg.prune_steps), scope=cfg.scope,
                               tune=tune, verbose=verbose)
    pruned = remove_dead_units(pruned, input_shape, verbose)
    layers = share_weights(pruned.model, pruned.masks, cfg.bits_conv, cfg.bits_fc, tune_cfg(cfg.centroid_epochs),
                           train, val, grad=cfg.centroid_grad, verbose=verbose)
    return DeepCompressed(pruned.model, layers, pruned.plan, int(pruned.epochs) + cfg.centroid_epochs)


def default_channel_pruner(model: nn.Module, channel_ratio: float, scope: str = "auto") -> ChannelPruner:
    """Network slimming (BN scales) where the model has BatchNorm, else filter L1. ``scope='auto'``:
    slimming's one global threshold with BN, per layer without (L1 norms of different layers do not
    compare); 'global' or 'layer' force one."""
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if scope == "auto":
        scope = "global" if has_bn else "layer"
    return ChannelPruner(importance="bn_scale" if has_bn else "l1", channel_ratio=channel_ratio, scope=scope)


def share_weights(model: nn.Module, masks: dict, bits_conv: int, bits_fc: int, centroid_cfg: TrainConfig,
                  train: DeviceLoader, val: DeviceLoader | None, grad: str = "mean",
                  verbose: bool = True) -> dict[str, SharedLayer]:
    """k-means weight sharing, then ``centroid_cfg.epochs`` of centroid fine-tuning (no weight decay)."""
    layers = WeightSharer(bits_conv=bits_conv, bits_fc=bits_fc).fit(model, masks).layers_
    if centroid_cfg.epochs:
        log("fine-tuning centroids", verbose=verbose)
        tie_centroids_(model, layers, grad=grad)
        fit(model, train, val, dataclasses.replace(centroid_cfg, weight_decay=0.0), verbose=verbose)
        layers = untie_centroids_(model, layers)
    return layers


# --- encoding ------------------------------------------------------------------------------------

def _index_bits(module: nn.Module, cfg: CompressConfig) -> int:
    return cfg.index_bits_conv if isinstance(module, nn.Conv2d) else cfg.index_bits_fc


def encode_stream(symbols: np.ndarray, alphabet: int, coder: str) -> tuple[str, bytes]:
    """Code one stream with ``coder``, or with whichever coder gives the fewest bytes ('auto')."""
    names = list(CODECS) if coder == "auto" else [coder]
    return min(((n, CODECS[n].encode(symbols, alphabet)) for n in names), key=lambda c: len(c[1]))


def _bias_feeding(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, str]:
    """BatchNorm fqn -> the conv / linear layer whose biased output only that BatchNorm reads (its bias
    can move into the BatchNorm's shift). Empty when the model cannot be traced."""
    try:
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
    return registry_input_shape(spec["name"])


def encode_model(model: nn.Module, spec: dict, layers: dict[str, SharedLayer], cfg: CompressConfig,
                 extra: dict | None = None) -> bytes:
    """Serialise a shared model into .slz bytes. ``spec``: ``{"name", "kwargs", "plan"?}`` of the registry,
    or ``{"graph", "plan"?}`` (``graph.describe``; ``model`` then is ``graph.portable`` of it, so that its
    tensors are the ones the graph rebuilds)."""
    sections: list[bytes] = []
    tensors = []
    modules = dict(model.named_modules())

    def add(data: bytes) -> int:
        sections.append(data)
        return len(sections) - 1

    state, constants = model.state_dict(), {}
    if cfg.fold_bn:
        state, constants = fold_batchnorm(model, spec_input_shape(spec), frozenset(layers))
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue  # a training counter; inference never reads it
        if name in constants:
            tensors.append({"name": name, "shape": list(value.shape), "encoding": "constant",
                            "value": constants[name]})
        elif name in layers:
            layer = layers[name]
            index_bits = _index_bits(modules[name.rsplit(".", 1)[0]], cfg)
            positions = np.flatnonzero(layer.mask.numpy().reshape(-1))
            gaps = gaps_encode(positions, index_bits)
            codes = layer.codes.numpy()
            code_coder, code_bytes = encode_stream(codes, 2 ** layer.bits, cfg.coder)
            index_coder, index_bytes = encode_stream(gaps, 2 ** index_bits, cfg.coder)
            tensors.append({"name": name, "shape": list(value.shape), "encoding": "shared", "bits": layer.bits,
                            "index_bits": index_bits, "coders": {"codes": code_coder, "index": index_coder},
                            "nnz": len(codes), "gap_symbols": len(gaps),
                            "codebook": add(layer.centroids.numpy().astype("<f4").tobytes()),
                            "codes": add(code_bytes), "index": add(index_bytes),
                            "code_entropy": round(entropy_bits(codes), 4),
                            "index_entropy": round(entropy_bits(gaps), 4)})
        else:
            np_dtype = np.dtype(RAW_DTYPES[cfg.raw_dtype][0])
            tensors.append({"name": name, "shape": list(value.shape), "encoding": "raw", "dtype": cfg.raw_dtype,
                            "data": add(value.detach().cpu().float().numpy().astype(np_dtype.newbyteorder("<"))
                                        .tobytes())})
    manifest = {"format": FORMAT, "model": spec, "config": dataclasses.asdict(cfg), "tensors": tensors,
                **(extra or {})}
    return encode_container(manifest, sections)


# --- decoding ------------------------------------------------------------------------------------

def _model_from_manifest(manifest: dict, model: nn.Module | None = None) -> nn.Module:
    """The architecture a manifest describes: a registry model, the graph it stores, or ``model`` (the
    user's own class) narrowed to the stored plan."""
    spec = manifest.get("model")
    if manifest.get("format") != FORMAT or not isinstance(spec, dict):
        raise ContainerError("manifest does not describe a slimzip model")
    if model is not None:
        return _narrowed(model, spec)
    if "graph" in spec:
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
            apply_plan(model, validate_plan(plan), tuple(shape))
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


def _decode_tensor(container: Container, entry: dict, like: torch.Tensor) -> torch.Tensor:
    numel = like.numel()
    if entry.get("encoding") == "constant":
        value = entry.get("value")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ContainerError(f"tensor {entry['name']}: a constant needs a finite number")
        return torch.full(like.shape, float(value))
    if entry.get("encoding") == "raw":
        if entry.get("dtype") not in RAW_DTYPES:
            raise ContainerError(f"tensor {entry['name']}: unknown dtype")
        np_dtype = np.dtype(RAW_DTYPES[entry["dtype"]][0]).newbyteorder("<")
        data = _section(container, entry, "data")
        if len(data) != numel * np_dtype.itemsize:
            raise ContainerError(f"tensor {entry['name']}: {len(data)} bytes for {numel} values")
        return torch.from_numpy(np.frombuffer(data, dtype=np_dtype).astype(np.float32)).reshape(like.shape)
    if entry.get("encoding") != "shared":
        raise ContainerError(f"tensor {entry.get('name')}: unknown encoding")
    return decode_shared(container, entry, like.shape).weight()


def decode_shared(container: Container, entry: dict, shape: torch.Size | list[int]) -> SharedLayer:
    """A shared tensor's codebook, codes and kept positions exactly as stored, every field checked
    against ``shape`` (the registry model's) before anything is decoded."""
    numel = math.prod(shape)
    coders = entry.get("coders")
    if not isinstance(coders, dict) or coders.get("codes") not in CODECS or coders.get("index") not in CODECS:
        raise ContainerError(f"tensor {entry.get('name')}: unknown encoding")
    bits, index_bits = _int_field(entry, "bits", 1, 16), _int_field(entry, "index_bits", 1, 16)
    nnz = _int_field(entry, "nnz", 0, numel)
    gap_count = _int_field(entry, "gap_symbols", nnz, nnz + numel // (2 ** index_bits - 1) + 1)
    codebook = _section(container, entry, "codebook")
    if len(codebook) != 4 * 2 ** bits:
        raise ContainerError(f"tensor {entry['name']}: codebook has the wrong size")
    try:
        codes = CODECS[coders["codes"]].decode(_section(container, entry, "codes"), nnz, 2 ** bits)
        gaps = CODECS[coders["index"]].decode(_section(container, entry, "index"), gap_count, 2 ** index_bits)
        positions = gaps_decode(gaps, index_bits, numel)
    except FormatError as e:
        raise ContainerError(f"tensor {entry['name']}: {e}") from None
    if len(positions) != nnz:
        raise ContainerError(f"tensor {entry['name']}: index holds {len(positions)} weights, expected {nnz}")
    mask = np.zeros(numel, dtype=bool)
    mask[positions] = True
    return SharedLayer(torch.from_numpy(np.frombuffer(codebook, dtype="<f4").copy()),
                       torch.from_numpy(np.asarray(codes, dtype=np.int64)), torch.from_numpy(mask).reshape(shape),
                       bits)


def decode_model(container: Container, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model a container describes (registry model or stored graph; with ``model``, a copy
    of that module narrowed to the stored plan) and load its decoded weights."""
    model = _model_from_manifest(container.manifest, model)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    entries = container.manifest.get("tensors")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ContainerError("manifest has no tensor table")
    names = [e.get("name") for e in entries]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ContainerError("the file's tensor table names a tensor twice or not by a string")
    if set(names) != set(state) and not (_user_model(container, model) and set(names) <= set(state)):
        raise ContainerError("the file's tensors do not match the model's")
    for entry in entries:
        if entry.get("shape") != list(state[entry["name"]].shape):
            raise ContainerError(f"tensor {entry['name']}: shape does not match the model")
        state[entry["name"]] = _decode_tensor(container, entry, state[entry["name"]])
    try:
        model.load_state_dict({n: state[n] for n in names}, strict=False)
    except (RuntimeError, ValueError) as e:
        raise ContainerError(f"the decoded tensors do not load into the model ({str(e).splitlines()[0][:200]})") \
            from None
    return model


def _user_model(container: Container, model: nn.Module | None) -> bool:
    """Decoding into the user's own class: the graph kept only the tensors its forward reads."""
    return model is not None and "graph" in container.manifest.get("model", {})


# --- inspection ----------------------------------------------------------------------------------

def inspect_container(container: Container) -> dict:
    """Per-tensor rows (weights, kept %, bits per weight for codes and indices, bytes) and the bytes of
    every component, which add up to the file size."""
    rows, parts = [], {"header": HEADER.size + TRAILER.size, "manifest": 0, "codebooks": 0, "codes": 0,
                       "indices": 0, "raw": 0}
    parts["manifest"] = container.file_bytes - HEADER.size - TRAILER.size - sum(len(s) for s in container.sections)
    for e in container.manifest.get("tensors", []):
        numel = math.prod(e["shape"])
        if e["encoding"] == "shared":
            sizes = {k: len(container.sections[e[k]]) for k in ("codebook", "codes", "index")}
            parts["codebooks"] += sizes["codebook"]
            parts["codes"] += sizes["codes"]
            parts["indices"] += sizes["index"]
            nnz = max(e["nnz"], 1)
            rows.append({"name": e["name"], "encoding": "shared", "weights": numel, "kept": e["nnz"] / numel,
                         "bits": e["bits"],
                         "coders": e["coders"], "code_bits": 8 * sizes["codes"] / nnz,
                         "code_entropy": e.get("code_entropy", 0.0), "index_bits": 8 * sizes["index"] / nnz,
                         "index_entropy": e.get("index_entropy", 0.0) * e["gap_symbols"] / nnz,
                         "bytes": sum(sizes.values())})
        elif e["encoding"] == "constant":  # in the manifest only
            rows.append({"name": e["name"], "encoding": "constant", "weights": numel, "kept": 1.0,
                         "dtype": f"= {e['value']:g}", "bytes": 0})
        else:
            size = len(container.sections[e["data"]])
            parts["raw"] += size
            rows.append({"name": e["name"], "encoding": "raw", "weights": numel, "kept": 1.0, "dtype": e["dtype"],
                         "bytes": size})
    assert sum(parts.values()) == container.file_bytes  # every byte is accounted for
    return {"file_bytes": container.file_bytes, "components": parts, "tensors": rows}
