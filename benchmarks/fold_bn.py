"""What folding BatchNorm saves, on the same models: each given .slz file is decoded and re-encoded with
its own codebooks, codes and sparse positions, once with BatchNorm stored as it was trained (4 tensors
plus the bias before it) and once folded (scale + shift, the bias moved in; `CompressConfig.fold_bn`,
the default). Both files are decoded again and scored on the test split.

Usage: SLIMZIP_DATA=../shared/data python benchmarks/fold_bn.py FILE.slz [FILE.slz ...]
Writes benchmarks/results/fold_bn.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from slimzip.codec import decode_model, decode_shared, encode_model
from slimzip.deep_compression import CompressConfig
from slimzip.container import Container, decode_container, read_container
from slimzip.data import create_loaders
from slimzip.sharing import SharedLayer
from slimzip.trainer import evaluate


def shared_layers(container: Container) -> dict[str, SharedLayer]:
    """The file's codebooks, codes and kept positions, exactly as stored."""
    return {e["name"]: decode_shared(container, e, e["shape"]) for e in container.manifest["tensors"]
            if e["encoding"] == "shared"}


def reencode(path: Path, loaders) -> dict:
    container = read_container(path)
    manifest = container.manifest
    model, layers = decode_model(container).eval(), shared_layers(container)
    fields = {f.name for f in dataclasses.fields(CompressConfig)}
    cfg = CompressConfig(**{k: v for k, v in manifest["config"].items() if k in fields})
    row = {"file": str(path), "model": manifest["model"]["name"], "bytes": container.file_bytes}
    x = next(iter(loaders.test))[0]
    for fold in (False, True):
        blob = encode_model(model, manifest["model"], layers, dataclasses.replace(cfg, fold_bn=fold),
                            {"dataset": manifest.get("dataset")})
        decoded = decode_model(decode_container(blob)).eval()
        with torch.no_grad():
            diff = float((decoded(x) - model(x)).abs().max())
        tag = "folded" if fold else "unfolded"
        row[tag] = {"bytes": len(blob), "test_accuracy": evaluate(decoded, loaders.test)[1], "max_logit_diff": diff}
    row["saved"] = 1 - row["folded"]["bytes"] / row["unfolded"]["bytes"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fold_bn.json"))
    args = parser.parse_args()
    loaders: dict = {}  # per dataset
    rows = []
    for f in args.files:
        dataset = read_container(f).manifest.get("dataset", "mnist")
        loaders.setdefault(dataset, create_loaders(dataset, batch_size=1000))
        rows.append(reencode(Path(f), loaders[dataset]))
    print(f"{'file':50} {'as written':>10} {'unfolded':>9} {'folded':>8} {'saved':>6} {'test unf.':>9} "
          f"{'test fold':>9} {'max dlogit':>10}")
    for r in rows:
        u, f = r["unfolded"], r["folded"]
        print(f"{r['file']:50} {r['bytes']:>10,} {u['bytes']:>9,} {f['bytes']:>8,} {r['saved']:>6.1%} "
              f"{u['test_accuracy']:>9.4f} {f['test_accuracy']:>9.4f} {f['max_logit_diff']:>10.2g}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
