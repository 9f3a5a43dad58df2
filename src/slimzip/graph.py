"""A model's architecture as plain JSON data, so a .slz file rebuilds any traceable CNN without its code.

``describe(model, input_shape)`` traces the model with ``torch.fx`` and writes the graph as JSON:
leaf layers (Conv2d, Linear, BatchNorm, LayerNorm, activations, pooling, ...) with their constructor
arguments, the tensor operations between them (``torch.cat``, ``operator.add``, ``x.permute``, ...),
and the shape of every free parameter or buffer the graph reads (a layer scale, say).
``build(description)`` turns it back into a ``torch.fx.GraphModule`` whose ``state_dict`` keys are the
traced model's: the file's tensor table fills it.

Reading a description never executes code from the file: every layer type, function and method is
looked up by name in the allow-lists below, every argument is a checked JSON value, every attribute
path a checked identifier, and parameters are allocated only after their total size is checked on the
meta device. (``GraphModule`` generates its Python ``forward`` from the graph; that source is made of
allow-listed names and ``repr`` of checked constants only.) Why this and not ONNX or ``torch.export``:
docs/FORMAT.md.
"""

from __future__ import annotations

import builtins
import copy
import inspect
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import SlimzipError

MAX_ELEMENTS = 1 << 28  # parameters + buffers a described model may allocate (1 GiB of fp32)
MAX_NODES = 100_000


class GraphError(SlimzipError):
    """A model that cannot be described, or a description that is malformed or not allowed."""


# --- allow-lists ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerType:
    cls: type[nn.Module]
    fields: tuple[str, ...]  # constructor arguments, read back from the module's attributes


def _layers() -> dict[str, LayerType]:
    conv = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
            "padding_mode")
    bn = ("num_features", "eps", "momentum", "affine", "track_running_stats")
    pool = ("kernel_size", "stride", "padding", "ceil_mode")
    table = {
        "Conv1d": (nn.Conv1d, conv), "Conv2d": (nn.Conv2d, conv),
        "Linear": (nn.Linear, ("in_features", "out_features", "bias")),
        "BatchNorm1d": (nn.BatchNorm1d, bn), "BatchNorm2d": (nn.BatchNorm2d, bn),
        "LayerNorm": (nn.LayerNorm, ("normalized_shape", "eps", "elementwise_affine", "bias")),
        "GroupNorm": (nn.GroupNorm, ("num_groups", "num_channels", "eps", "affine")),
        "ReLU": (nn.ReLU, ()), "ReLU6": (nn.ReLU6, ()), "SiLU": (nn.SiLU, ()), "GELU": (nn.GELU, ("approximate",)),
        "Hardswish": (nn.Hardswish, ()), "Hardsigmoid": (nn.Hardsigmoid, ()), "Sigmoid": (nn.Sigmoid, ()),
        "Tanh": (nn.Tanh, ()), "Mish": (nn.Mish, ()), "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
        "ELU": (nn.ELU, ("alpha",)), "PReLU": (nn.PReLU, ("num_parameters",)),
        "Softmax": (nn.Softmax, ("dim",)), "Identity": (nn.Identity, ()),
        "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
        "Dropout": (nn.Dropout, ("p",)), "Dropout2d": (nn.Dropout2d, ("p",)),
        "MaxPool2d": (nn.MaxPool2d, (*pool, "dilation")),
        "AvgPool2d": (nn.AvgPool2d, (*pool, "count_include_pad")),
        "AdaptiveAvgPool2d": (nn.AdaptiveAvgPool2d, ("output_size",)),
        "AdaptiveMaxPool2d": (nn.AdaptiveMaxPool2d, ("output_size",)),
        "ChannelShuffle": (nn.ChannelShuffle, ("groups",)),
        "ConvTranspose2d": (nn.ConvTranspose2d, ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                                 "output_padding", "groups", "bias", "dilation", "padding_mode")),
        "InstanceNorm2d": (nn.InstanceNorm2d, bn),
        "LocalResponseNorm": (nn.LocalResponseNorm, ("size", "alpha", "beta", "k")),
        "Upsample": (nn.Upsample, ("size", "scale_factor", "mode", "align_corners")),
        "ZeroPad2d": (nn.ZeroPad2d, ("padding",)),
        "Hardtanh": (nn.Hardtanh, ("min_val", "max_val")), "SELU": (nn.SELU, ()),
        "Softplus": (nn.Softplus, ("beta", "threshold")),
        "MaxPool1d": (nn.MaxPool1d, (*pool, "dilation")), "AvgPool1d": (nn.AvgPool1d, (*pool, "count_include_pad")),
        "AdaptiveAvgPool1d": (nn.AdaptiveAvgPool1d, ("output_size",)), "Dropout1d": (nn.Dropout1d, ("p",)),
        "Unflatten": (nn.Unflatten, ("dim", "unflattened_size")),
    }
    return {name: LayerType(cls, fields) for name, (cls, fields) in table.items()}


