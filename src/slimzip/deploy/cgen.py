"""C99 from a lowered program: the stored weights as C arrays (codebooks, bit-packed codes and gap
symbols, uint8 or float32 small tensors), one static float arena planned by liveness, and one function
``int NAME_predict(const float *input, float *logits)`` calling small kernels. No heap, libc only."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .lower import Op, Program
from .stored import Stream, Vector

KERNEL_FILE = Path(__file__).with_name("kernels.c")
IN_PLACE = {"unary", "batchnorm", "binary"}  # kernels that may write over their first input
PAD = 4  # bytes after each packed stream: the bit reader loads four bytes at a time


@dataclass(frozen=True)
class CModel:
    name: str
    source: str
    header: str
    arena_bytes: int  # the static activation buffer
    weight_bytes: int  # the weight arrays (codebooks, packed streams, small tensors)
    input_size: int
    output_size: int


def _kernels() -> dict[str, tuple[str, list[str]]]:
    """kernels.c's sections: name -> (code, the sections it needs)."""
    parts = re.split(r"^/\*@ ([^*]+)\*/\n", KERNEL_FILE.read_text(), flags=re.M)
    out = {}
    for head, code in zip(parts[1::2], parts[2::2]):
        name, *deps = head.split()
        out[name] = (code, deps)
    return out


def _f(v: float) -> str:
    """An exact C99 float literal (hexadecimal)."""
    return float(np.float32(v)).hex() + "f"


def _array(ctype: str, name: str, items: list[str]) -> str:
    lines = [", ".join(items[i:i + 12]) for i in range(0, len(items), 12)] or ["0"]
    return f"static const {ctype} {name}[{max(len(items), 1)}] = {{\n    " + ",\n    ".join(lines) + "\n};\n"


def _dense(s: Stream) -> np.ndarray:
    flat = np.zeros(math.prod(s.shape), dtype=np.float32)
    flat[s.positions()] = s.codebook[s.codes]
    return flat


