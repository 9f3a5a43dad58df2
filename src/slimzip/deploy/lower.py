"""A model's torch.fx graph as a short list of plain operations over tensors of known shapes (batch 1),
the form the C writer prints. Every layer, function and method is looked up in a table; anything else is
refused by name. Views (flatten, reshape, dropout and identity in eval mode) become aliases, not copies."""

from __future__ import annotations

import inspect
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import SlimzipError
from .stored import Stored, dense_vector


@dataclass
class Value:
    shape: tuple[int, ...]  # without the batch axis
    alias: int | None = None  # the value whose memory this one views
    const: str | None = None  # a tensor the graph reads (float32 in the weights)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Op:
    kind: str
    out: int
    ins: list[int]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Program:
    """Value 0 is the input; ``output`` the logits."""

    values: list[Value]
    ops: list[Op]
    output: int
    weights: dict[str, Stored]


class UnsupportedOperator(SlimzipError):
    pass


UNARY = {"relu": "RELU", "relu6": "RELU6", "hardswish": "HSWISH", "hardsigmoid": "HSIGMOID", "silu": "SILU",
         "sigmoid": "SIGMOID", "tanh": "TANH", "leaky_relu": "LEAKY", "hardtanh": "HARDTANH"}
UNARY_MODULES = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid",
                 nn.SiLU: "silu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.LeakyReLU: "leaky_relu",
                 nn.Hardtanh: "hardtanh"}
VIEWS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten)
BINARY = {operator.add: "ADD", operator.iadd: "ADD", torch.add: "ADD", operator.sub: "SUB", operator.isub: "SUB",
          torch.sub: "SUB", operator.mul: "MUL", operator.imul: "MUL", torch.mul: "MUL", operator.truediv: "DIV",
          operator.itruediv: "DIV", torch.div: "DIV"}
BINARY_METHODS = {"add": "ADD", "add_": "ADD", "sub": "SUB", "mul": "MUL", "mul_": "MUL", "div": "DIV"}
VIEW_METHODS = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "view_as", "reshape_as"}
SCALAR_METHODS = {"size", "dim"}


def _example_results(gm: fx.GraphModule, shape: tuple[int, ...]) -> dict[fx.Node, Any]:
    """Every node's value on one random input (shapes, and the ints a graph computes from them)."""
    results: dict[fx.Node, Any] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            results[n] = super().run_node(n)
            return results[n]

    with torch.no_grad():
        Recorder(gm.eval()).run(torch.randn(1, *shape))
    return results


class Lowerer:
    def __init__(self, gm: fx.GraphModule, weights: dict[str, Stored], shape: tuple[int, ...]):
        self.gm, self.weights = gm, dict(weights)
        self.modules = dict(gm.named_modules())
        self.module_handlers = {**MODULE_HANDLERS, **_registry_modules()}
        self.results = _example_results(gm, shape)
        self.values: list[Value] = [Value(tuple(shape))]
        self.ops: list[Op] = []
        self.env: dict[fx.Node, Any] = {}  # node -> value id (a tensor) or a Python constant

    def new(self, node: fx.Node, kind: str, ins: list[int], **attrs: Any) -> int:
        self.values.append(Value(_shape(self.results[node], node)))
        self.ops.append(Op(kind, len(self.values) - 1, ins, attrs))
        return len(self.values) - 1

    def alias(self, node: fx.Node, of: int) -> int:
        self.values.append(Value(_shape(self.results[node], node), alias=of))
        return len(self.values) - 1

    def tensor(self, arg: Any) -> int:
        v = self.env.get(arg) if isinstance(arg, fx.Node) else None
        if not isinstance(v, int) or isinstance(v, bool) or not isinstance(self.results.get(arg), torch.Tensor):
            raise UnsupportedOperator(f"expected a tensor, got {arg!r}")
        return v

    def weight(self, name: str, module: nn.Module | None = None, attr: str = "") -> str | None:
        """The stored tensor's name (None: the layer has no such tensor)."""
        if name not in self.weights:
            tensor = getattr(module, attr, None) if module is not None else None
            if tensor is None:
                return None
            self.weights[name] = dense_vector(tensor)
        return name

    def run(self) -> Program:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = 0
            elif node.op == "output":
                output = self.tensor(node.args[0][0] if isinstance(node.args[0], (tuple, list)) else node.args[0])
            else:
                self.env[node] = self.lower(node)
        return Program(self.values, self.ops, output, self.weights)

    def lower(self, node: fx.Node) -> Any:
        result = self.results[node]
        if not isinstance(result, torch.Tensor):  # sizes, shapes and the ints made of them: known at export
            return result
        if node.op == "get_attr":
            name = self.weight(node.target, self.gm, "") or _store_attr(self, node.target, result)
            self.values.append(Value(tuple(result.shape), const=name))
            return len(self.values) - 1
        handler = _handler(self, node)
        return handler(self, node)


