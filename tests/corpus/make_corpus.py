"""Make the reader's corpus: valid .slz files (one per coder and model kind) and invalid ones, each
breaking one rule of docs/FORMAT.md, with every file's expected verdict in ``verdicts.json``.

A valid file's verdict carries ``tensors_sha256``: SHA-256 over the decoded tensors in tensor-table
order, each as its UTF-8 name, a NUL byte, then its values as little-endian float32 in row-major order.
A reader written from docs/FORMAT.md alone should decode each valid file to the same hash and refuse
every invalid one (``reason`` is the substring of slimzip's own message; another reader's wording may
differ). ``tests/test_corpus.py`` holds slimzip's reader to it.

Usage: python tests/corpus/make_corpus.py   (rewrites tests/corpus/valid, tests/corpus/rules, verdicts.json)
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from slimzip.codec import decode_model, encode_model, model_table
from slimzip.coding import RansCodec, fixed_bytes
from slimzip.compact import counts_to_plan, plan_form
from slimzip.container import (HEADER, MAGIC, TRAILER, decode_container, deflate_manifest, encode_container,
                               inflate_manifest)
from slimzip.deep_compression import CompressConfig
from slimzip.graph import describe, portable
from slimzip.models import create_model
from slimzip.sharing import WeightSharer
from slimzip.structured import ChannelPruner
from slimzip.unstructured import MagnitudePruner, apply_masks_

HERE = Path(__file__).resolve().parent


def tensors_sha256(model: nn.Module, container) -> str:
    """SHA-256 over the decoded tensors in tensor-table order (each: UTF-8 name, NUL, float32 LE values)."""
    state = model.state_dict()
    h = hashlib.sha256()
    for entry in model_table(container, model):
        h.update(entry["name"].encode() + b"\0")
        h.update(state[entry["name"]].detach().float().contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def _shared(model: nn.Module, sparsity: float, bits: tuple[int, int]) -> dict:
    masks = MagnitudePruner(sparsity=sparsity).fit(model).masks_
    apply_masks_(model, masks)
    return WeightSharer(bits_conv=bits[0], bits_fc=bits[1]).fit(model, masks).layers_


def _smooth_(model: nn.Module) -> nn.Module:
    """Each conv and linear weight a running sum along its last dimension (scaled so that a long row's sum
    stays near 1): neighbours share their sign, as in a trained kernel, so that version 8 codes them under its
    context model."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.cumsum(torch.randn_like(m.weight), dim=-1) / (3 * m.weight.shape[-1]))
    return model


def _long_row_net() -> nn.Module:
    """One linear layer whose rows are longer than version 8's context steps (``CONTEXT_STEPS``)."""
    return nn.Sequential(nn.Linear(2 ** 14 + 16, 2))


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def valid_files() -> dict[str, bytes]:
    """Small valid files: a user's graph model with each coder; registry models with a channel plan, an
    unfolded BatchNorm (no constant tensors) and a layer with no weight left (empty streams)."""
    torch.manual_seed(0)
    files = {}
    net = _small_net().eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
    graph = describe(net, (1, 8, 8))
    for coder in ("fixed", "huffman", "rans"):
        gm = portable(net, graph)
        layers = _shared(gm, 0.5, (2, 2))
        files[f"graph-{coder}.slz"] = encode_model(gm, {"graph": graph, "plan": {}}, layers, CompressConfig(coder=coder), version=3)
    model = create_model("lenet-5-bn")
    pruner = ChannelPruner(importance="l1", channel_ratio=0.5, scope="layer").fit(model, (1, 28, 28))
    model = pruner.transform(model, (1, 28, 28))
    layers = _shared(model, 0.8, (3, 3))
    spec = {"name": "lenet-5-bn", "kwargs": {}, "plan": pruner.plan_}
    files["lenet-5-bn-plan-auto.slz"] = encode_model(model, spec, layers, CompressConfig(coder="auto"), version=3)
    files["lenet-5-bn-plan-unfolded.slz"] = encode_model(model, spec, layers,
                                                         CompressConfig(coder="huffman", fold_bn=False), version=3)
    files["v4-lenet-5-bn-plan-auto.slz"] = encode_model(model, spec, layers, CompressConfig(coder="auto"), version=4)
    files["v5-lenet-5-bn-adaptive.slz"] = encode_model(model, spec, layers, CompressConfig(coder="adaptive"), version=5)
    files["v6-lenet-5-bn-plan-counts.slz"] = encode_model(model, spec, layers, CompressConfig(coder="auto"), version=6)
    files["v6-lenet-5-bn-uint8.slz"] = encode_model(model, spec, layers, CompressConfig(coder="auto", raw_dtype="uint8"),
                                                    version=6)
    files["v6-lenet-5-bn-packed-5.slz"] = encode_model(
        model, spec, layers, CompressConfig(coder="auto", raw_dtype="uint8", raw_bits=5), version=6)
    files["v7-lenet-5-bn-joint.slz"] = encode_model(
        model, spec, layers, CompressConfig(coder="auto", raw_dtype="uint8", raw_bits=5), version=7)
    files["v7-lenet-5-bn-rans.slz"] = encode_model(model, spec, layers, CompressConfig(coder="rans"), version=7)
    gm = portable(net, graph)
    files["v4-graph-huffman.slz"] = encode_model(gm, {"graph": graph, "plan": {}}, _shared(gm, 0.5, (3, 3)),
                                                 CompressConfig(coder="huffman"), version=4)
    files["v5-graph-auto.slz"] = encode_model(gm, {"graph": graph, "plan": {}}, _shared(gm, 0.5, (3, 3)),
                                              CompressConfig(coder="auto"), version=5)
    files["v6-graph-auto.slz"] = encode_model(gm, {"graph": graph, "plan": {}}, _shared(gm, 0.5, (3, 3)),
                                              CompressConfig(coder="auto"), version=6)
    files["v7-graph-joint.slz"] = encode_model(gm, {"graph": graph, "plan": {}}, _shared(gm, 0.5, (3, 3)),
                                               CompressConfig(coder="auto", raw_dtype="uint8"), version=7)
    model = create_model("lenet-300-100")
    with torch.no_grad():
        model.state_dict()["features.3.weight"].zero_()  # every weight of a layer pruned: empty streams
    layers = _shared(model, 0.97, (2, 2))
    for coder in ("huffman", "rans"):
        files[f"lenet-300-100-empty-layer-{coder}.slz"] = encode_model(
            model, {"name": "lenet-300-100", "kwargs": {}}, layers, CompressConfig(coder=coder, raw_dtype="float32"),
            version=3)
    files["v5-lenet-300-100-adaptive.slz"] = encode_model(model, {"name": "lenet-300-100", "kwargs": {}}, layers,
                                                          CompressConfig(coder="adaptive"), version=5)
    files["v7-lenet-300-100-empty-layer-joint.slz"] = encode_model(
        model, {"name": "lenet-300-100", "kwargs": {}}, layers, CompressConfig(coder="auto"), version=7)
    files.update(_v8_files())
    # informative and unknown top-level fields are ignored, in version 4 too
    files["v4-lenet-5-bn-with-config.slz"] = _manifest_edit(
        lambda m: m.update(config={"sparsity": 0.8}, metrics=[0.99], unknown="ignored"))(files["v4-lenet-5-bn-plan-auto.slz"])
    return files