LAYERS = _layers()


def optional_args(cls: type[nn.Module]) -> set[str]:
    """Constructor arguments a reader accepts beside a layer's fields though slimzip never writes them:
    ``inplace`` (no effect on what a layer computes)."""
    return {"inplace"} if "inplace" in inspect.signature(cls.__init__).parameters else set()
LAYER_NAMES = {t.cls: name for name, t in LAYERS.items()}
WORDS = {"zeros", "reflect", "replicate", "circular", "same", "valid", "none", "tanh", "nearest", "bilinear",
         "bicubic", "linear"}  # the string arguments a layer may take


def _safe_getattr(obj: Any, name: str) -> Any:
    """``x.shape`` and friends as fx traces them: only tensor metadata, never an arbitrary attribute."""
    if name not in ("shape", "ndim", "dtype", "device"):
        raise GraphError(f"attribute {name!r} is not allowed in a model graph")
    return getattr(obj, name)



def _functions() -> dict[str, Callable]:
    ops = ["add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pos", "matmul", "getitem", "pow",
           "iadd", "isub", "imul", "itruediv", "eq", "ne", "lt", "le", "gt", "ge"]
    tensor = ["cat", "stack", "flatten", "add", "sub", "mul", "div", "relu", "sigmoid", "tanh", "mean", "sum",
              "amax", "permute", "transpose", "reshape", "chunk", "split", "matmul", "softmax", "clamp", "narrow",
              "squeeze", "unsqueeze", "channel_shuffle", "abs", "exp", "sqrt", "rsqrt", "neg", "max", "min",
              "maximum", "minimum", "where", "roll", "bmm", "einsum", "flip", "cumsum", "erf", "zeros_like",
              "ones_like", "square", "pow", "log", "softmax", "mm", "addmm", "baddbmm"]
    functional = ["relu", "relu6", "silu", "gelu", "hardswish", "hardsigmoid", "sigmoid", "tanh", "leaky_relu",
                  "elu", "mish", "softmax", "log_softmax", "adaptive_avg_pool2d", "adaptive_max_pool2d",
                  "avg_pool2d", "max_pool2d", "dropout", "layer_norm", "batch_norm", "group_norm", "linear",
                  "conv2d", "pad", "normalize", "interpolate", "channel_shuffle", "hardtanh"]
    table: dict[str, Callable] = {f"operator.{n}": getattr(operator, n) for n in ops}
    table.update({f"torch.{n}": getattr(torch, n) for n in tensor})
    table.update({f"torch.nn.functional.{n}": getattr(F, n) for n in functional})
    table["builtins.getattr"] = _safe_getattr
    table["builtins.len"] = builtins.len
    table["builtins.int"] = builtins.int
    table["math.sqrt"] = math.sqrt
    table["torch._assert"] = torch._assert  # timm's shape checks: an assertion, nothing to run
    table["slimzip.stochastic_depth"] = stochastic_depth
    return table


def stochastic_depth(input: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """torchvision's ``ops.stochastic_depth`` (the identity in eval mode), so that a file of a model using
    it holds its graph without torchvision: drops whole samples (``row``) or the batch with probability p."""
    if not training or p == 0.0:
        return input
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = input.new_empty(size).bernoulli_(1.0 - p)
    return input * noise.div_(1.0 - p) if p < 1.0 else input * noise


# functions of other libraries a graph may call, by qualified name, and the allowed function each is
ALIASES = {"torchvision.ops.stochastic_depth.stochastic_depth": "slimzip.stochastic_depth"}


FUNCTIONS = _functions()
FUNCTION_NAMES = {fn: name for name, fn in FUNCTIONS.items()}
FUNCTION_NAMES[builtins.getattr] = "builtins.getattr"
METHODS = frozenset("""add sub mul div neg pow sqrt abs exp view reshape flatten permute transpose contiguous
    mean sum amax max min size dim chunk split relu sigmoid tanh softmax unsqueeze squeeze expand expand_as
    reshape_as view_as clamp narrow flip matmul float type_as repeat unbind sigmoid_ mul_ add_ relu_ numel""".split())
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
          "bool": torch.bool}
