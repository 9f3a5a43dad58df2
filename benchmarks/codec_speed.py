"""Encode and decode speed of a VGG-19-sized model: 20M weights, 90% sparse, 5-bit codes.

Builds slimzip's VGG-19, keeps a random 10% of each layer's weights (magnitude pruning of random
weights), shares them with 5-bit codebooks in every layer, then times, per coder and side by side:
  cluster   k-means weight sharing of all layers (WeightSharer.fit)
  encode    model -> .slz bytes (sparse indices + entropy coding + container)
  decode    .slz bytes -> model (container checks + entropy decoding + rebuild)
and the file size. The target (issue 4): encode and decode each under 10 s on the CPU.

Usage: python benchmarks/codec_speed.py [--quick]    (writes benchmarks/results/codec_speed.json)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from slimzip.codec import decode_model, encode_model
from slimzip.deep_compression import CompressConfig
from slimzip.container import decode_container
from slimzip.models import create_model
from slimzip.sharing import WeightSharer
from slimzip.unstructured import MagnitudePruner, apply_masks_, prunable_weights


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="VGG-11 instead of VGG-19 (a smoke run)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "codec_speed.json"))
    args = parser.parse_args()
    name = "vgg11" if args.quick else "vgg19"
    torch.manual_seed(0)
    model = create_model(name).eval()
    masks = MagnitudePruner(sparsity=0.9).fit(model).masks_
    apply_masks_(model, masks)
    weights = sum(w.numel() for w in prunable_weights(model).values())
    sharer, cluster_s = timed(lambda: WeightSharer(bits_conv=5, bits_fc=5).fit(model, masks))
    rows = []
    for coder in ("huffman", "rans", "fixed", "auto"):
        cfg = CompressConfig(sparsity=0.9, bits_conv=5, bits_fc=5, coder=coder)
        blob, encode_s = timed(lambda: encode_model(model, {"name": name, "kwargs": {}}, sharer.layers_, cfg))
        decoded, decode_s = timed(lambda: decode_model(decode_container(blob)))
        same = all(torch.equal(a, b) for a, b in zip(prunable_weights(model).values(),
                                                     prunable_weights(decoded).values()))
        rows.append({"coder": coder, "encode_s": round(encode_s, 2), "decode_s": round(decode_s, 2),
                     "file_bytes": len(blob), "bits_per_kept_weight": round(8 * len(blob) / (weights * 0.1), 3),
                     "round_trip_exact": same})
    print(f"{name}: {weights:,} prunable weights, 90% sparse, 5-bit codes; k-means of all layers {cluster_s:.2f} s")
    print(f"{'coder':8} {'encode s':>9} {'decode s':>9} {'file bytes':>12} {'bits/kept w':>12} exact")
    for r in rows:
        print(f"{r['coder']:8} {r['encode_s']:>9.2f} {r['decode_s']:>9.2f} {r['file_bytes']:>12,} "
              f"{r['bits_per_kept_weight']:>12.3f} {r['round_trip_exact']}")
    meta = {"model": name, "weights": weights, "sparsity": 0.9, "bits": 5, "cluster_s": round(cluster_s, 2),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