def _v8_files() -> dict[str, bytes]:
    """Version 8: registry models whose weights follow their neighbours (code streams under the context model,
    beside adaptive members and sections of their own), and a graph model whose rows hold about 8,200 kept
    weights each (half of ``CONTEXT_STEPS``)."""
    torch.manual_seed(8)
    files = {}
    model = _smooth_(create_model("lenet-5-bn"))
    pruner = ChannelPruner(importance="l1", channel_ratio=0.5, scope="layer").fit(model, (1, 28, 28))
    model = pruner.transform(model, (1, 28, 28))
    spec = {"name": "lenet-5-bn", "kwargs": {}, "plan": pruner.plan_}
    files["v8-lenet-5-bn-context.slz"] = encode_model(model, spec, _shared(model, 0.6, (3, 3)),
                                                      CompressConfig(coder="auto", raw_dtype="uint8"), version=8)
    files["v8-lenet-5-bn-context-index-apart.slz"] = _index_apart(
        lambda: encode_model(model, spec, _shared(model, 0.6, (3, 3)), CompressConfig(coder="auto"), version=8))
    model = _smooth_(create_model("lenet-300-100"))
    files["v8-lenet-300-100-context.slz"] = encode_model(model, {"name": "lenet-300-100", "kwargs": {}},
                                                         _shared(model, 0.9, (4, 3)), CompressConfig(coder="auto"),
                                                         version=8)
    net = _smooth_(_long_row_net())
    graph = describe(net, (2 ** 14 + 16,))
    gm = portable(net, graph)
    files["v8-graph-long-rows.slz"] = encode_model(gm, {"graph": graph, "plan": {}}, _shared(gm, 0.5, (2, 2)),
                                                   CompressConfig(coder="auto"), version=8)
    return files


def _index_apart(write: Callable[[], bytes]) -> bytes:
    """``write()`` with every gap stream in a section of its own (the writer weighing no joint stream for them),
    so that a reader takes a context member's positions from its tensor's section."""
    from slimzip import codec

    weighed = codec.encode_positions
    codec.encode_positions = lambda positions, bits, coder, version, joint=False: weighed(positions, bits, coder,
                                                                                         version, False)
    try:
        return write()
    finally:
        codec.encode_positions = weighed


def _past_the_context_steps(blob: bytes) -> bytes:
    """A graph file's model written again with every weight kept: its rows' codes then take more steps than
    ``CONTEXT_STEPS``, which the writer is let past for this file only."""
    from slimzip import contexts

    c = decode_container(blob)
    gm = decode_model(c)
    steps, contexts.CONTEXT_STEPS = contexts.CONTEXT_STEPS, 2 ** 15
    try:
        return encode_model(gm, {"graph": c.manifest["model"]["graph"], "plan": {}}, _shared(gm, 0.0, (2, 2)),
                            CompressConfig(coder="auto"), version=8)
    finally:
        contexts.CONTEXT_STEPS = steps


def _context_row(edit: Callable[[list], None]) -> Callable[[bytes], bytes]:
    """The first shared row whose codes are a context member, edited by ``edit``."""
    return _manifest_edit(lambda m: edit(next(r for r in m["tensors"] if r[0] == "s" and r[3] == "context")))


# --- invalid files: one broken rule each, from a valid file -------------------------------------

def _parts(blob: bytes) -> tuple[dict, list[bytes], int]:
    """A file's manifest, sections and version (version 7: its payload cut by its rows, its table kept)."""
    c = decode_container(blob)
    if c.version >= 7:
        decode_model(c)
    return dict(c.manifest), list(c.sections), c.version


def _manifest_edit(edit: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def make(blob: bytes) -> bytes:
        manifest, sections, version = _parts(blob)
        edit(manifest)
        return encode_container(manifest, sections, version=version)
    return make


def _section_edit(key: str, edit: Callable[[bytes], bytes], coder: str | None = None) -> Callable[[bytes], bytes]:
    """Rewrite the first shared tensor's ``key`` section (with ``coder`` for that stream, if given)."""
    def make(blob: bytes) -> bytes:
        manifest, sections, version = _parts(blob)
        entry = next(e for e in manifest["tensors"] if e["encoding"] == "shared"
                     and (coder is None or e["coders"]["codes" if key == "codes" else "index"] == coder))
        sections[entry[key]] = edit(sections[entry[key]])
        return encode_container(manifest, sections, version=version)
    return make


def _raw_edit(edit: Callable[[bytearray], None]) -> Callable[[bytes], bytes]:
    """Edit the bytes, then put valid checksums back (so only the edited rule is broken)."""
    def make(blob: bytes) -> bytes:
        data = bytearray(blob)
        edit(data)
        mlen = struct.unpack_from("<I", data, 12)[0]
        struct.pack_into("<I", data, 16, zlib.crc32(bytes(data[20:20 + mlen])))
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(bytes(data[:-4])))
        return bytes(data)
    return make