def _store_attr(lowerer: Lowerer, name: str, tensor: torch.Tensor) -> str:
    lowerer.weights[name] = dense_vector(tensor)
    return name


def _shape(result: Any, node: fx.Node) -> tuple[int, ...]:
    if not isinstance(result, torch.Tensor) or result.ndim < 1 or result.shape[0] != 1:
        raise UnsupportedOperator(f"node {node.name} does not give one tensor with a batch axis")
    if not result.is_floating_point():
        raise UnsupportedOperator(f"node {node.name} gives a {result.dtype} tensor (the C model computes float)")
    return tuple(int(d) for d in result.shape[1:])


Handler = Callable[[Lowerer, fx.Node], int]


def _handler(lowerer: Lowerer, node: fx.Node) -> Handler:
    if node.op == "call_module":
        module = lowerer.modules[node.target]
        for cls, handler in lowerer.module_handlers.items():
            if type(module) is cls:
                return handler
        what = f"layer {type(module).__name__} ({node.target})"
    elif node.op == "call_function":
        if node.target in FUNCTION_HANDLERS:
            return FUNCTION_HANDLERS[node.target]
        what = f"function {getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', node.target)}"
    else:
        if node.target in METHOD_HANDLERS:
            return METHOD_HANDLERS[node.target]
        what = f"method .{node.target}()"
    raise UnsupportedOperator(f"the C backend has no operator for {what}")


# --- handlers ------------------------------------------------------------------------------------

