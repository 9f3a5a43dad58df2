"""``slimzip inspect``: where the bytes of a .slz file go, per tensor and per component."""

from __future__ import annotations

import math

from .container import TRAILER, Container, header_size


def inspect_container(container: Container, table: list[dict] | None = None) -> dict:
    """Per-tensor rows (weights, kept %, bits per weight for codes and indices, bytes) and the bytes of
    every component, which add up to the file size. ``table``: the keyed tensor entries
    (``codec.model_table``; needed from version 4, whose rows hold no names or shapes)."""
    fixed = header_size(container.version) + TRAILER.size
    rows, parts = [], {"header": fixed, "manifest": 0, "codebooks": 0, "codes": 0, "indices": 0, "raw": 0}
    parts["manifest"] = container.file_bytes - fixed - sum(len(s) for s in container.sections)
    for e in table if table is not None else container.manifest.get("tensors", []):
        numel = math.prod(e["shape"])
        if e["encoding"] == "shared":
            sizes = {k: len(container.sections[e[k]]) if k in e else round(e["symbols"][k][1] / 8)
                     for k in ("codebook", "codes", "index")}  # a stream in the joint stream: the bits it took
            parts["codebooks"] += sizes["codebook"]
            parts["codes"] += sizes["codes"]
            parts["indices"] += sizes["index"]
            nnz = max(e["nnz"], 1)
            rows.append({"name": e["name"], "encoding": "shared", "weights": numel, "kept": e["nnz"] / numel,
                         "bits": e["bits"] if "bits" in e else math.ceil(math.log2(max(e["centroids"], 2))),
                         "centroids": e.get("centroids", 2 ** e.get("bits", 0)),
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
            rows.append({"name": e["name"], "encoding": e["encoding"], "weights": numel, "kept": 1.0,
                         "dtype": e.get("dtype", "uint8"), "bytes": size})
    if any("symbols" in e for e in table or ()):  # the joint stream's priors and its coder's final state
        parts["stream"] = len(container.sections[-1]) - sum(round(bits / 8) for e in table if "symbols" in e
                                                            for _, bits in e["symbols"].values())
    assert sum(parts.values()) == container.file_bytes  # every byte is accounted for
    return {"file_bytes": container.file_bytes, "components": parts, "tensors": rows}
