"""The .slz container: a versioned, checksummed, self-describing file. ``docs/FORMAT.md`` gives every byte.

    magic (8) | version u16 | flags u16 | manifest length u32 | manifest crc32 u32 | manifest (JSON,
    zlib-deflated when flag 1 is set)
    | sections (concatenated) | file crc32 u32

Reading never executes code: the manifest is JSON, the sections are bytes whose offsets, lengths and
crc32 are in the manifest. Every length is checked against the file before anything is allocated, so a
truncated, corrupted or hostile file gets a ``ContainerError`` in bounded time and memory.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .atomic import atomic_write_bytes
from .errors import SlimzipError

T = TypeVar("T")

MAGIC = b"\x89SLZ\r\n\x1a\n"  # PNG-style: catches text-mode and truncation damage early
VERSION = 8  # written; 2 added 'constant' tensors, 3 the model graph, 4 the compact manifest, 5 the adaptive
# coder, 6 channel plans as counts, 7 the joint stream, 8 context-modelled codes (docs/FORMAT.md)
READABLE = (1, 2, 3, 4, 5, 6, 7, 8)
LENGTHS_ONLY = 4  # from this version the section table lists lengths only (the file CRC covers the bytes)
FIXED_COSTS = 6  # the version that trims a file's fixed costs: count plans, float16 quantization headers, packed
# small tensors, a longer manifest dictionary
JOINT_STREAM = 7  # the version whose coded streams may share one coder (the joint stream), and whose header drops
# the manifest's crc32 (the file's covers it)
CONTEXT_CODES = 8  # the version whose code streams may be coded under the context model (``contexts``)
IMPLIED_LENGTHS = 7  # the version whose section table lists only the lengths the tensor rows do not imply
# From version 4 a deflated manifest is raw DEFLATE (RFC 1951) with this preset dictionary: the words every
# manifest repeats cost a back-reference instead of their letters (a LeNet's manifest: 354 -> 229 bytes).
DICTIONARY = (
    b'"graph":{"input_shape":[3,32,32],"layers":{"type":"Conv2d","args":{"in_channels":"out_channels":'
    b'"kernel_size":{"t":[3,3]},"stride":{"t":[1,1]},"padding":{"t":[0,0]},"dilation":{"t":[1,1]},"groups":1,'
    b'"bias":false,"padding_mode":"zeros"}},"BatchNorm2d","args":{"num_features":"eps":1e-05,"momentum":0.1,'
    b'"affine":true,"track_running_stats":true}},"ReLU","args":{"inplace":false}},"MaxPool2d","AdaptiveAvgPool2d",'
    b'"Flatten","Linear","args":{"in_features":"out_features":"bias":true}},"attributes":{},"nodes":[{"op":'
    b'"placeholder","target":"x","args":[],"kwargs":{}},{"op":"call_module","target":"args":[{"n":0}],"kwargs":{}},'
    b'{"op":"call_function","target":"operator.add","torch.flatten","torch.cat",{"op":"output","target":"output",'
    b'"data":{"normalize":"unit","stats":{"mean":[],"std":[]}},"dataset":"cifar10","imagefolder:'
    b'"format":"slimzip-model","model":{"kwargs":{"num_classes":100},"name":"resnet20","vgg16","lenet-300-100-bn",'
    b'"plan":{"features.0":"classifier.0":"layer1.0.conv1":"},"sections":[0,'
    b'"tensors":[["s",16,8,"rans","rans",],["s",32,5,"huffman","huffman",],["s",4,5,"fixed","fixed",],'
    b'["r","float32"],["r","float16"],["c",1.0],["c",0.0],["r","float16"],["c",0.0],['
)
# Version 6 appends the words its compact manifests repeat: registry names, count plans, the adaptive coder's
# rows and uint8 and packed small tensors (a LeNet-5's manifest: 154 -> 117 bytes).
DICTIONARY_V6 = DICTIONARY + (
    b'"dataset":"mnist","format":"slimzip-model","model":{"kwargs":{},"name":"lenet-5-bn","lenet-300-100","resnet56",'
    b'"vgg11","densenet40","plan":{"features.4":"features.9":"layer2.0.conv1":"layer3.0.conv1":},"sections":[8,16,'
    b'"tensors":[["q"],["c",0.0],["c",1.0],["q"],["s",4,2,"fixed","adaptive",],["s",8,3,"adaptive","adaptive",],'
    b'["s",16,4,"rans","adaptive",],["q"],["c",0.0],["p",6],["c",0.0],["c",1.0],["p",5],["p",4],["c",0.0],'
)
# Version 7 appends the tensor rows of the MNIST registry models as version 7 writes them (LeNet-300-100-BN with
# uint8 small tensors; LeNet-5-BN with uint8, 7-, 6-, 4- and 5-bit ones), shared rows without their counts: a
# registry model's rows repeat in every one of its files (a LeNet-5-BN manifest: 104 -> 90 bytes).
DICTIONARY_V7 = DICTIONARY_V6 + (
    b'"tensors":[["q"],["s",8,2,"joint","joint",],["c",0.0],["s",8,9,"joint","joint",],["q"],["c",0.0],["c",1.0],["q'
    b'"],["c",0.0],["s",16,2,"joint","joint",],["q"],["c",0.0],["c",1.0],["q"]]"tensors":[["q"],["s",4,2,"joint","jo'
    b'int",],["c",0.0],["s",8,2,"joint","joint",],["q"],["c",0.0],["c",1.0],["q"],["q"],["c",0.0],["c",1.0],["q"],["'
    b'c",0.0],["s",8,2,"joint","joint",],["q"],["c",0.0],["c",1.0],["q"],["c",0.0],["s",4,2,"joint","joint",]]"tenso'
    b'rs":[["p",7],["s",4,2,"joint","joint",],["c",0.0],["s",8,2,"joint","joint",],["p",7],["c",0.0],["c",1.0],["p",'
    b'7],["p",7],["c",0.0],["c",1.0],["p",7],["c",0.0],["s",8,2,"joint","joint",],["p",7],["c",0.0],["c",1.0],["p",7'
    b'],["c",0.0],["s",4,2,"joint","joint",]]"tensors":[["p",6],["s",4,2,"joint","joint",],["c",0.0],["s",8,2,"joint'
    b'","joint",],["p",6],["c",0.0],["c",1.0],["p",6],["p",6],["c",0.0],["c",1.0],["p",6],["c",0.0],["s",8,2,"joint"'
    b',"joint",],["p",6],["c",0.0],["c",1.0],["p",6],["c",0.0],["s",4,2,"joint","joint",]]"tensors":[["p",4],["s",4,'
    b'2,"joint","joint",],["c",0.0],["s",8,2,"joint","joint",],["p",4],["c",0.0],["c",1.0],["p",4],["p",4],["c",0.0]'
    b',["c",1.0],["p",4],["c",0.0],["s",8,2,"joint","joint",],["p",4],["c",0.0],["c",1.0],["p",4],["c",0.0],["s",4,2'
    b',"joint","joint",]]"tensors":[["p",5],["s",4,2,"joint","joint",],["c",0.0],["s",8,2,"joint","joint",],["p",5],'
    b'["c",0.0],["c",1.0],["p",5],["p",5],["c",0.0],["c",1.0],["p",5],["c",0.0],["s",8,2,"joint","joint",],["p",5],['
    b'"c",0.0],["c",1.0],["p",5],["c",0.0],["s",4,2,"joint","joint",]]'
)
# Version 8 appends the same rows with the conv and hidden layers' code streams under the context model (the
# coder ``context``), as version 8 writes them for these models: a row naming it costs a back-reference.
DICTIONARY_V8 = DICTIONARY_V7 + (
    b'"tensors":[["q"],["s",8,2,"joint","joint",],["c",0.0],["s",8,9,"context","joint",],["q"],["c",0.0],["c",1.0],['
    b'"q"],["c",0.0],["s",16,2,"context","joint",],["q"],["c",0.0],["c",1.0],["q"]]"tensors":[["q"],["s",4,2,"joint"'
    b',"joint",],["c",0.0],["s",8,2,"context","joint",],["q"],["c",0.0],["c",1.0],["q"],["q"],["c",0.0],["c",1.0],["'
    b'q"],["c",0.0],["s",8,2,"context","joint",],["q"],["c",0.0],["c",1.0],["q"],["c",0.0],["s",4,2,"context","joint'
    b'",]]"tensors":[["p",7],["s",4,2,"joint","joint",],["c",0.0],["s",8,2,"context","joint",],["p",7],["c",0.0],["c'
    b'",1.0],["p",7],["p",7],["c",0.0],["c",1.0],["p",7],["c",0.0],["s",8,2,"context","joint",],["p",7],["c",0.0],["'
    b'c",1.0],["p",7],["c",0.0],["s",4,2,"context","joint",]]"tensors":[["p",6],["s",4,2,"joint","joint",],["c",0.0]'
    b',["s",8,2,"context","joint",],["p",6],["c",0.0],["c",1.0],["p",6],["p",6],["c",0.0],["c",1.0],["p",6],["c",0.0'
    b'],["s",8,2,"context","joint",],["p",6],["c",0.0],["c",1.0],["p",6],["c",0.0],["s",4,2,"context","joint",]]"ten'
    b'sors":[["p",4],["s",4,2,"joint","joint",],["c",0.0],["s",8,2,"context","joint",],["p",4],["c",0.0],["c",1.0],['
    b'"p",4],["p",4],["c",0.0],["c",1.0],["p",4],["c",0.0],["s",8,2,"context","joint",],["p",4],["c",0.0],["c",1.0],'
    b'["p",4],["c",0.0],["s",4,2,"context","joint",]]"tensors":[["p",5],["s",4,2,"joint","joint",],["c",0.0],["s",8,'
    b'2,"context","joint",],["p",5],["c",0.0],["c",1.0],["p",5],["p",5],["c",0.0],["c",1.0],["p",5],["c",0.0],["s",8'
    b',2,"context","joint",],["p",5],["c",0.0],["c",1.0],["p",5],["c",0.0],["s",4,2,"context","joint",]]'
)
DICTIONARIES = {LENGTHS_ONLY: DICTIONARY, FIXED_COSTS: DICTIONARY_V6, JOINT_STREAM: DICTIONARY_V7,
                CONTEXT_CODES: DICTIONARY_V8}  # by the version that introduced it
HEADER = struct.Struct("<8sHHII")  # magic, version, flags, manifest length, manifest crc32
HEADER_V7 = struct.Struct("<8sHHI")  # from version 7: magic, version, flags, manifest length (the file crc32 covers it)
TRAILER = struct.Struct("<I")  # crc32 of everything before it
MAX_MANIFEST = 64 << 20  # bytes; a real manifest is a few KB per hundred tensors
MAX_FILE = 8 << 30  # bytes
FLAG_DEFLATE = 1  # the manifest is stored zlib-compressed (JSON compresses about 3x)


class ContainerError(SlimzipError):
    """The file is not a valid .slz container (wrong magic, truncated, corrupted, inconsistent)."""


@dataclass(frozen=True)
class Container:
    """A decoded container. Version 7 lists only the lengths its rows do not imply: until the tensor table is
    read (``codec.tensor_table`` cuts ``payload`` into the rows' sections, in place) ``sections`` is the whole
    payload as one section."""

    manifest: dict
    sections: list[bytes]
    file_bytes: int
    version: int = VERSION  # the format version the file declares
    payload: bytes = b""  # version 7: every section, concatenated


def encode_container(manifest: dict, sections: list[bytes], deflate: bool = True, version: int = VERSION) -> bytes:
    """Lay out the sections, record them in the manifest (version 4: their lengths; before: offset,
    length and crc32 each), and serialise."""
    if version >= IMPLIED_LENGTHS:  # the caller lists the lengths the rows do not imply (compact_manifest)
        table = manifest.get("sections")
    elif version >= LENGTHS_ONLY:
        table = [len(data) for data in sections]
    else:
        table, offset = [], 0
        for data in sections:
            table.append({"offset": offset, "length": len(data), "crc32": zlib.crc32(data)})
            offset += len(data)
    manifest = {k: v for k, v in manifest.items() if k != "sections"}
    if table or version < IMPLIED_LENGTHS:
        manifest["sections"] = table
    body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    if deflate:
        body = deflate_manifest(body, version)
    flags = FLAG_DEFLATE if deflate else 0
    head = HEADER_V7.pack(MAGIC, version, flags, len(body)) if version >= JOINT_STREAM else \
        HEADER.pack(MAGIC, version, flags, len(body), zlib.crc32(body))
    blob = head + body + b"".join(sections)
    return blob + TRAILER.pack(zlib.crc32(blob))


def header_size(version: int) -> int:
    """The fixed header's bytes in a file of ``version`` (version 7 drops the manifest's crc32)."""
    return (HEADER_V7 if version >= JOINT_STREAM else HEADER).size


def write_container(path: str | os.PathLike, manifest: dict, sections: list[bytes]) -> int:
    """Write atomically; returns the file size in bytes."""
    blob = encode_container(manifest, sections)
    atomic_write_bytes(Path(path), blob)
    return len(blob)


def decode_container(blob: bytes) -> Container:
    """Parse and verify a container held in memory."""
    if len(blob) < HEADER_V7.size + TRAILER.size:
        raise ContainerError(f"file too short for a .slz container ({len(blob)} bytes)")
    magic, version = struct.unpack_from("<8sH", blob)
    if magic != MAGIC:
        raise ContainerError("not a .slz file (bad magic bytes)")
    if version not in READABLE:
        raise ContainerError(f".slz version {version} is not supported (this slimzip reads versions "
                             f"{', '.join(map(str, READABLE))})")
    if len(blob) < header_size(version) + TRAILER.size:
        raise ContainerError(f"file too short for a .slz container ({len(blob)} bytes)")
    if version >= JOINT_STREAM:
        _, _, flags, mlen = HEADER_V7.unpack_from(blob)
        mcrc = None
    else:
        _, _, flags, mlen, mcrc = HEADER.unpack_from(blob)
    if flags & ~FLAG_DEFLATE:
        raise ContainerError(f"unknown flags {flags:#x}")
    (fcrc,) = TRAILER.unpack_from(blob, len(blob) - TRAILER.size)
    if zlib.crc32(blob[:-TRAILER.size]) != fcrc:
        raise ContainerError("file checksum mismatch (truncated or corrupted)")
    payload_start = header_size(version) + mlen
    if mlen > MAX_MANIFEST or payload_start > len(blob) - TRAILER.size:
        raise ContainerError("manifest length is past the end of the file")
    body = blob[header_size(version):payload_start]
    if mcrc is not None and zlib.crc32(body) != mcrc:
        raise ContainerError("manifest checksum mismatch")
    manifest = _parse_manifest(inflate_manifest(body, version) if flags & FLAG_DEFLATE else body, version)
    payload = memoryview(blob)[payload_start:len(blob) - TRAILER.size]
    if version >= IMPLIED_LENGTHS:
        return Container(manifest, [bytes(payload)], len(blob), version, bytes(payload))
    sections = _lengths(manifest, payload) if version >= LENGTHS_ONLY else _sections(manifest, payload)
    return Container(manifest, sections, len(blob), version)


def in_effect(by_version: dict[int, T], version: int) -> T:
    """What a file of ``version`` uses from a table keyed by the version that introduced each entry."""
    return by_version[max(v for v in by_version if v <= version)]


def dictionary(version: int) -> bytes:
    """The preset DEFLATE dictionary of a version-4-or-later manifest."""
    return in_effect(DICTIONARIES, version)


def deflate_manifest(body: bytes, version: int = VERSION) -> bytes:
    """The stored form of a manifest's JSON: zlib (RFC 1950); from version 4 raw DEFLATE with a preset
    dictionary (``DICTIONARY``; version 6: ``DICTIONARY_V6``)."""
    if version >= LENGTHS_ONLY:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, dictionary(version))
        return packer.compress(body) + packer.flush()
    return zlib.compress(body, 9)


def inflate_manifest(body: bytes, version: int = VERSION) -> bytes:
    """Decompress the manifest (zlib; from version 4 raw DEFLATE with the version's preset dictionary),
    refusing to grow past MAX_MANIFEST (no zip bombs)."""
    d = zlib.decompressobj(-15, dictionary(version)) if version >= LENGTHS_ONLY else zlib.decompressobj()
    try:
        out = d.decompress(body, MAX_MANIFEST)
    except zlib.error as e:
        raise ContainerError(f"manifest does not inflate ({e})") from None
    if d.unconsumed_tail or not d.eof:
        raise ContainerError("manifest inflates past its size limit or is incomplete")
    if d.unused_data:
        raise ContainerError("manifest has bytes after its zlib stream")
    return out


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ContainerError("manifest has a duplicate JSON key")
    return out


def _no_constant(name: str) -> None:
    raise ContainerError(f"manifest holds {name}, which is not JSON")


def _parse_manifest(body: bytes, version: int) -> dict:
    """Strict JSON (RFC 8259): UTF-8, no duplicate keys, no NaN / Infinity; a section table (version 7: a
    list of lengths, absent when the rows imply every one)."""
    try:
        manifest = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ContainerError(f"manifest is not valid JSON ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sections", [] if version >= IMPLIED_LENGTHS
                                                                       else None), list):
        raise ContainerError("manifest has no section table")
    return manifest


def _sections(manifest: dict, payload: memoryview) -> list[bytes]:
    """Slice and verify each section; they must tile the payload exactly, in order."""
    out, expected = [], 0
    for i, entry in enumerate(manifest["sections"]):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int) and not isinstance(entry.get(k), bool)
                                                  for k in ("offset", "length", "crc32")):
            raise ContainerError(f"section {i}: malformed entry")
        if entry["offset"] != expected or entry["length"] < 0 or expected + entry["length"] > len(payload):
            raise ContainerError(f"section {i}: offset or length outside the payload")
        data = bytes(payload[expected:expected + entry["length"]])
        if zlib.crc32(data) != entry["crc32"]:
            raise ContainerError(f"section {i}: checksum mismatch")
        out.append(data)
        expected += entry["length"]
    if expected != len(payload):
        raise ContainerError("payload holds bytes no section accounts for")
    return out


def _lengths(manifest: dict, payload: memoryview) -> list[bytes]:
    """Version 4: the sections are the payload cut at the listed lengths, which must add up to it."""
    lengths = manifest["sections"]
    if not all(type(n) is int and n >= 0 for n in lengths):
        raise ContainerError("section table: every length must be a non-negative integer")
    if sum(lengths) != len(payload):
        raise ContainerError("section lengths do not add up to the payload")
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    return [bytes(payload[a:b]) for a, b in zip(starts, starts[1:])]


def read_container(path: str | os.PathLike) -> Container:
    path = Path(path)
    if not path.is_file():
        raise SlimzipError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE:
        raise ContainerError(f"{path}: {size} bytes is larger than any .slz slimzip writes")
    return decode_container(path.read_bytes())