def _manifest_bytes(transform: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Replace the stored (deflated) manifest by ``transform`` of its JSON text (which deflates it again
    with ``pack``, the version's own deflate), checksums recomputed."""
    def make(blob: bytes) -> bytes:
        _, version, flags, mlen, _ = HEADER.unpack_from(blob)
        body = inflate_manifest(blob[HEADER.size:HEADER.size + mlen], version)
        stored = transform(body, lambda text: deflate_manifest(text, version))
        rest = blob[HEADER.size + mlen:-TRAILER.size]
        head = HEADER.pack(MAGIC, version, flags, len(stored), zlib.crc32(stored))
        out = head + stored + rest
        return out + TRAILER.pack(zlib.crc32(out))
    return make


def _dup_key(body: bytes, pack) -> bytes:
    return pack(body.replace(b'{"config":', b'{"format":"slimzip-model","config":', 1))


def _first_shared(m: dict) -> dict:
    return next(e for e in m["tensors"] if e["encoding"] == "shared")


def _huffman_extra_padding(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] | 1]) if data else data


def _longer_mask(m: dict) -> None:
    """The first plan bitmask with a zero byte after its last kept channel (the same channels, longer)."""
    root = next(iter(m["model"]["plan"]))
    m["model"]["plan"][root] = base64.b64encode(base64.b64decode(m["model"]["plan"][root]) + b"\0").decode()


def _graph(m: dict) -> dict:
    return m["model"]["graph"]


def _layer(m: dict, name: str) -> dict:
    return _graph(m)["layers"][name]


def _tensor(m: dict, name: str) -> dict:
    return next(t for t in m["tensors"] if t["name"] == name)


def _nested(depth: int) -> dict:
    value: dict = {"d": {}}
    for _ in range(depth):
        value = {"d": {"a": value}}
    return value