def pack_bits(symbols: np.ndarray, width: int) -> bytes:
    """Symbols as ``width``-bit fields, least significant bit first, then PAD zero bytes."""
    bits = ((symbols.astype(np.uint64)[:, None] >> np.arange(width, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little").tobytes() + bytes(PAD)


class Writer:
    def __init__(self, program: Program, name: str):
        self.p, self.name = program, name
        self.decls: list[str] = []
        self.ids: dict[tuple[str, str], str] = {}
        self.weight_bytes = 0
        self.kernels: set[str] = {"header"}

    def weight(self, name: str | None, stream: bool = False) -> str:
        """``&Wk`` for a stored tensor (a stream_t where ``stream`` and it is one, else a vec_t), NULL for
        none."""
        if name is None:
            return "NULL"
        stored = self.p.weights[name]
        if isinstance(stored, Stream) and not stream:  # a shared bias or BatchNorm tensor: dense
            stored, name = Vector(stored.shape, values=_dense(stored)), name + " (dense)"
        if ("w", name) not in self.ids:
            cid = f"W{len(self.ids)}"
            self.ids[("w", name)] = cid
            self.decls.append(f"/* {name} {list(stored.shape)} */\n" + (self._stream(cid, stored) if isinstance(
                stored, Stream) else self._vector(cid, stored)))
        return "&" + self.ids[("w", name)]

    def _stream(self, cid: str, s: Stream) -> str:
        self.kernels.add("stream")
        s = s.narrowest()
        codes, gaps = pack_bits(s.codes, s.code_bits), pack_bits(s.gaps, s.index_bits)
        self.weight_bytes += 4 * len(s.codebook) + len(codes) + len(gaps)
        return (_array("float", f"{cid}_book", [_f(v) for v in s.codebook])
                + _array("uint8_t", f"{cid}_codes", [str(b) for b in codes])
                + _array("uint8_t", f"{cid}_gaps", [str(b) for b in gaps])
                + f"static const stream_t {cid} = {{{cid}_book, {cid}_codes, {cid}_gaps, {len(s.gaps)}u, "
                  f"{s.code_bits}u, {s.index_bits}u}};\n")

    def _vector(self, cid: str, v: Vector) -> str:
        text, f, q = "", "NULL", "NULL"
        if v.values is not None:
            text, f = _array("float", f"{cid}_f", [_f(x) for x in v.values.reshape(-1)]), f"{cid}_f"
            self.weight_bytes += 4 * v.values.size
        elif v.q is not None:
            text, q = _array("uint8_t", f"{cid}_q", [str(x) for x in v.q.reshape(-1)]), f"{cid}_q"
            self.weight_bytes += v.q.size + 8
        else:
            self.weight_bytes += 4
        return text + f"static const vec_t {cid} = {{{f}, {q}, {_f(v.lo)}, {_f(v.step)}}};\n"

    def const(self, name: str) -> str:
        """A float array of a tensor the graph reads directly (a layer scale, say)."""
        if ("c", name) not in self.ids:
            cid = f"C{len(self.ids)}"
            self.ids[("c", name)] = cid
            dense = self.p.weights[name].dense().reshape(-1)
            self.weight_bytes += 4 * dense.size
            self.decls.append(_array("float", cid, [_f(x) for x in dense]))
        return self.ids[("c", name)]


# --- memory ----------------------------------------------------------------------------------------

def _root(program: Program, v: int) -> int:
    while program.values[v].alias is not None:
        v = program.values[v].alias
    return v


def plan_memory(program: Program) -> tuple[dict[int, int], dict[int, int], int]:
    """(value -> the value owning its memory, owner -> offset in floats, arena floats): first fit in op
    order, a buffer freed after its last reader; elementwise ops write over an input that dies with them."""
    owner = {v: _root(program, v) for v in range(len(program.values))}
    last: dict[int, int] = {}
    for i, op in enumerate(program.ops):
        for v in op.ins:
            last[owner[v]] = i
    last[owner[program.output]] = len(program.ops)
    offsets: dict[int, int] = {}
    live: dict[int, tuple[int, int]] = {}  # owner -> (offset, size)
    for i, op in enumerate(program.ops):
        for o in [o for o in live if last.get(o, -1) < i]:
            del live[o]
        first = owner[op.ins[0]] if op.ins else None
        if (op.kind in IN_PLACE and first in live and last.get(first) == i
                and program.values[first].numel == program.values[op.out].numel):
            owner[op.out] = first
            last[first] = max(last.get(first, i), last.get(op.out, i))
            _retarget(program, owner, op.out, first)
            continue
        size = program.values[op.out].numel
        offsets[op.out] = _first_fit(sorted(live.values()), size)
        live[op.out] = (offsets[op.out], size)
    for v in range(len(program.values)):  # values viewing an op's output follow it
        owner[v] = owner[_root(program, v)] if program.values[v].alias is not None else owner[v]
    arena = max((offsets[o] + program.values[o].numel for o in offsets), default=0)
    return owner, offsets, arena


def _retarget(program: Program, owner: dict[int, int], value: int, to: int) -> None:
    for v in range(len(program.values)):
        if owner[v] == value:
            owner[v] = to


def _first_fit(taken: list[tuple[int, int]], size: int) -> int:
    at = 0
    for offset, length in taken:
        if offset - at >= size:
            return at
        at = max(at, offset + length)
    return at


# --- code ------------------------------------------------------------------------------------------

class Emitter(Writer):
    def __init__(self, program: Program, name: str):
        super().__init__(program, name)
        self.owner, self.offsets, self.arena = plan_memory(program)
        self.lines: list[str] = []

    def ptr(self, v: int) -> str:
        o = self.owner[v]
        if o == 0:
            return "input"
        if self.p.values[o].const is not None:
            return self.const(self.p.values[o].const)
        return f"arena + {self.offsets[o]}"

    def shape(self, v: int) -> tuple[int, ...]:
        return self.p.values[v].shape

    def emit(self, op: Op) -> None:
        self.kernels.add(op.kind)
        EMIT[op.kind](self, op)


def _conv(e: Emitter, op: Op) -> None:
    g = f"G{op.out}"
    e.decls.append(f"static const conv_t {g} = {{{', '.join(str(int(x)) for x in op.attrs['geometry'])}}};\n")
    w = e.p.weights[op.attrs["weight"]]
    x, y, bias = e.ptr(op.ins[0]), e.ptr(op.out), e.weight(op.attrs["bias"])
    if isinstance(w, Stream):
        e.kernels.add("conv_stream")
        e.lines.append(f"conv_stream(&{g}, {x}, {y}, {e.weight(op.attrs['weight'], stream=True)}, {bias});")
    else:
        e.kernels.add("conv_dense")
        e.lines.append(f"conv_dense(&{g}, {x}, {y}, {e.weight(op.attrs['weight'])}, {math.prod(w.shape)}u, {bias});")


def _batchnorm(e: Emitter, op: Op) -> None:
    shape = e.shape(op.ins[0])
    a = op.attrs
    e.lines.append(f"batchnorm({e.ptr(op.ins[0])}, {e.ptr(op.out)}, {shape[0]}, {math.prod(shape[1:])}, "
                   f"{e.weight(a['weight'])}, {e.weight(a['bias'])}, {e.weight(a['running_mean'])}, "
                   f"{e.weight(a['running_var'])}, {_f(a['eps'])});")


def _unary(e: Emitter, op: Op) -> None:
    a = op.attrs
    e.lines.append(f"unary({a['fn']}, {e.ptr(op.ins[0])}, {e.ptr(op.out)}, {e.p.values[op.out].numel}u, "
                   f"{_f(a['a'])}, {_f(a['b'])});")


def _pool(e: Emitter, op: Op) -> None:
    a = op.attrs
    (c, h, w), (_, oh, ow) = e.shape(op.ins[0]), e.shape(op.out)
    p = [c, h, w, oh, ow, *a["kernel"], *a["stride"], *a["padding"], *a["dilation"]]
    e.decls.append(f"static const int P{op.out}[13] = {{{', '.join(str(int(v)) for v in p)}}};\n")
    e.lines.append(f"pool2d({int(a['max'])}, {e.ptr(op.ins[0])}, {e.ptr(op.out)}, P{op.out}, {int(a['count_pad'])});")


def _adaptive(e: Emitter, op: Op) -> None:
    (c, h, w), out = e.shape(op.ins[0]), e.shape(op.out)
    oh, ow = out[1:] if len(out) == 3 else (1, 1)  # a mean without keepdim: (C,)
    e.lines.append(f"adaptive2d({int(op.attrs['max'])}, {e.ptr(op.ins[0])}, {e.ptr(op.out)}, {c}, {h}, {w}, {oh}, "
                   f"{ow});")


def _strides(shape: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Strides of ``shape`` broadcast against the 4-d ``out`` (0 along a broadcast axis)."""
    while len(shape) > 4 and shape[0] == 1:
        shape = shape[1:]
    shape = (1,) * (4 - len(shape)) + tuple(shape)
    strides, step = [], 1
    for d, o in zip(reversed(shape), reversed(out)):
        strides.append(step if d == o else 0)
        step *= d
    return strides[::-1]


def _binary(e: Emitter, op: Op) -> None:
    out = e.shape(op.out)
    if len(out) > 4:
        from .lower import UnsupportedOperator
        raise UnsupportedOperator(f"the C backend has no operator for a {len(out) + 1}-d elementwise operation")
    out4 = (1,) * (4 - len(out)) + out
    ptrs, strides, tensors = [], [], iter(op.ins)
    for k, (v, s) in enumerate(zip(op.attrs["order"], op.attrs["scalars"])):
        if s is None:
            t = next(tensors)
            ptrs.append(e.ptr(t))
            strides += _strides(e.shape(t), out4)
        else:
            e.decls.append(f"static const float S{op.out}_{k} = {_f(s)};\n")
            ptrs.append(f"&S{op.out}_{k}")
            strides += [0, 0, 0, 0]
    dims = [*out4, *strides]
    e.decls.append(f"static const int D{op.out}[12] = {{{', '.join(str(d) for d in dims)}}};\n")
    e.lines.append(f"binary({op.attrs['fn']}, {ptrs[0]}, {ptrs[1]}, {e.ptr(op.out)}, D{op.out});")


def _cat(e: Emitter, op: Op) -> None:
    dim, out = op.attrs["dim"], e.shape(op.out)
    outer, offset = math.prod(out[:dim]), 0
    for v in op.ins:
        inner = math.prod(e.shape(v)[dim:])
        e.lines.append(f"copy_block({e.ptr(op.out)} + {offset}, {e.ptr(v)}, {outer}u, {inner}u, "
                       f"{math.prod(out[dim:])}u);")
        offset += inner


def _place(e: Emitter, op: Op) -> None:
    a = op.attrs
    p = [*e.shape(op.ins[0]), *e.shape(op.out), a["stride"], len(a["src"])]
    e.decls.append(f"static const int P{op.out}[8] = {{{', '.join(str(int(v)) for v in p)}}};\n"
                   + _array("int", f"SRC{op.out}", [str(i) for i in a["src"]])
                   + _array("int", f"DST{op.out}", [str(i) for i in a["dst"]]))
    e.lines.append(f"place({e.ptr(op.ins[0])}, {e.ptr(op.out)}, P{op.out}, SRC{op.out}, DST{op.out});")


EMIT = {"place": _place, "conv": _conv, "batchnorm": _batchnorm, "unary": _unary, "pool": _pool, "adaptive": _adaptive,
        "binary": _binary, "cat": _cat}


def _kernel_code(used: set[str]) -> str:
    table, order, seen = _kernels(), [], set()

    def need(name: str) -> None:
        if name not in seen:
            seen.add(name)
            for dep in table[name][1]:
                need(dep)
            order.append(name)
    for name in [n for n in table if n in used]:
        need(name)
    return "".join(table[n][0] for n in order)


def generate(program: Program, name: str, about: str = "") -> CModel:
    """The C source and header of ``program`` as ``NAME.c`` / ``NAME.h``."""
    e = Emitter(program, name)
    for op in program.ops:
        e.emit(op)
    n_in, n_out = program.values[0].numel, program.values[program.output].numel
    guard = name.upper()
    header = (f"/* {name}: {about} */\n#ifndef {guard}_H\n#define {guard}_H\n\n"
              f"#define {guard}_INPUT_SIZE {n_in}  /* {' x '.join(map(str, program.values[0].shape))}, CHW */\n"
              f"#define {guard}_OUTPUT_SIZE {n_out}\n\n"
              f"/* Logits of one image (normalized as in training); returns 0. Not reentrant (one static arena). */\n"
              f"int {name}_predict(const float *input, float *logits);\n\n#endif\n")
    body = "\n    ".join(e.lines)
    source = (f"/* {name}: generated by slimzip. {about} */\n#include \"{name}.h\"\n"
              + _kernel_code(e.kernels) + "\n" + "".join(e.decls)
              + f"\nstatic float arena[{max(e.arena, 1)}];\n\n"
              f"int {name}_predict(const float *input, float *logits) {{\n    {body}\n"
              f"    memcpy(logits, {e.ptr(program.output)}, {n_out}u * sizeof(float));\n    return 0;\n}}\n")
    return CModel(name, source, header, 4 * max(e.arena, 1), e.weight_bytes, n_in, n_out)