_NAME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_-]*|_[A-Za-z0-9][A-Za-z0-9_-]*|[0-9]+)$")  # PyTorch allows '-' too


# --- describing a model ----------------------------------------------------------------------------

class _Tracer(fx.Tracer):
    """Allow-listed layers are leaves; every other module (the user's blocks) is traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m) in LAYER_NAMES


def _layer_args(module: nn.Module) -> dict:
    spec = LAYERS[LAYER_NAMES[type(module)]]
    args = {}
    for field in spec.fields:
        if field == "bias":
            args[field] = getattr(module, "bias", None) is not None
        else:
            args[field] = getattr(module, field)
    return args


def _encode(value: Any) -> Any:
    """One fx argument as JSON: nodes by index, tuples / slices / dtypes tagged."""
    if isinstance(value, fx.Node):
        return {"n": value.meta["_slz_index"]}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"f": repr(value)}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return {"t": [_encode(v) for v in value]}
    if isinstance(value, slice):
        return {"s": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if value is Ellipsis:
        return {"e": 1}
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return {"dt": next(k for k, v in DTYPES.items() if v == value)}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"d": {k: _encode(v) for k, v in value.items()}}
    raise GraphError(f"cannot describe an argument of type {type(value).__name__} in the model graph")


def _target_name(node: fx.Node) -> str:
    if node.op == "call_function":
        qualified = f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', '')}"
        name = FUNCTION_NAMES.get(node.target, ALIASES.get(qualified))
        if name is None:
            raise GraphError(f"the model calls {getattr(node.target, '__name__', node.target)!s}, which a .slz "
                             "graph does not allow")
        return name
    if node.op == "call_method" and node.target not in METHODS:
        raise GraphError(f"the model calls the tensor method {node.target!r}, which a .slz graph does not allow")
    return str(node.target)


def describe(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """The architecture of ``model`` as JSON data (see the module docstring); raises ``GraphError``
    naming what cannot be described."""
    return traced(model, input_shape)[0]


def traced(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict, fx.GraphModule]:
    """``describe(model)`` and the model rebuilt from it holding ``model``'s tensors (``portable``),
    checked to give ``model``'s outputs on a random input: what a file of ``model`` decodes to."""
    was = model.training
    try:  # in eval mode: what a Python flag decides (F.dropout(training=self.training)) is recorded for inference
        graph = _Tracer().trace(model.eval())
    except Exception as e:  # fx fails in many ways on arbitrary Python: all of them "not traceable"
        raise GraphError(f"cannot trace the model with torch.fx ({type(e).__name__}: {e})") from None
    finally:
        model.train(was)
    modules = dict(model.named_modules())
    layers, attrs, nodes = {}, {}, []
    for i, node in enumerate(graph.nodes):
        node.meta["_slz_index"] = i
        if node.op == "call_module":
            module = modules[node.target]
            if type(module) not in LAYER_NAMES:
                raise GraphError(f"layer {node.target} ({type(module).__name__}) is not a type a .slz graph allows")
            layers[node.target] = {"type": LAYER_NAMES[type(module)], "args": _encode(_layer_args(module))["d"]}
        elif node.op == "get_attr":
            value = _resolve(model, node.target)
            if not isinstance(value, torch.Tensor):
                raise GraphError(f"the model reads {node.target}, which is not a tensor")
            kind = "parameter" if isinstance(value, nn.Parameter) else "buffer"
            attrs[node.target] = {"kind": kind, "shape": list(value.shape), "dtype": _dtype_name(value.dtype)}
        nodes.append({"op": node.op, "target": _target_name(node), "args": _encode(list(node.args)),
                      "kwargs": _encode(dict(node.kwargs))["d"]})
    description = {"input_shape": list(input_shape), "layers": layers, "attributes": attrs, "nodes": nodes}
    rebuilt = portable(model, description)
    _check_round_trip(model, rebuilt, input_shape)
    return description, rebuilt.train(model.training)