def _v4_quantized(data: Callable[[int], bytes]) -> Callable[[bytes], bytes]:
    """The first raw (float16) row of a version-4 file as a quantized row whose section is ``data(numel)``."""
    def make(blob: bytes) -> bytes:
        manifest, sections, version = _parts(blob)
        taken = 0
        for i, row in enumerate(manifest["tensors"]):
            if row[0] == "r":
                manifest["tensors"][i], sections[taken] = ["q"], data(len(sections[taken]) // 2)
                break
            taken += {"r": 1, "q": 1, "s": 3, "c": 0}[row[0]]
        return encode_container(manifest, sections, version=version)
    return make


def _as_version(version: int) -> Callable[[bytes], bytes]:
    """A version-6-or-later file's manifest and sections declared (and deflated) as ``version``, its plan in
    that version's form."""
    def make(blob: bytes) -> bytes:
        manifest, sections, _ = _parts(blob)
        if "plan" in manifest["model"]:
            manifest["model"]["plan"] = plan_form(version)[0](counts_to_plan(manifest["model"]["plan"]))
        return encode_container(manifest, sections, version=version)
    return make


def _v6_packed(edit: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """The first packed row's section (one whose values end inside a byte) edited by ``edit``."""
    def make(blob: bytes) -> bytes:
        manifest, sections, version = _parts(blob)
        container = decode_container(blob)
        entry = next(e for e in model_table(container, decode_model(container))
                     if e["encoding"] == "packed" and math.prod(e["shape"]) * e["bits"] % 8)
        sections[entry["data"]] = edit(sections[entry["data"]])
        return encode_container(manifest, sections, version=version)
    return make


def _huffman_offsets(edit: Callable[[bytes, int], bytes]) -> Callable[[bytes], bytes]:
    """``edit(stream, where its block offsets start)`` of a Huffman stream."""
    return lambda d: edit(d, 4 + 3 * struct.unpack_from("<I", d)[0])


def _rans_contradicting(d: bytes) -> bytes:
    """The same symbols coded with a count table that moves one count from the most frequent symbol to the
    next: a well-formed stream whose decoded symbols its own table does not count."""
    import constriction

    n = struct.unpack_from("<I", d)[0]
    entries = [struct.unpack_from("<HI", d, 4 + 6 * i) for i in range(n)]
    used, counts = np.array([s for s, _ in entries]), np.array([c for _, c in entries])
    dense = np.searchsorted(used, RansCodec().decode(d, int(counts.sum()), int(used.max()) + 1)).astype(np.int32)
    lied = counts.copy()
    lied[np.argmax(counts)] -= 1
    lied[(np.argmax(counts) + 1) % n] += 1
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(dense, RansCodec._model(lied))
    table = struct.pack("<I", n) + b"".join(struct.pack("<HI", int(s), int(c)) for s, c in zip(used, lied))
    return table + coder.get_compressed().astype("<u4").tobytes()


def _v5_adaptive(edit: Callable[[bytes], bytes], stream: str = "codes") -> Callable[[bytes], bytes]:
    """Rewrite the ``stream`` (codes or index) section of the first shared row coded ``adaptive``."""
    def make(blob: bytes) -> bytes:
        manifest, sections, version = _parts(blob)
        taken = 0
        for row in manifest["tensors"]:
            if row[0] == "s" and row[3 if stream == "codes" else 4] == "adaptive":
                at = taken + (1 if stream == "codes" else 2)
                sections[at] = edit(sections[at])
                break
            taken += {"r": 1, "q": 1, "s": 3, "c": 0}[row[0]]
        return encode_container(manifest, sections, version=version)
    return make


def _fc1_every_weight_kept(index_coder: str) -> Callable[[bytes], bytes]:
    """LeNet-300-100's fc1 (235,200 weights) as every weight kept, its 16-bit gaps coded ``index_coder``
    (``adaptive`` or ``joint``: a model of 65,536 symbols per block, past ``ADAPTIVE_WORK``), fixed-width codes
    (zeros) in a section of their own; a gap section the row had stays, none is added."""
    names = sorted(k for k in create_model("lenet-300-100").state_dict() if not k.endswith("num_batches_tracked"))

    def make(blob: bytes) -> bytes:
        manifest, sections, version = _parts(blob)
        taken = 0
        for name, row in zip(names, manifest["tensors"]):  # rows in name order
            own = 3 - row[3:5].count("joint") if row[0] == "s" else {"r": 1, "q": 1, "c": 0, "p": 1}[row[0]]
            if name == "features.1.weight":
                numel = 300 * 784
                old, codes = sections[taken:taken + own], bytes(fixed_bytes(numel, row[1]))
                row[2:7] = [16, "fixed", index_coder, numel, numel]
                sections[taken:taken + own] = [old[0], codes] + (old[2:3] if index_coder != "joint" else [])
                break
            taken += own
        return encode_container(manifest, sections, version=version)
    return make


def _v7_joint(edit: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """The joint stream (a version-7 file's last section; in a file without one, its last tensor's) edited by
    ``edit``."""
    def make(blob: bytes) -> bytes:
        manifest, sections, version = _parts(blob)
        sections[-1] = edit(sections[-1])
        return encode_container(manifest, sections, version=version)
    return make


def _joint_padding(blob: bytes) -> bytes:
    """The last prior byte's padding bits set (the file holds a number of joint streams not a multiple of 4)."""
    manifest, sections, version = _parts(blob)
    streams = sum(row[3:5].count("joint") for row in manifest["tensors"] if row[0] == "s")
    assert 2 * streams % 8, "the source file's priors end on a byte"
    head, data = (2 * streams + 7) // 8, sections[-1]
    sections[-1] = data[:head - 1] + bytes([data[head - 1] | 1]) + data[head:]
    return encode_container(manifest, sections, version=version)


def _shared_row(m: dict) -> list:
    return next(r for r in m["tensors"] if r[0] == "s")


INVALID: dict[str, tuple[str, Callable[[bytes], bytes], str]] = {
    # name: (valid file it starts from, how it is broken, the reason slimzip gives)
    "bad-magic": ("graph-rans.slz", _raw_edit(lambda d: d.__setitem__(1, ord("X"))), "bad magic"),
    "truncated": ("graph-rans.slz", lambda b: b[:-7], "checksum"),
    "too-short": ("graph-rans.slz", lambda b: b[:23], "too short"),
    "version-99": ("graph-rans.slz", _raw_edit(lambda d: struct.pack_into("<H", d, 8, 99)), "version 99"),
    "version-1-constant": ("lenet-5-bn-plan-auto.slz", _raw_edit(lambda d: struct.pack_into("<H", d, 8, 1)),
                           "from format version 2"),
    "version-2-graph": ("graph-rans.slz", _raw_edit(lambda d: struct.pack_into("<H", d, 8, 2)),
                        "from format version 3"),
    "unknown-flag": ("graph-rans.slz", _raw_edit(lambda d: struct.pack_into("<H", d, 10, 3)), "unknown flags"),
    "file-crc": ("graph-rans.slz", lambda b: b[:-4] + bytes([b[-4] ^ 1]) + b[-3:], "file checksum"),
    "manifest-crc": ("graph-rans.slz", lambda b: b[:16] + bytes([b[16] ^ 1]) + b[17:-4] + TRAILER.pack(
        zlib.crc32(b[:16] + bytes([b[16] ^ 1]) + b[17:-4])), "manifest checksum"),
    "manifest-length": ("graph-rans.slz", _raw_edit(lambda d: struct.pack_into("<I", d, 12, len(d))),
                        "past the end"),
    "manifest-not-json": ("graph-rans.slz", _manifest_bytes(lambda body, pack: pack(body[:-1])), "not valid JSON"),
    "manifest-duplicate-key": ("graph-rans.slz", _manifest_bytes(_dup_key), "duplicate JSON key"),
    "manifest-nan": ("graph-rans.slz", _manifest_bytes(
        lambda body, pack: pack(body.replace(b'"format"', b'"x":NaN,"format"', 1))), "NaN"),
    "manifest-bytes-after-zlib": ("graph-rans.slz", _manifest_bytes(lambda body, pack: pack(body) + b"\0"),
                                  "after its zlib stream"),
    "manifest-not-utf8": ("graph-rans.slz", _manifest_bytes(
        lambda body, pack: pack(body.replace(b'"format"', b'"\xff":1,"format"', 1))), "not valid JSON"),
    "format-missing": ("graph-rans.slz", _manifest_edit(lambda m: m.pop("format")), "slimzip model"),
    "section-offset-off-by-one": ("graph-rans.slz", _manifest_bytes(
        lambda body, pack: pack(_shift_offset(body))), "outside the payload"),
    "section-crc": ("graph-rans.slz", _manifest_bytes(lambda body, pack: pack(_bad_section_crc(body))),
                    "checksum mismatch"),
    "payload-extra-bytes": ("graph-rans.slz", lambda b: _append_payload(b, b"\0"), "no section accounts for"),
    "section-used-twice": ("graph-rans.slz", _manifest_edit(
        lambda m: _first_shared(m).update(index=_first_shared(m)["codes"])), "exactly once"),
    "section-unused": ("graph-rans.slz", lambda b: _extra_section(b), "exactly once"),
    "tensor-missing": ("graph-rans.slz", _manifest_edit(lambda m: m["tensors"].pop()), "do not match"),
    "tensor-twice": ("graph-rans.slz", _manifest_edit(lambda m: m["tensors"].append(copy.deepcopy(m["tensors"][0]))),
                     "twice"),
    "shape-mismatch": ("graph-rans.slz", _manifest_edit(lambda m: m["tensors"][0].update(shape=[5, 1, 3, 3])),
                       "shape"),
    "bits-17": ("graph-rans.slz", _manifest_edit(lambda m: _first_shared(m).update(bits=17)), "out of range"),
    "nnz-negative": ("graph-rans.slz", _manifest_edit(lambda m: _first_shared(m).update(nnz=-1)), "out of range"),
    "nnz-too-large": ("graph-rans.slz", _manifest_edit(lambda m: _first_shared(m).update(nnz=10 ** 6)),
                      "out of range"),
    "unknown-coder": ("graph-rans.slz", _manifest_edit(
        lambda m: _first_shared(m)["coders"].update(codes="lzma")), "unknown encoding"),
    "unknown-encoding": ("graph-rans.slz", _manifest_edit(lambda m: m["tensors"][0].update(encoding="png")),
                         "unknown encoding"),
    "constant-1e308": ("lenet-5-bn-plan-auto.slz", _manifest_edit(
        lambda m: next(e for e in m["tensors"] if e["encoding"] == "constant").update(value=1e308)),
        "finite number"),
    "constant-bool": ("lenet-5-bn-plan-auto.slz", _manifest_edit(
        lambda m: next(e for e in m["tensors"] if e["encoding"] == "constant").update(value=True)),
        "finite number"),
    "raw-dtype-object": ("graph-rans.slz", _manifest_edit(
        lambda m: next(e for e in m["tensors"] if e["encoding"] == "raw").update(dtype={"a": 1})), "unknown dtype"),
    "classes-10^12": ("lenet-5-bn-plan-auto.slz", _manifest_edit(
        lambda m: m["model"].update(kwargs={"num_classes": 10 ** 12})), "classes"),
    "unknown-model": ("lenet-5-bn-plan-auto.slz", _manifest_edit(lambda m: m["model"].update(name="vgg99")),
                      "unknown model"),
    "graph-os-system": ("graph-rans.slz", _manifest_edit(
        lambda m: m["model"]["graph"]["nodes"][1].update(op="call_function", target="os.system")), "graph"),
    "graph-unknown-layer": ("graph-rans.slz", _manifest_edit(
        lambda m: next(iter(m["model"]["graph"]["layers"].values())).update(type="Eval")), "graph"),
    "graph-huge-linear": ("graph-rans.slz", _manifest_edit(
        lambda m: m["model"]["graph"]["layers"]["5"]["args"].update(in_features=2 ** 40)), "graph"),
    "fixed-nonzero-padding": ("graph-fixed.slz", _section_edit("codes", lambda d: d[:-1] + bytes([d[-1] | 1])),
                              "padding"),
    "fixed-extra-byte": ("graph-fixed.slz", _section_edit("codes", lambda d: d + b"\0"), "wrong length"),
    "huffman-bytes-after-payload": ("graph-huffman.slz", _section_edit("codes", lambda d: d + b"\0"),
                                    "after its last code"),
    "huffman-nonzero-padding": ("graph-huffman.slz", _section_edit("codes", _huffman_extra_padding), "padding"),
    "huffman-empty-with-bytes": ("lenet-300-100-empty-layer-huffman.slz", lambda b: _empty_stream(b, b"\0"),
                                 "empty huffman stream"),
    "huffman-table-unsorted": ("graph-huffman.slz", _section_edit("codes", lambda d: _swap_table(d, 3)),
                               "increasing order"),
    "rans-words-after-constant": ("lenet-300-100-empty-layer-rans.slz", lambda b: _constant_rans(b),
                                  "table alone"),
    "rans-count-mismatch": ("graph-rans.slz", _section_edit("codes", lambda d: d[:6] + struct.pack(
        "<I", struct.unpack_from("<I", d, 6)[0] + 1) + d[10:], coder="rans"), "inconsistent"),
    "v4-row-missing": ("v4-graph-huffman.slz", _manifest_edit(lambda m: m["tensors"].pop()), "one row per tensor"),
    "v4-row-unknown-tag": ("v4-graph-huffman.slz", _manifest_edit(lambda m: _shared_row(m).__setitem__(0, "z")),
                           "malformed row"),
    "v4-no-centroid": ("v4-graph-huffman.slz", _manifest_edit(lambda m: _shared_row(m).__setitem__(1, 0)),
                       "out of range"),
    "v4-section-lengths": ("v4-graph-huffman.slz", _manifest_bytes(
        lambda body, pack: pack(body.replace(b'"sections":[', b'"sections":[1,', 1))), "add up"),
    "v4-codebook-size": ("v4-graph-huffman.slz", _manifest_edit(
        lambda m: _shared_row(m).__setitem__(1, _shared_row(m)[1] + 1)), "codebook has the wrong size"),
    "v4-plan-not-shortest": ("v4-lenet-5-bn-plan-auto.slz", _manifest_edit(_longer_mask), "shortest bitmask"),
    "v4-plan-keyed-list": ("v4-lenet-5-bn-plan-auto.slz", _manifest_edit(
        lambda m: m["model"].update(plan={k: [0, 1] for k in m["model"]["plan"]})), "bitmask string"),
    "rans-partial-word": ("graph-rans.slz", _section_edit("codes", lambda d: d + b"\0", coder="rans"),
                          "whole 32-bit words"),
    # the rest of the reader's refusals (tests/test_corpus.py walks them): container and manifest
    "manifest-not-deflate": ("graph-rans.slz", _manifest_bytes(lambda body, pack: b"\xff" + pack(body)),
                             "does not inflate"),
    "manifest-deflate-incomplete": ("graph-rans.slz", _manifest_bytes(lambda body, pack: pack(body)[:-6]),
                                    "is incomplete"),
    "no-section-table": ("graph-rans.slz", _manifest_bytes(
        lambda body, pack: pack(body.replace(b'"sections":', b'"sectionz":', 1))), "no section table"),
    "section-malformed": ("graph-rans.slz", _manifest_bytes(
        lambda body, pack: pack(body.replace(b'"crc32":', b'"crc33":', 1))), "malformed entry"),
    "v4-section-negative": ("v4-graph-huffman.slz", _manifest_bytes(
        lambda body, pack: pack(body.replace(b'"sections":[', b'"sections":[-1,', 1))), "non-negative integer"),
    "no-tensor-table": ("graph-rans.slz", _manifest_edit(lambda m: m.pop("tensors")), "no tensor table"),
    # the model
    "model-extra-key": ("lenet-5-bn-plan-auto.slz", _manifest_edit(lambda m: m["model"].update(extra=1)),
                        "arguments are not supported"),
    "graph-model-extra-key": ("graph-rans.slz", _manifest_edit(lambda m: m["model"].update(name="x")),
                              "arguments are not supported"),
    "v4-plan-alone": ("v4-lenet-5-bn-plan-auto.slz", _manifest_edit(lambda m: m["model"].pop("name")),
                      "names a registry model or stores a graph"),
    "plan-root-classifier": ("lenet-5-bn-plan-auto.slz", _manifest_edit(
        lambda m: m["model"].update(plan={"classifier": [0, 1, 2]})), "not a plan root"),
    "plan-empty-keep": ("lenet-5-bn-plan-auto.slz", _manifest_edit(
        lambda m: m["model"]["plan"].update({"features.0": []})), "channel plan is malformed"),
    "v4-plan-malformed": ("v4-lenet-5-bn-plan-auto.slz", _manifest_edit(lambda m: m["model"].update(plan=[1])),
                          "channel plan is malformed"),
    "v6-plan-malformed": ("v6-lenet-5-bn-plan-counts.slz", _manifest_edit(lambda m: m["model"].update(plan=[1])),
                          "number of kept channels"),
    "v6-plan-bitmask": ("v6-lenet-5-bn-plan-counts.slz", _manifest_edit(
        lambda m: m["model"]["plan"].update({"features.0": "8A=="})), "not a count of kept channels"),
    "v6-plan-zero": ("v6-lenet-5-bn-plan-counts.slz", _manifest_edit(
        lambda m: m["model"]["plan"].update({"features.0": 0})), "not a count of kept channels"),
    "v6-plan-bool": ("v6-lenet-5-bn-plan-counts.slz", _manifest_edit(
        lambda m: m["model"]["plan"].update({"features.0": True})), "not a count of kept channels"),
    "v6-plan-wider-than-layer": ("v6-lenet-5-bn-plan-counts.slz", _manifest_edit(
        lambda m: m["model"]["plan"].update({"features.0": 21})), "kept indices must be distinct"),
    "v4-plan-not-base64": ("v4-lenet-5-bn-plan-auto.slz", _manifest_edit(
        lambda m: m["model"]["plan"].update({"features.0": "!!!!"})), "not base64"),
    "graph-malformed": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m).pop("nodes")), "graph is malformed"),
    "graph-layers-list": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m).update(layers=[])),
                          "graph is malformed"),
    "graph-attribute-path": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m)["attributes"].update(
        {"forward": {"kind": "parameter", "shape": [1], "dtype": "float32"}})), "bad attribute path"),
    "graph-attribute-shape": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m)["attributes"].update(
        {"g": {"kind": "parameter", "shape": [-1], "dtype": "float32"}})), "bad shape"),
    "graph-attribute-kind": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m)["attributes"].update(
        {"g": {"kind": "code", "shape": [1], "dtype": "float32"}})), "bad kind or dtype"),
    "graph-elements": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m)["attributes"].update(
        {"g": {"kind": "buffer", "shape": [1 << 20, 1 << 10], "dtype": "float32"}})), "tensor elements"),
    "graph-argument-nested": ("graph-rans.slz", _manifest_edit(
        lambda m: _graph(m)["nodes"][1].update(kwargs={"a": _nested(25)})), "nested too deeply"),
    "graph-argument-malformed": ("graph-rans.slz", _manifest_edit(
        lambda m: _graph(m)["nodes"][1].update(args=[{"zz": 1}])), "malformed graph argument"),
    "graph-getattr": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m)["nodes"].insert(1, {
        "op": "call_function", "target": "builtins.getattr", "args": [{"n": 0}, "training"], "kwargs": {}})),
        "is not allowed in a model graph"),
    "graph-layer-word": ("graph-rans.slz", _manifest_edit(lambda m: _layer(m, "0")["args"].update(padding_mode="evil")),
                         "is not allowed"),
    "graph-layer-argument": ("graph-rans.slz", _manifest_edit(lambda m: _layer(m, "0")["args"].update(weights=1)),
                             "are not among"),
    "graph-layer-rejects": ("graph-rans.slz", _manifest_edit(lambda m: _layer(m, "0")["args"].update(groups=3)),
                            "rejects its arguments"),
    "graph-layer-infinite": ("graph-rans.slz", _manifest_bytes(
        lambda body, pack: pack(body.replace(b'"eps":1e-05', b'"eps":1e999', 1))), "not finite"),
    "graph-two-outputs": ("graph-rans.slz", _manifest_edit(
        lambda m: _graph(m)["nodes"].append(copy.deepcopy(_graph(m)["nodes"][-1]))), "exactly one input and one output"),
    "graph-input-shape": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m).update(input_shape=[0, 8, 8])),
                          "input_shape is not"),
    "graph-stride-0": ("graph-rans.slz", _manifest_edit(
        lambda m: _layer(m, "0")["args"].update(stride={"t": [0, 0]})), "stride below 1"),
    "graph-kernel-larger-than-input": ("graph-rans.slz", _manifest_edit(
        lambda m: _layer(m, "0")["args"].update(kernel_size={"t": [9, 9]})), "does not run on its input shape"),
    "graph-negative-padding": ("graph-rans.slz", _manifest_edit(lambda m: _layer(m, "0")["args"].update(padding=-1)),
                               "padding below 0"),
    "graph-padding-one-number": ("graph-rans.slz", _manifest_edit(
        lambda m: _layer(m, "0")["args"].update(padding={"t": [0]})), "needs 2 numbers"),
    "graph-huge-activation": ("graph-rans.slz", _manifest_edit(
        lambda m: _layer(m, "0")["args"].update(padding=1 << 24)), "makes a tensor of"),
    "graph-output-not-tensor": ("graph-rans.slz", _manifest_edit(lambda m: _graph(m)["nodes"][-1].update(args=[1])),
                                "is not a (batch, classes) tensor"),
    # the tensor table and the streams
    "raw-wrong-length": ("graph-rans.slz", _manifest_edit(lambda m: _tensor(m, "1.weight").update(dtype="float32")),
                         "bytes for"),
    "quantized-in-v3": ("graph-rans.slz", _manifest_edit(lambda m: _tensor(m, "1.weight").update(encoding="quantized")),
                        "from format version 4"),
    "v5-adaptive-in-v4": ("v5-lenet-5-bn-adaptive.slz", _raw_edit(lambda d: struct.pack_into("<H", d, 8, 4)),
                          "from format version 5"),
    "v5-adaptive-no-prior": ("v5-lenet-5-bn-adaptive.slz", _v5_adaptive(lambda d: b"\0" + d[1:]), "prior byte"),
    "v5-adaptive-partial-word": ("v5-lenet-5-bn-adaptive.slz", _v5_adaptive(lambda d: d + b"\0"), "32-bit words"),
    "v5-adaptive-words-left": ("v5-lenet-5-bn-adaptive.slz", _v5_adaptive(lambda d: d[:1] + b"\1\0\0\0" + d[1:]),
                               "words left over"),
    "v5-adaptive-corrupt": ("v5-lenet-5-bn-adaptive.slz", _v5_adaptive(lambda d: d[:-4] + b"\0\0\0\0"),
                            "payload is corrupt"),
    "v5-adaptive-too-large": ("v5-lenet-300-100-adaptive.slz", _fc1_every_weight_kept("adaptive"),
                              "larger than slimzip writes"),
    "v7-table-fewer": ("v7-lenet-5-bn-rans.slz", _manifest_edit(lambda m: m["sections"].pop()), "fewer lengths"),
    "v7-table-more": ("v7-lenet-5-bn-rans.slz", _manifest_edit(lambda m: m["sections"].append(0)), "more lengths"),
    "v7-table-negative": ("v7-lenet-5-bn-rans.slz", _manifest_edit(lambda m: m["sections"].__setitem__(0, -1)),
                          "non-negative integer"),
    "v7-payload-past-sections": ("v7-lenet-5-bn-rans.slz", _v7_joint(lambda d: d + b"\0"), "do not add up"),
    "v7-joint-words-left": ("v7-lenet-5-bn-joint.slz", _v7_joint(lambda d: d + b"\1\0\0\0"), "words left over"),
    "v7-joint-corrupt": ("v7-lenet-5-bn-joint.slz", _v7_joint(lambda d: d[:-4] + b"\0\0\0\0"), "joint stream is corrupt"),
    "v7-joint-not-words": ("v7-lenet-5-bn-joint.slz", _v7_joint(lambda d: d[:-1]), "not whole 32-bit words"),
    "v7-joint-empty": ("v7-lenet-5-bn-joint.slz", _v7_joint(lambda d: b""), "truncated"),
    "v7-joint-padding": ("v7-lenet-300-100-empty-layer-joint.slz", _joint_padding, "padding bits"),
    "v7-joint-in-v6": ("v7-lenet-5-bn-joint.slz", _as_version(6), "from format version 7"),
    "v7-joint-too-large": ("v7-lenet-300-100-empty-layer-joint.slz", _fc1_every_weight_kept("joint"),
                           "larger than slimzip writes"),
    "v8-context-in-v7": ("v8-lenet-5-bn-context.slz", _as_version(7), "from format version 8"),
    "v8-context-index": ("v8-lenet-5-bn-context.slz", _context_row(lambda r: r.__setitem__(4, "context")),
                         "unknown encoding"),
    "v8-context-one-centroid": ("v8-lenet-300-100-context.slz", _context_row(lambda r: r.__setitem__(1, 1)),
                                "a context stream's codebook has 2 to"),
    "v8-context-corrupt": ("v8-lenet-300-100-context.slz", _v7_joint(lambda d: d[:2] + bytes([d[2] ^ 255]) + d[3:]),
                           "joint stream is corrupt"),  # the coder's first word: the last member's end
    "v8-context-steps": ("v8-graph-long-rows.slz", _past_the_context_steps, "more steps than slimzip writes"),
    "v4-quantized-length": ("v4-graph-huffman.slz", _v4_quantized(lambda n: bytes(8 + n + 1)), "bytes for"),
    "v6-quantized-float32-header": ("v6-graph-auto.slz", _v4_quantized(lambda n: bytes(8 + n)), "bytes for"),
    "v6-quantized-nan": ("v6-graph-auto.slz", _v4_quantized(lambda n: struct.pack("<ee", float("nan"), 1.0) +
                                                             bytes(n)), "must be finite"),
    "v6-packed-length": ("v6-lenet-5-bn-packed-5.slz", _v6_packed(lambda d: d[:-1]), "bytes for"),
    "v6-packed-padding": ("v6-lenet-5-bn-packed-5.slz", _v6_packed(lambda d: d[:-1] + bytes([d[-1] | 1])),
                          "padding bits"),
    "v6-packed-bits-9": ("v6-lenet-5-bn-packed-5.slz", _manifest_edit(
        lambda m: [r.__setitem__(1, 9) for r in m["tensors"] if r[0] == "p"]), "out of range"),
    "v6-packed-in-v5": ("v6-lenet-5-bn-packed-5.slz", _as_version(5), "from format version 6"),
    "v4-quantized-nan": ("v4-graph-huffman.slz", _v4_quantized(lambda n: struct.pack("<ff", float("nan"), 1.0) +
                                                                bytes(n)), "must be finite"),
    "codebook-nan": ("graph-rans.slz", _section_edit("codebook", lambda d: b"\x00\x00\xc0\x7f" + d[4:]), "not finite"),
    "index-past-end": ("graph-fixed.slz", _section_edit("index", lambda d: bytes([200]) + d[1:]), "past the end"),
    "index-count": ("graph-fixed.slz", _section_edit("index", lambda d: d[:-1] + bytes([255])), "index holds"),
    "rans-truncated-header": ("graph-rans.slz", _section_edit("codes", lambda d: d[:3], coder="rans"),
                              "truncated in its header"),
    "rans-table-too-large": ("graph-rans.slz", _section_edit(
        "codes", lambda d: struct.pack("<I", 10 ** 6) + d[4:], coder="rans"), "larger than the alphabet"),
    "rans-words-left-over": ("graph-rans.slz", _section_edit("codes", lambda d: d + b"\1\0\0\0", coder="rans"),
                             "words left over"),
    "rans-contradicts-its-counts": ("graph-rans.slz", _section_edit("codes", _rans_contradicting, coder="rans"),
                                    "contradicts its count table"),
    "rans-zero-last-word": ("graph-rans.slz", _section_edit("codes", lambda d: d[:-4] + bytes(4), coder="rans"),
                            "rans payload is corrupt"),
    "huffman-truncated-header": ("graph-huffman.slz", _section_edit("codes", lambda d: d[:3]),
                                 "truncated in its header"),
    "huffman-table-too-large": ("graph-huffman.slz", _section_edit("codes", lambda d: struct.pack("<I", 10 ** 6) + d[4:]),
                                "larger than the alphabet"),
    "huffman-table-empty": ("graph-huffman.slz", _section_edit("codes", lambda d: bytes(4) + d[4:]),
                            "table is empty"),
    "huffman-impossible-symbol": ("graph-huffman.slz", _section_edit("codes", lambda d: d[:4] + b"\xff\xff" + d[6:]),
                                  "impossible symbol"),
    "huffman-one-symbol-length": ("graph-huffman.slz", _section_edit(
        "codes", lambda d: struct.pack("<IHB", 1, 0, 2) + d[7:]), "one-symbol huffman table"),
    "huffman-incomplete-code": ("graph-huffman.slz", _section_edit("codes", lambda d: d[:6] + bytes([d[6] + 1]) + d[7:]),
                                "complete prefix code"),
    "huffman-corrupt": ("graph-huffman.slz", _section_edit("codes", lambda d: d[:-3]), "payload is corrupt"),
    "huffman-offsets-truncated": ("lenet-300-100-empty-layer-huffman.slz", _section_edit(
        "codes", _huffman_offsets(lambda d, p: d[:p + 2])), "truncated in its block offsets"),
    "huffman-offsets-past": ("lenet-300-100-empty-layer-huffman.slz", _section_edit(
        "codes", _huffman_offsets(lambda d, p: d[:p] + b"\xff\xff\xff\x7f" + d[p + 4:])), "out of order or past"),
    "huffman-offsets-mismatch": ("lenet-300-100-empty-layer-huffman.slz", _section_edit(
        "codes", _huffman_offsets(lambda d, p: d[:p] + struct.pack("<I", struct.unpack_from("<I", d, p)[0] - 1) +
                                  d[p + 4:])), "do not match where the blocks end"),
}


