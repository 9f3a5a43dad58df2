"""The version-4 manifest: the tensor table as positional rows, channel plans as bitmasks (version 6: as
counts), codebooks of the used centroids only, in float16 (docs/FORMAT.md, "Version 4", "Version 6").

Names, shapes and section numbers are not stored: the rows follow the rebuilt model's tensor names in
sorted order (code points; the same whatever order a model registers them in), each row takes the next
sections in order, and the shapes are the model's. The codec writes the
keyed (version-3) entries first and ``compact_manifest`` turns them into rows; ``expand_rows`` turns rows
back into keyed entries that the one validating decoder reads, whatever the version.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any, Callable

import numpy as np
import torch

from .container import FIXED_COSTS, IMPLIED_LENGTHS, LENGTHS_ONLY, ContainerError, in_effect
from .sharing import SharedLayer

# row tag -> (encoding, the row's fields after the tag)
ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    "r": ("raw", ("dtype",)),
    "c": ("constant", ("value",)),
    "s": ("shared", ("centroids", "index_bits", "codes_coder", "index_coder", "nnz", "gap_symbols")),
    "q": ("quantized", ()),
    "p": ("packed", ("bits",)),
}
TAGS = {encoding: tag for tag, (encoding, _) in ROWS.items()}
SECTIONS = {"raw": ("data",), "constant": (), "shared": ("codebook", "codes", "index"), "quantized": ("data",),
            "packed": ("data",)}  # each encoding's section fields, in file order
AFFINE = ("quantized", "packed")  # lo + step x q, q a byte or packed bits
JOINT = "joint"  # the coder of a stream held in the file's joint stream (version 7): the stream has no section
CONTEXT = "context"  # the coder of a code stream held in the joint stream under the context model (version 8)
HELD = (JOINT, CONTEXT)  # the coders whose stream sits in the joint stream
STREAMS = ("codes", "index")  # a shared tensor's coded streams, in the order they sit in the joint stream
MAX_CENTROIDS = 1 << 16
MAX_PLAN_CHANNELS = 1 << 20


def compact_layer(layer: SharedLayer) -> SharedLayer:
    """Only the centroids some kept weight uses, rounded to float16, the codes renumbered (at least one
    centroid, 0, for a layer with no weight left)."""
    used, codes = torch.unique(layer.codes, sorted=True, return_inverse=True)
    centroids = layer.centroids[used].half().float() if len(used) else torch.zeros(1)
    bits = max(1, math.ceil(math.log2(len(centroids)))) if len(centroids) > 1 else 1
    return SharedLayer(centroids, codes.reshape(-1).long(), layer.mask, bits)


def plan_to_masks(plan: dict[str, list[int]]) -> dict[str, str]:
    """Kept channel indices -> base64 of a bitmask (bit i, most significant first in each byte: channel
    i kept), up to the last kept channel."""
    out = {}
    for root, kept in plan.items():
        bits = np.zeros(max(kept) + 1 if kept else 0, dtype=np.uint8)
        bits[kept] = 1
        out[root] = base64.b64encode(np.packbits(bits).tobytes()).decode()
    return out


def plan_to_counts(plan: dict[str, list[int]]) -> dict[str, int]:
    """Version 6: how many channels each root keeps. The file's tensors are the narrowed ones, so which
    channels were kept does not change the model: the reader keeps the first ``n``."""
    return {root: len(kept) for root, kept in plan.items()}


def counts_to_plan(counts: Any) -> dict[str, list[int]]:
    """The inverse of ``plan_to_counts`` (the kept channels renumbered from 0), every field checked."""
    if not isinstance(counts, dict):
        raise ContainerError("the channel plan is malformed (want {layer: number of kept channels})")
    plan = {}
    for root, n in counts.items():
        if type(n) is not int or not 1 <= n <= MAX_PLAN_CHANNELS:
            raise ContainerError(f"the channel plan of {root!r} is not a count of kept channels "
                                 f"(an integer in [1, {MAX_PLAN_CHANNELS}])")
        plan[root] = list(range(n))
    return plan


def masks_to_plan(masks: Any) -> dict[str, list[int]]:
    """The inverse of ``plan_to_masks``, every field checked."""
    if not isinstance(masks, dict):
        raise ContainerError("the channel plan is malformed (want {layer: base64 bitmask})")
    plan = {}
    for root, text in masks.items():
        if not isinstance(text, str) or len(text) > 4 * MAX_PLAN_CHANNELS // 24 + 4:
            raise ContainerError(f"the channel plan of {root!r} is not a bitmask string")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ContainerError(f"the channel plan of {root!r} is not base64") from None
        kept = np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8))).tolist()
        if not kept or kept[-1] < 8 * len(raw) - 8 or base64.b64encode(raw).decode() != text:
            raise ContainerError(f"the channel plan of {root!r} is not the shortest bitmask of its channels")
        plan[root] = kept
    return plan


# how a compact manifest stores the channel plan, by the version that introduced the form: (writer, reader)
PLAN_FORMS: dict[int, tuple[Callable[[dict], dict], Callable[[Any], dict[str, list[int]]]]] = {
    LENGTHS_ONLY: (plan_to_masks, masks_to_plan), FIXED_COSTS: (plan_to_counts, counts_to_plan)}


def plan_form(version: int) -> tuple[Callable[[dict], dict], Callable[[Any], dict[str, list[int]]]]:
    """The (writer, reader) of the channel plan in a compact manifest of ``version``."""
    return in_effect(PLAN_FORMS, version)


def entry_sections(entry: dict) -> tuple[str, ...]:
    """The section fields a keyed entry takes, in file order: its encoding's, less the streams held in the
    joint stream."""
    coders = entry.get("coders") if isinstance(entry.get("coders"), dict) else {}
    return tuple(k for k in SECTIONS.get(entry.get("encoding"), ()) if coders.get(k) not in HELD)


def implied(entry: dict, key: str) -> bool:
    """Whether a version-7 reader knows the length of an entry's ``key`` section from its row and shape: all
    but the coded streams whose coder is not ``fixed``."""
    return key not in STREAMS or entry["coders"][key] == "fixed"


def joint_streams(entries: list[dict]) -> list[tuple[dict, str]]:
    """(entry, stream) of every adaptive member of the joint stream, in its order: rows in order, codes first."""
    return [(e, k) for e in entries if isinstance(e.get("coders"), dict)
            for k in STREAMS if e["coders"].get(k) == JOINT]


def context_streams(entries: list[dict]) -> list[dict]:
    """The entries whose code stream is a context member of the joint stream (after the adaptive ones), in order."""
    return [e for e in entries if isinstance(e.get("coders"), dict) and e["coders"].get("codes") == CONTEXT]


def has_joint_stream(entries: list[dict]) -> bool:
    """Whether the file's last section is a joint stream: some row holds a stream in it."""
    return bool(joint_streams(entries) or context_streams(entries))