def _dtype_name(dtype: torch.dtype) -> str:
    for k, v in DTYPES.items():
        if v == dtype:
            return k
    raise GraphError(f"a tensor of dtype {dtype} cannot be stored")


def _resolve(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@torch.no_grad()
def portable(model: nn.Module, description: dict) -> fx.GraphModule:
    """``build(description)`` holding ``model``'s own tensors (copied): the model as a file decodes it."""
    rebuilt = build(description)
    source = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    values = {k: source[k] if k in source else _resolve_or_none(model, k) for k in rebuilt.state_dict()}
    if missing := [k for k, v in values.items() if not isinstance(v, torch.Tensor)]:
        raise GraphError(f"the rebuilt graph has tensors the model lacks: {missing[:3]}")
    rebuilt.load_state_dict({k: v.detach().cpu() for k, v in values.items()})
    return rebuilt


def _resolve_or_none(model: nn.Module, target: str) -> Any:
    try:
        return _resolve(model, target)
    except AttributeError:
        return None


def _check_round_trip(model: nn.Module, rebuilt: fx.GraphModule, input_shape: tuple[int, ...]) -> None:
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    if any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters()):  # trained channels-last: compare
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # like with like (a deep random-init
        # net amplifies the rounding of another conv algorithm past any tolerance)
    was = model.training
    try:
        with torch.no_grad():
            want = model.eval()(x.to(device))
            got = rebuilt.eval()(x)
    except Exception as e:
        raise GraphError(f"the rebuilt graph does not run ({type(e).__name__}: {e})") from None
    finally:
        model.train(was)
    if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor) or want.shape != got.shape or \
            not torch.allclose(want.float().cpu(), got.float(), rtol=1e-4, atol=1e-4 * (1 + want.abs().max().item())):
        raise GraphError("the traced graph does not reproduce the model's outputs (the model's forward depends on "
                         "something fx cannot record, e.g. a Python-side branch or attribute)")


# --- building a model from a description ----------------------------------------------------------

def _decode(value: Any, nodes: list[fx.Node], depth: int = 0) -> Any:
    if depth > 20:
        raise GraphError("graph argument nested too deeply")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list):
        return [_decode(v, nodes, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        (tag, inner), = value.items()
        if tag == "n" and type(inner) is int and 0 <= inner < len(nodes):
            return nodes[inner]
        if tag == "t" and isinstance(inner, list):
            return tuple(_decode(v, nodes, depth + 1) for v in inner)
        if tag == "s" and isinstance(inner, list) and len(inner) == 3:
            return slice(*(_decode(v, nodes, depth + 1) for v in inner))
        if tag == "e" and inner == 1:
            return Ellipsis
        if tag == "dt" and inner in DTYPES:
            return DTYPES[inner]
        if tag == "f" and inner in ("inf", "-inf", "nan"):
            return float(inner)
        if tag == "d" and isinstance(inner, dict):
            return {k: _decode(v, nodes, depth + 1) for k, v in inner.items()}
    raise GraphError(f"malformed graph argument {str(value)[:60]}")


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path or len(path) > 512 or \
            not all(_NAME.match(p) and not hasattr(fx.GraphModule, p) for p in path.split(".")):
        raise GraphError(f"bad attribute path {str(path)[:60]!r} in the model graph")
    return path


def _check_value(value: Any, depth: int = 0) -> None:
    """A layer argument: numbers, booleans, allowed words, or short lists of them."""
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not -(1 << 24) <= value <= 1 << 24:
            raise GraphError(f"layer argument {value} out of range")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GraphError("layer argument is not finite")
        return
    if isinstance(value, str) and value in WORDS:
        return
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], list) and depth == 0 and \
            len(value["t"]) <= 8:
        for v in value["t"]:
            _check_value(v, 1)
        return
    if isinstance(value, list) and depth == 0 and len(value) <= 8:
        for v in value:
            _check_value(v, 1)
        return
    raise GraphError(f"layer argument {str(value)[:40]!r} is not allowed")