def _shift_offset(body: bytes) -> bytes:
    m = json.loads(body)
    m["sections"][1]["offset"] += 1
    return json.dumps(m, separators=(",", ":"), sort_keys=True).encode()


def _bad_section_crc(body: bytes) -> bytes:
    m = json.loads(body)
    m["sections"][0]["crc32"] ^= 1
    return json.dumps(m, separators=(",", ":"), sort_keys=True).encode()


def _append_payload(blob: bytes, extra: bytes) -> bytes:
    out = blob[:-TRAILER.size] + extra
    return out + TRAILER.pack(zlib.crc32(out))


def _extra_section(blob: bytes) -> bytes:
    manifest, sections, version = _parts(blob)
    return encode_container(manifest, sections + [b"\0\0\0\0"], version=version)


def _swap_table(data: bytes, size: int) -> bytes:
    """Swap the first two entries of a coder's symbol table (4-byte count, then ``size``-byte entries)."""
    a, b = data[4:4 + size], data[4 + size:4 + 2 * size]
    return data[:4] + b + a + data[4 + 2 * size:]


def _empty_entry(manifest: dict) -> dict:
    return next(e for e in manifest["tensors"] if e["encoding"] == "shared" and e["nnz"] == 0)


def _empty_stream(blob: bytes, extra: bytes) -> bytes:
    manifest, sections, version = _parts(blob)
    entry = _empty_entry(manifest)
    sections[entry["codes"]] += extra
    return encode_container(manifest, sections, version=version)