def _args(fn: Callable, node: fx.Node, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """A call's arguments by name (Python functions: their signature; builtins: ``defaults``' order)."""
    try:
        bound = inspect.signature(fn).bind(*node.args, **node.kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)
    except (TypeError, ValueError):
        names = list(defaults or {})
        out = dict(defaults or {})
        out.update(zip(names, node.args))
        out.update(node.kwargs)
        return out


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv(lw: Lowerer, node: fx.Node) -> int:
    m = lw.modules[node.target]
    if m.padding_mode != "zeros":
        raise UnsupportedOperator(f"the C backend has no operator for Conv2d padding_mode={m.padding_mode!r}")
    kh, kw = m.kernel_size
    dh, dw = m.dilation
    if isinstance(m.padding, str):  # 'valid', or 'same' (stride 1): torch puts the odd pixel at the end
        ph, pw = (0, 0) if m.padding == "valid" else (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    else:
        ph, pw = m.padding
    x = lw.tensor(node.args[0])
    c, h, w = lw.values[x].shape
    out = lw.new(node, "conv", [x], weight=lw.weight(f"{node.target}.weight", m, "weight"),
                 bias=lw.weight(f"{node.target}.bias", m, "bias"))
    oc, oh, ow = lw.values[out].shape
    lw.ops[-1].attrs["geometry"] = [c, h, w, oc, oh, ow, kh, kw, *m.stride, ph, pw, dh, dw, m.groups]
    return out


def _linear(lw: Lowerer, node: fx.Node) -> int:
    m = lw.modules[node.target]
    x = lw.tensor(node.args[0])
    if lw.values[x].shape != (m.in_features,):
        raise UnsupportedOperator(f"the C backend has no operator for Linear on a {lw.values[x].shape} input "
                                  f"({node.target}; only (batch, features))")
    out = lw.new(node, "conv", [x], weight=lw.weight(f"{node.target}.weight", m, "weight"),
                 bias=lw.weight(f"{node.target}.bias", m, "bias"))
    lw.ops[-1].attrs["geometry"] = [m.in_features, 1, 1, m.out_features, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1]
    return out


def _batchnorm(lw: Lowerer, node: fx.Node) -> int:
    m = lw.modules[node.target]
    if m.running_mean is None:
        raise UnsupportedOperator(f"the C backend has no operator for BatchNorm without running statistics "
                                  f"({node.target})")
    names = {k: lw.weight(f"{node.target}.{k}", m, k) for k in ("weight", "bias", "running_mean", "running_var")}
    return lw.new(node, "batchnorm", [lw.tensor(node.args[0])], eps=float(m.eps), **names)


def _unary(name: str, a: float = 0.0, b: float = 0.0) -> Handler:
    def handler(lw: Lowerer, node: fx.Node) -> int:
        return lw.new(node, "unary", [lw.tensor(node.args[0])], fn=UNARY[name], a=a, b=b)
    return handler


def _unary_module(lw: Lowerer, node: fx.Node) -> int:
    m = lw.modules[node.target]
    name = UNARY_MODULES[type(m)]
    a, b = {"leaky_relu": (getattr(m, "negative_slope", 0.0), 0.0),
            "hardtanh": (getattr(m, "min_val", -1.0), getattr(m, "max_val", 1.0))}.get(name, (0.0, 0.0))
    return _unary(name, float(a), float(b))(lw, node)


def _leaky_relu(lw: Lowerer, node: fx.Node) -> int:
    a = _args(F.leaky_relu, node)
    return _unary("leaky_relu", float(a["negative_slope"]))(lw, node)


def _hardtanh(lw: Lowerer, node: fx.Node) -> int:
    a = _args(F.hardtanh, node)
    return _unary("hardtanh", float(a["min_val"]), float(a["max_val"]))(lw, node)


def _view(lw: Lowerer, node: fx.Node) -> int:
    return lw.alias(node, lw.tensor(node.args[0]))


def _pool(lw: Lowerer, node: fx.Node, kind: str, a: dict[str, Any]) -> int:
    x = lw.tensor(a["input"])
    if len(lw.values[x].shape) != 3:
        raise UnsupportedOperator(f"the C backend has no operator for {kind} pooling on a {lw.values[x].shape} input")
    if a.get("return_indices") or a.get("divisor_override"):
        raise UnsupportedOperator(f"the C backend has no operator for {kind} pooling with indices or a divisor")
    k = _pair(a["kernel_size"])
    s = _pair(a["stride"] if a.get("stride") not in (None, [], ()) else a["kernel_size"])
    return lw.new(node, "pool", [x], max=kind == "max", kernel=list(k), stride=list(s), padding=list(_pair(a["padding"])),
                  dilation=list(_pair(a.get("dilation", 1))), count_pad=bool(a.get("count_include_pad", True)))


def _pool_module(lw: Lowerer, node: fx.Node) -> int:
    m = lw.modules[node.target]
    kind = "max" if isinstance(m, nn.MaxPool2d) else "avg"
    a = {k: getattr(m, k, None) for k in ("kernel_size", "stride", "padding", "dilation", "count_include_pad",
                                          "return_indices", "divisor_override")}
    a["dilation"] = a["dilation"] or 1
    a["count_include_pad"] = True if a["count_include_pad"] is None else a["count_include_pad"]
    return _pool(lw, node, kind, {**a, "input": node.args[0]})


def _pool_function(kind: str, fn: Callable) -> Handler:
    return lambda lw, node: _pool(lw, node, kind, _args(fn, node))


def _adaptive(kind: str) -> Handler:
    def handler(lw: Lowerer, node: fx.Node) -> int:
        x = lw.tensor(node.args[0])
        if len(lw.values[x].shape) != 3:
            raise UnsupportedOperator(f"the C backend has no operator for adaptive pooling on {lw.values[x].shape}")
        return lw.new(node, "adaptive", [x], max=kind == "max")
    return handler


def _mean(lw: Lowerer, node: fx.Node) -> int:
    a = _args(torch.mean, node, {"input": None, "dim": None, "keepdim": False})
    x = lw.tensor(a["input"])
    rank = len(lw.values[x].shape) + 1
    dims = a["dim"] if isinstance(a["dim"], (list, tuple)) else [a["dim"]]
    if rank != 4 or sorted(d % rank for d in dims if isinstance(d, int)) != [2, 3]:
        raise UnsupportedOperator("the C backend has no operator for a mean over other axes than the spatial ones")
    return lw.new(node, "adaptive", [x], max=False)


def _binary(kind: str) -> Handler:
    def handler(lw: Lowerer, node: fx.Node) -> int:
        a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
            raise UnsupportedOperator(f"the C backend has no operator for {node.target} with alpha")
        ins, scalars = [], []
        for arg in (a, b):
            if isinstance(arg, fx.Node) and isinstance(lw.results.get(arg), torch.Tensor):
                ins.append(lw.tensor(arg))
                scalars.append(None)
            elif _number(lw.env.get(arg, arg) if isinstance(arg, fx.Node) else arg):
                ins.append(-1)
                scalars.append(float(lw.env.get(arg, arg) if isinstance(arg, fx.Node) else arg))
            else:
                raise UnsupportedOperator(f"the C backend has no operator for {node.target} on {arg!r}")
        if -1 not in ins:
            scalars = [None, None]
        return lw.new(node, "binary", [i for i in ins if i >= 0], fn=kind, order=ins, scalars=scalars)
    return handler


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _cat(lw: Lowerer, node: fx.Node) -> int:
    a = _args(torch.cat, node, {"tensors": None, "dim": 0})
    ins = [lw.tensor(t) for t in a["tensors"]]
    rank = len(lw.values[ins[0]].shape) + 1
    dim = a["dim"] % rank
    if dim == 0:
        raise UnsupportedOperator("the C backend has no operator for a concatenation along the batch axis")
    return lw.new(node, "cat", ins, dim=dim - 1)


def _place(lw: Lowerer, node: fx.Node) -> int:
    """The CIFAR ResNets' option-A shortcut: out[dst] = x[src, ::s, ::s], zeros elsewhere."""
    m = lw.modules[node.target]
    return lw.new(node, "place", [lw.tensor(node.args[0])], stride=int(m.stride), src=[int(i) for i in m.src],
                  dst=[int(i) for i in m.dst])


def _registry_modules() -> dict[type, Handler]:
    """Layers of slimzip's own registry models (imported when a model is lowered)."""
    from ..models.resnet import PadShortcut

    return {PadShortcut: _place}


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` as a GraphModule whose leaves are torch.nn's layers and the registry's own."""
    leaves = tuple(_registry_modules())

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.GraphModule(model, Tracer().trace(model.eval()))
    except Exception as e:  # fx fails in many ways on arbitrary Python
        raise UnsupportedOperator(f"cannot trace the model with torch.fx ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


MODULE_HANDLERS: dict[type, Handler] = {
    nn.Conv2d: _conv, nn.Linear: _linear, nn.BatchNorm1d: _batchnorm, nn.BatchNorm2d: _batchnorm,
    **{cls: _unary_module for cls in UNARY_MODULES}, **{cls: _view for cls in VIEWS},
    nn.MaxPool2d: _pool_module, nn.AvgPool2d: _pool_module,
    nn.AdaptiveAvgPool2d: _adaptive("avg"), nn.AdaptiveMaxPool2d: _adaptive("max"),
}
FUNCTION_HANDLERS: dict[Any, Handler] = {
    **{getattr(F, n): _unary(n) for n in ("relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "tanh")},
    torch.relu: _unary("relu"), torch.sigmoid: _unary("sigmoid"), torch.tanh: _unary("tanh"),
    F.leaky_relu: _leaky_relu, F.hardtanh: _hardtanh, F.dropout: _view, torch.flatten: _view,
    torch.reshape: _view, torch.squeeze: _view, torch.unsqueeze: _view,
    F.max_pool2d: _pool_function("max", F.max_pool2d), F.avg_pool2d: _pool_function("avg", F.avg_pool2d),
    F.adaptive_avg_pool2d: _adaptive("avg"), F.adaptive_max_pool2d: _adaptive("max"), torch.mean: _mean,
    torch.cat: _cat, **{fn: _binary(kind) for fn, kind in BINARY.items()},
}
METHOD_HANDLERS: dict[str, Handler] = {
    **{n: _view for n in VIEW_METHODS}, "mean": _mean, "relu": _unary("relu"), "relu_": _unary("relu"),
    "sigmoid": _unary("sigmoid"), "tanh": _unary("tanh"),
    **{n: _binary(kind) for n, kind in BINARY_METHODS.items()},
}


def lower(gm: fx.GraphModule, weights: dict[str, Stored], input_shape: tuple[int, ...]) -> Program:
    """The graph as operations (raises UnsupportedOperator naming the first operator the C backend lacks)."""
    return Lowerer(gm, weights, tuple(input_shape)).run()