def compact_manifest(manifest: dict, sections: list[bytes], version: int,
                     joint: bytes | None = None) -> tuple[dict, list[bytes]]:
    """A keyed (version-3) manifest and its sections as version 4 or later: rows in name order with their
    sections in the same order, the plan as bitmasks (version 6: counts), no write-time config;
    version 7: the joint stream (``joint``) the last section, and a table of the lengths the rows do not imply."""
    rows, ordered, explicit = [], [], []
    for e in sorted(manifest["tensors"], key=lambda e: e["name"]):
        ordered += [sections[e[key]] for key in entry_sections(e)]
        explicit += [len(sections[e[key]]) for key in entry_sections(e) if not implied(e, key)]
        if e["encoding"] == "shared":
            rows.append(["s", e["centroids"], e["index_bits"], e["coders"]["codes"], e["coders"]["index"], e["nnz"],
                         e["gap_symbols"]])
        else:
            tag = TAGS[e["encoding"]]
            rows.append([tag] + [e[f] for f in ROWS[tag][1]])
    model = dict(manifest["model"])
    if model.get("plan"):
        model["plan"] = plan_form(version)[0](model["plan"])
    else:
        model.pop("plan", None)
    table = {"sections": explicit} if version >= IMPLIED_LENGTHS else {}
    return {**{k: v for k, v in manifest.items() if k not in ("tensors", "config")}, "model": model,
            "tensors": rows, **table}, ordered + ([joint] if joint is not None else [])


def expand_rows(rows: Any, shapes: dict[str, list[int]], sections: int | None) -> list[dict]:
    """Version-4 rows as keyed entries, named and shaped by the model (``shapes``; rows in sorted name
    order), each taking the next sections; every section must be taken exactly once (the last is the joint
    stream when a row holds a stream in it; ``sections`` None: version 7, whose payload is cut by the rows)."""
    if not isinstance(rows, list) or len(rows) != len(shapes):
        raise ContainerError("the file's tensors do not match the model's (one row per tensor, in order)")
    entries, taken = [], 0
    for (name, shape), row in zip(sorted(shapes.items()), rows):
        tag = row[0] if isinstance(row, list) and row and isinstance(row[0], str) else None
        if tag not in ROWS or len(row) != 1 + len(ROWS[tag][1]):
            raise ContainerError(f"tensor {name}: malformed row (unknown encoding or wrong length)")
        encoding, fields = ROWS[tag]
        entry: dict[str, Any] = {"name": name, "shape": shape, "encoding": encoding, **dict(zip(fields, row[1:]))}
        if encoding == "shared":
            entry["coders"] = {"codes": entry.pop("codes_coder"), "index": entry.pop("index_coder")}
        for key in entry_sections(entry):
            entry[key] = taken
            taken += 1
        entries.append(entry)
    if sections is not None and taken != sections - (1 if has_joint_stream(entries) else 0):
        raise ContainerError("the tensor table does not use every section exactly once")
    return entries