def _layer_spec(name: str, entry: object) -> tuple[type[nn.Module], dict]:
    """A layer entry's class and decoded arguments, every argument checked."""
    if not isinstance(entry, dict) or set(entry) != {"type", "args"} or not isinstance(entry["type"], str) or \
            entry["type"] not in LAYERS or not isinstance(entry["args"], dict):
        kind = entry.get("type") if isinstance(entry, dict) else None
        raise GraphError(f"layer {name}: type {str(kind)[:40]!r} is not one a .slz graph allows")
    spec = LAYERS[entry["type"]]
    if not set(entry["args"]) <= set(spec.fields) | optional_args(spec.cls):  # an omitted one: PyTorch's default
        raise GraphError(f"layer {name}: arguments {sorted(entry['args'])} are not among {entry['type']}'s "
                         f"{sorted(set(spec.fields) | optional_args(spec.cls))}")
    for v in entry["args"].values():
        _check_value(v)
    args = {k: _decode(v, []) for k, v in entry["args"].items()}
    dims = int(spec.cls.__name__[-2]) if issubclass(spec.cls, SPATIAL) else 0
    for key, low in (SPATIAL_MINIMUM if dims else {}).items():
        # what PyTorch's meta kernels accept and its CPU kernels (or an exporter) refuse
        values = args.get(key)
        if isinstance(values, (list, tuple)) and len(values) != dims:
            raise GraphError(f"layer {name}: {key} needs {dims} numbers or one, not {len(values)}")
        values = values if isinstance(values, (list, tuple)) else [values]
        if any(isinstance(v, (int, float)) and not isinstance(v, bool) and v < low for v in values):
            raise GraphError(f"layer {name}: {key} below {low}")
    return spec.cls, args


SPATIAL_MINIMUM = {"kernel_size": 1, "stride": 1, "dilation": 1, "padding": 0, "output_padding": 0}
SPATIAL = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)


def _make_layer(name: str, cls: type[nn.Module], args: dict) -> nn.Module:
    """The layer on the meta device (shapes only: counted by ``_sizes``, then given memory by ``_zeros``)."""
    try:
        with torch.device("meta"):
            return cls(**args)
    except Exception as e:
        raise GraphError(f"layer {name}: {cls.__name__} rejects its arguments ({type(e).__name__})") from None


def _zeros(module: nn.Module) -> nn.Module:
    """A layer made on the meta device, given zero-filled memory: its values come from the file, so the
    random initialisation of a CPU-made layer (seconds for a large one) is skipped."""
    for sub in module.modules():  # not ``to_empty``: it imports sympy (seconds, for every file read)
        for name, p in list(sub._parameters.items()):
            if p is not None:
                sub._parameters[name] = nn.Parameter(torch.zeros(p.shape, dtype=p.dtype), p.requires_grad)
        for name, b in list(sub._buffers.items()):
            if b is not None:
                sub._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)
    return module


def _sizes(layers: dict[str, nn.Module], attrs: dict) -> int:
    """Elements every layer (made on the meta device: nothing allocated) and attribute will allocate."""
    total = sum(t.numel() for m in layers.values() for t in (*m.parameters(), *m.buffers()))
    for name, entry in attrs.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or len(shape) > 8 or \
                not all(type(s) is int and 0 <= s <= MAX_ELEMENTS for s in shape):
            raise GraphError(f"attribute {name}: bad shape")
        total += math.prod(shape)
    return total


def build(description: object) -> fx.GraphModule:
    """The ``GraphModule`` a description says, with zero-initialised tensors (see the module docstring)."""
    if not isinstance(description, dict) or not {"input_shape", "layers", "attributes", "nodes"} <= set(description):
        raise GraphError("the model graph is malformed (want input_shape, layers, attributes, nodes)")
    layers, attrs, entries = description["layers"], description["attributes"], description["nodes"]
    if not isinstance(layers, dict) or not isinstance(attrs, dict) or not isinstance(entries, list) \
            or len(entries) > MAX_NODES:
        raise GraphError("the model graph is malformed")
    for path in (*layers, *attrs):
        _check_path(path)
    shapes_only = {name: _make_layer(name, *_layer_spec(name, entry)) for name, entry in layers.items()}
    if (total := _sizes(shapes_only, attrs)) > MAX_ELEMENTS:
        raise GraphError(f"the model graph asks for {total:,} tensor elements (limit {MAX_ELEMENTS:,})")
    root: dict[str, Any] = {name: _zeros(m) for name, m in shapes_only.items()}
    for name, entry in attrs.items():
        if entry.get("kind") not in ("parameter", "buffer") or entry.get("dtype") not in DTYPES:
            raise GraphError(f"attribute {name}: bad kind or dtype")
        tensor = torch.zeros(entry["shape"], dtype=DTYPES[entry["dtype"]])
        root[name] = nn.Parameter(tensor) if entry["kind"] == "parameter" else tensor
    graph = fx.Graph()
    nodes: list[fx.Node] = []
    outputs = 0
    for i, entry in enumerate(entries):
        nodes.append(_add_node(graph, entry, nodes, root, i))
        outputs += entry["op"] == "output"
    if outputs != 1 or entries[-1]["op"] != "output" or sum(e["op"] == "placeholder" for e in entries) != 1:
        raise GraphError("the model graph needs exactly one input and one output, the output last")
    try:
        graph.lint()
        module = fx.GraphModule(root, graph, class_name="SlzGraph")
    except Exception as e:
        raise GraphError(f"the model graph is inconsistent ({type(e).__name__}: {e})") from None
    _check_runs(module, description["input_shape"])
    return module


