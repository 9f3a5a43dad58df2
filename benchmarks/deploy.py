"""What each deployed form of a .slz file costs, side by side in one run: the .slz bytes, the C99 model's
weight bytes, flash and RAM (compiled -std=c99 -O2 -Wall -Wextra -Werror) beside the same C with float32
weights (c-dense: no decoding, every weight stored), the int8 and dense fp32 ONNX files' bytes and the int8
TFLite file's (with slimzip[tflite]), latency per image (one image at a time on this CPU) and the test
accuracy of each artifact beside the decoded PyTorch model's.

Usage: python benchmarks/deploy.py [NAME=FILE.slz ...] [--images N] [--threads T]
(default: the README's main-job LeNet-5, the ResNet-20 file of the CIFAR-10 experiment and a VGG-11 file,
where they exist under runs/);
writes benchmarks/results/deploy.json and prints the table."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import slimzip
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {"lenet-5 (main job)": "runs/lenet-5-bn.slz",
            "resnet20 (cifar10)": "runs/paper_cifar/resnet20-long/compare-recover3x1/frontier.slz",
            "vgg11 (cifar10)": "runs/paper_cifar/vgg11/compare-recover3x0/frontier.slz"}


def measure(path: Path, images: int | None, dense_images: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        c = slimzip.export(path, Path(tmp) / "model.c", format="c", split="test", check_images=images)
        d = slimzip.export(path, Path(tmp) / "dense.c", format="c-dense", split="test",
                           check_images=min(images or dense_images, dense_images))
        q = slimzip.export(path, Path(tmp) / "int8.onnx", format="onnx-int8", split="test", check_images=images)
        f = slimzip.export(path, Path(tmp) / "fp32.onnx", format="onnx", split="test", check_images=images)
        t = (slimzip.export(path, Path(tmp) / "int8.tflite", format="tflite-int8", split="test", check_images=images)
             if importlib.util.find_spec("litert_torch") else None)
        seconds = time.perf_counter() - t0
    return {"file": str(path), "model": c["model"], "slz_bytes": c["source_bytes"], "params": c["params"],
            **file_fields(path, c["source_bytes"], c["check"]["pytorch_accuracy"], seconds),
            "images": c["check"]["images"], "pytorch_accuracy": c["check"]["pytorch_accuracy"],
            "c": {k: c[k] for k in ("weight_bytes", "flash_bytes", "ram_bytes", "arena_bytes", "stack_bytes",
                                    "seconds_per_image")} | {"accuracy": c["check"]["accuracy"],
                                                             "same_argmax": c["check"]["same_argmax"],
                                                             "max_abs_diff": c["check"]["max_abs_diff"]},
            "c_dense": {k: d[k] for k in ("weight_bytes", "flash_bytes", "ram_bytes", "seconds_per_image")}
            | {"accuracy": d["check"]["accuracy"], "images": d["check"]["images"]},
            "onnx_int8": {"file_bytes": q["file_bytes"], "seconds_per_image": q["seconds_per_image"],
                          "accuracy": q["check"]["accuracy"], "same_argmax": q["check"]["same_argmax"]},
            "tflite_int8": {"file_bytes": t["file_bytes"], "seconds_per_image": t["seconds_per_image"],
                            "accuracy": t["check"]["accuracy"]} if t else None,
            "onnx_fp32": {"file_bytes": f["file_bytes"], "seconds_per_image": f["seconds_per_image"],
                          "accuracy": f["check"]["accuracy"]},
            "wall_seconds": round(seconds, 1)}


def file_fields(path: Path, slz_bytes: int, accuracy: float, seconds: float) -> dict:
    """The fields every result row carries: the file's bytes, its ratio to the dense fp32 registry model it
    narrowed (None for a model the registry does not have), the decoded model's test accuracy on the
    checked images, and the benchmark's cost."""
    from slimzip.api.files import inspect_file
    from slimzip.catalog import load

    spec = inspect_file(path)["model"]
    params = {r["name"]: r["params"] for r in load()}.get(spec.get("name") if isinstance(spec, dict) else None)
    return {"file_bytes": slz_bytes, "compression_ratio": round(4 * params / slz_bytes, 2) if params else None,
            "test_accuracy": accuracy, "cost": {"wall_seconds": round(seconds, 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="NAME=FILE.slz (default: the files listed in DEFAULTS that exist)")
    parser.add_argument("--images", type=int, help="test images per check (default: the whole test split)")
    parser.add_argument("--dense-images", type=int, default=500,
                        help="test images for c-dense, the slowest form (default 500)")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    files = dict(f.split("=", 1) for f in args.files) or {k: v for k, v in DEFAULTS.items() if (ROOT / v).exists()}
    rows = {name: measure(ROOT / path if not Path(path).is_absolute() else Path(path), args.images, args.dense_images)
            for name, path in files.items()}
    head = (f"{'model':<20} {'.slz B':>8} {'C weights':>9} {'C flash':>8} {'C RAM':>8} {'C-dense flash':>13} "
            f"{'int8 ONNX':>10} {'fp32 ONNX':>10} {'ms C':>7} {'ms Cdense':>9} {'ms int8':>7} {'ms fp32':>7}  "
            f"accuracy: PyTorch / C / int8 / fp32")
    print(head)
    for name, r in rows.items():
        c, d, q, f = r["c"], r["c_dense"], r["onnx_int8"], r["onnx_fp32"]
        print(f"{name:<20} {r['slz_bytes']:>8,} {c['weight_bytes']:>9,} {c['flash_bytes']:>8,} {c['ram_bytes']:>8,} "
              f"{d['flash_bytes']:>13,} {q['file_bytes']:>10,} {f['file_bytes']:>10,} {1e3 * c['seconds_per_image']:>7.3f} "
              f"{1e3 * d['seconds_per_image']:>9.3f} "
              f"{1e3 * q['seconds_per_image']:>7.3f} {1e3 * f['seconds_per_image']:>7.3f}  "
              f"{100 * r['pytorch_accuracy']:.2f} / {100 * c['accuracy']:.2f} / {100 * q['accuracy']:.2f} / "
              f"{100 * f['accuracy']:.2f}")
    out = ROOT / "benchmarks" / "results" / "deploy.json"
    out.write_text(json.dumps({"machine": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
                               "command": "python benchmarks/deploy.py" + (f" --images {args.images}" if args.images
                                                                           else "") + f" --dense-images {args.dense_images}",
                               "rows": rows}, indent=2) + "\n")
    for name, r in rows.items():
        t = r["tflite_int8"]
        print(f"{name}: int8 TFLite " + (f"{t['file_bytes']:,} B, {1e3 * t['seconds_per_image']:.3f} ms/image, "
                                         f"accuracy {100 * t['accuracy']:.2f}" if t else "not measured (no litert-torch)"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