def _constant_rans(blob: bytes) -> bytes:
    """The emptied layer's index stream holds no symbol: a rANS stream of at most one distinct symbol is
    its table alone, so a word after it is refused."""
    manifest, sections, version = _parts(blob)
    entry = _empty_entry(manifest)
    assert entry["coders"]["index"] == "rans" and struct.unpack_from("<I", sections[entry["index"]])[0] <= 1
    sections[entry["index"]] += b"\1\0\0\0"
    return encode_container(manifest, sections, version=version)


def main() -> None:
    valid = valid_files()
    verdicts = {}
    (HERE / "valid").mkdir(exist_ok=True)
    (HERE / "rules").mkdir(exist_ok=True)
    for name, blob in valid.items():
        (HERE / "valid" / name).write_bytes(blob)
        c = decode_container(blob)
        verdicts[f"valid/{name}"] = {"verdict": "valid", "tensors_sha256": tensors_sha256(decode_model(c), c)}
    for name, (source, make, reason) in INVALID.items():
        (HERE / "rules" / f"{name}.slz").write_bytes(make(valid[source]))
        verdicts[f"rules/{name}.slz"] = {"verdict": "invalid", "reason": reason, "from": f"valid/{source}"}
    for path in sorted((HERE / "invalid").glob("*.slz")):
        verdicts[f"invalid/{path.name}"] = {"verdict": "invalid", "reason": "", "from": "the fuzzer"}
    (HERE / "verdicts.json").write_text(json.dumps(verdicts, indent=1, sort_keys=True) + "\n")
    print(f"{len(valid)} valid, {len(INVALID)} rule files, verdicts in {HERE / 'verdicts.json'}")


if __name__ == "__main__":
    main()