MAX_INPUT = 1 << 24  # elements of one stored input image


MAX_ACTIVATION = 1 << 28  # elements of any tensor a batch of two makes on its way through a stored graph


class _SizeLimit(torch.overrides.TorchFunctionMode):
    """Refuses a graph whose forward pass makes a tensor past ``MAX_ACTIVATION`` elements (a padding of
    2^24 runs on meta tensors, then asks a real one for petabytes)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.numel() > MAX_ACTIVATION:
                raise GraphError(f"the model graph makes a tensor of {t.numel():,} elements for a batch of two "
                                 f"(limit {MAX_ACTIVATION:,})")
        return out


def _check_runs(module: fx.GraphModule, input_shape: object) -> None:
    """Prove a rebuilt graph runnable before anyone loads it: a forward pass of a batch of two on meta
    tensors (shapes only, no memory, no arithmetic) from the stored input shape. A layer called with an
    argument it does not take, a stride of 0, a kernel larger than its input, a node fed an integer where
    a tensor goes: each is refused here in one line, not later in ``eval`` with a traceback."""
    if not isinstance(input_shape, list) or not 1 <= len(input_shape) <= 4 or \
            not all(type(d) is int and d >= 1 for d in input_shape) or math.prod(input_shape) > MAX_INPUT:
        raise GraphError("the model graph's input_shape is not 1 to 4 positive sizes within 2^24 elements")
    state = {name: torch.empty_like(t, device="meta") for name, t in (*module.named_parameters(),
                                                                      *module.named_buffers())}
    try:
        with torch.no_grad(), _SizeLimit():
            out = torch.func.functional_call(module.eval(), state, (torch.empty(2, *input_shape, device="meta"),))
    except GraphError:
        raise
    except Exception as e:  # whatever a hostile graph makes PyTorch raise is the file's fault
        raise GraphError(f"the model graph does not run on its input shape {tuple(input_shape)} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != 2:
        raise GraphError("the model graph's output is not a (batch, classes) tensor")


def _add_node(graph: fx.Graph, entry: object, nodes: list[fx.Node], root: dict, i: int) -> fx.Node:
    if not isinstance(entry, dict) or set(entry) != {"op", "target", "args", "kwargs"} or \
            not isinstance(entry["args"], list) or not isinstance(entry["kwargs"], dict):
        raise GraphError(f"graph node {i} is malformed")
    op, target = entry["op"], entry["target"]
    if not isinstance(op, str) or not isinstance(target, str):
        raise GraphError(f"graph node {i} is malformed")
    args = tuple(_decode(entry["args"], nodes))
    kwargs = _decode({"d": entry["kwargs"]}, nodes)
    if op == "placeholder":
        return graph.placeholder("x")
    if op == "output":
        return graph.output(args[0] if args else None)
    if op == "call_module" and target in root and isinstance(root[target], nn.Module):
        return graph.call_module(target, args, kwargs)
    if op == "get_attr" and target in root and isinstance(root[target], torch.Tensor):
        return graph.get_attr(target)
    if op == "call_function" and target in FUNCTIONS:
        return graph.call_function(FUNCTIONS[target], args, kwargs)
    if op == "call_method" and target in METHODS:
        return graph.call_method(target, args, kwargs)
    raise GraphError(f"graph node {i}: operator {str(op)[:20]} {str(target)[:60]!r} is not one a .slz graph allows")
