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
import struct
import zlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from slimzip.codec import decode_model, encode_model, model_table
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
    files["v4-lenet-5-bn-plan-auto.slz"] = encode_model(model, spec, layers, CompressConfig(coder="auto"))
    gm = portable(net, graph)
    files["v4-graph-huffman.slz"] = encode_model(gm, {"graph": graph, "plan": {}}, _shared(gm, 0.5, (3, 3)),
                                                 CompressConfig(coder="huffman"))
    model = create_model("lenet-300-100")
    with torch.no_grad():
        model.state_dict()["features.3.weight"].zero_()  # every weight of a layer pruned: empty streams
    layers = _shared(model, 0.97, (2, 2))
    for coder in ("huffman", "rans"):
        files[f"lenet-300-100-empty-layer-{coder}.slz"] = encode_model(
            model, {"name": "lenet-300-100", "kwargs": {}}, layers, CompressConfig(coder=coder, raw_dtype="float32"),
            version=3)
    return files


# --- invalid files: one broken rule each, from a valid file -------------------------------------

def _parts(blob: bytes) -> tuple[dict, list[bytes], int]:
    c = decode_container(blob)
    return {k: v for k, v in c.manifest.items() if k != "sections"}, list(c.sections), c.version


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
