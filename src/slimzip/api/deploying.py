"""``slimzip export``: a .slz file's (or a checkpoint's) model as dense fp32 ONNX, int8 ONNX or a C99 model
that keeps the file's compressed weights, each checked against the decoded PyTorch model before it is
written."""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes, load_checkpoint
from ..config import EXPORT_FORMATS
from ..codec import NO_ARCHITECTURE, check_model_spec, decode_model, self_describing, spec_input_shape
from ..container import read_container
from ..data import create_loaders
from ..errors import SlimzipError, check_range
from ..measure import measure
from .common import _normalization, _stats

ONNX_TOLERANCE = 1e-4  # max |onnxruntime - PyTorch| / max(1, max |PyTorch|) an exported fp32 graph may show
CALIBRATION_IMAGES = 512  # training images that set the int8 activation ranges
SPLITS = ("test", "val")


@dataclasses.dataclass
class Source:
    """What an export reads: the decoded model, its metadata, and the file's stored tensors (a .slz)."""

    path: Path
    model: torch.nn.Module
    meta: dict
    container: object | None
    shape: tuple[int, ...]

    @property
    def name(self) -> str:
        return self.meta["model"].get("name", "user model (graph)")


def _source(path: str | os.PathLike) -> Source:
    path = Path(path)
    if not path.exists():
        raise SlimzipError(f"{path}: no such file or directory")
    if path.is_file():
        container = read_container(path)
        check_model_spec(container.manifest, container.version, with_model=True)
        if not self_describing(container.manifest):
            raise SlimzipError(f"{path}: {NO_ARCHITECTURE}")
        model, meta = decode_model(container).eval(), container.manifest
    else:
        container = None
        model, meta = load_checkpoint(path, torch.device("cpu"))
    return Source(path, model.eval().cpu(), meta, container, spec_input_shape(meta["model"]))


def _images(src: Source, split: str, limit: int | None, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` images (normalized as in training) and labels of a split of the model's data."""
    if split not in SPLITS:
        raise SlimzipError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
    loaders = create_loaders(src.meta["dataset"], data_dir=data_dir, batch_size=1000, normalize=_normalization(src.meta),
                             stats=_stats(src.meta))
    xs, ys, n = [], [], 0
    for x, y in getattr(loaders, split if split == "val" or loaders.test is not None else "val"):
        xs.append(x.float().cpu().numpy())
        ys.append(y.cpu().numpy())
        n += len(y)
        if limit is not None and n >= limit:
            break
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def _calibration(src: Source, data_dir: str | None) -> np.ndarray:
    loaders = create_loaders(src.meta["dataset"], data_dir=data_dir, batch_size=CALIBRATION_IMAGES,
                             normalize=_normalization(src.meta), stats=_stats(src.meta), augment=False)
    return next(iter(loaders.train))[0].float().cpu().numpy()


@torch.no_grad()
def _logits(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    return np.concatenate([model(torch.from_numpy(images[i:i + 500])).numpy() for i in range(0, len(images), 500)])


def _agreement(got: np.ndarray, want: np.ndarray, labels: np.ndarray | None) -> dict:
    out = {"images": len(got), "max_abs_diff": float(np.abs(got - want).max()),
           "same_argmax": float((got.argmax(1) == want.argmax(1)).mean())}
    if labels is not None:
        out["accuracy"] = float((got.argmax(1) == labels).mean())
        out["pytorch_accuracy"] = float((want.argmax(1) == labels).mean())
    return out


def _check_images(src: Source, check_images: int | None, split: str | None, data_dir: str | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Images of ``split`` (labels too), or seeded random inputs without a split (``auto``: the test split
    when the file names its dataset)."""
    if split == "auto":
        split = "test" if src.meta.get("dataset") else None
    if split and not src.meta.get("dataset"):
        raise SlimzipError(f"{src.path} names no dataset: check it on random inputs (no --split)")
    if split:
        return _images(src, split, check_images, data_dir)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(check_images or 64, *src.shape, generator=gen).numpy(), None


def _out_path(out: str | os.PathLike, src: Source, suffix: str) -> Path:
    out = Path(out)
    if out.suffix != suffix:
        raise SlimzipError(f"{out}: the output file must end in {suffix}")
    if out.exists() and out.resolve() == src.path.resolve():
        raise SlimzipError(f"{out}: the output would overwrite the input")
    return out


def _ort_run(blob: bytes, images: np.ndarray) -> tuple[np.ndarray, float]:
    """onnxruntime's logits on ``images`` (batches of 500) and its seconds per image one at a time."""
    from ..deploy.onnx import _require

    ort = _require("onnxruntime")
    try:
        options = ort.SessionOptions()
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        logits = np.concatenate([session.run(None, {"input": images[i:i + 500]})[0]
                                 for i in range(0, len(images), 500)])
        one = images[:min(len(images), 200)]
        t0 = time.perf_counter()
        for i in range(len(one)):
            session.run(None, {"input": one[i:i + 1]})
        return logits, (time.perf_counter() - t0) / max(1, len(one))
    except Exception as e:
        raise SlimzipError(f"onnxruntime cannot run the exported graph ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _onnx(src: Source, out: Path, images: np.ndarray, labels, data_dir: str | None) -> tuple[dict, dict]:
    from ..deploy.onnx import to_onnx

    out = _out_path(out, src, ".onnx")
    blob = to_onnx(src.model, src.shape)
    got, seconds = _ort_run(blob, images)
    want = _logits(src.model, images)
    check = _agreement(got, want, labels)
    relative = check["max_abs_diff"] / max(1.0, float(np.abs(want).max()))
    if relative > ONNX_TOLERANCE:  # a wrong graph is not written
        raise SlimzipError(f"{src.path}: the ONNX graph's outputs differ from PyTorch's by {relative:.3g} "
                           f"(relative; tolerance {ONNX_TOLERANCE:g}); not written")
    return {"file": str(out), "file_bytes": len(blob), "seconds_per_image": seconds, "check": check}, {out: blob}


def _onnx_int8(src: Source, out: Path, images: np.ndarray, labels, data_dir: str | None) -> tuple[dict, dict]:
    from ..deploy.int8 import quantize_int8
    from ..deploy.onnx import to_onnx

    out = _out_path(out, src, ".onnx")
    blob, floats = quantize_int8(to_onnx(src.model, src.shape), _calibration(src, data_dir))
    got, seconds = _ort_run(blob, images)
    return ({"file": str(out), "file_bytes": len(blob), "seconds_per_image": seconds,
             "calibration_images": CALIBRATION_IMAGES, "float_nodes": floats,
             "check": _agreement(got, _logits(src.model, images), labels)},
            {out: blob})


def _tflite_int8(src: Source, out: Path, images: np.ndarray, labels, data_dir: str | None) -> tuple[dict, dict]:
    from ..deploy.tflite import run_tflite, to_tflite_int8

    out = _out_path(out, src, ".tflite")
    blob = to_tflite_int8(src.model, _calibration(src, data_dir))
    got, seconds = run_tflite(blob, images)
    return ({"file": str(out), "file_bytes": len(blob), "seconds_per_image": seconds,
             "calibration_images": CALIBRATION_IMAGES, "check": _agreement(got, _logits(src.model, images), labels)},
            {out: blob})


def _c(src: Source, out: Path, images: np.ndarray | None, labels, data_dir: str | None,
       dense: bool = False) -> tuple[dict, dict]:
    from ..deploy import cbuild
    from ..deploy.footprint import c_model

    out = _out_path(out, src, ".c")
    about = f"{src.name} ({src.meta.get('dataset') or 'dataset not recorded'}) from {src.path.name}"
    cmodel = c_model(src.model, None if dense else src.container, src.shape, cbuild.c_name(out), about)
    result = {"file": str(out), "header": str(out.with_suffix(".h")), "weight_bytes": cmodel.weight_bytes,
              "arena_bytes": cmodel.arena_bytes}
    if images is not None:
        with cbuild.scratch() as tmp:
            built = cbuild.build(cmodel, Path(tmp))
            got, seconds = cbuild.run(built, images, cmodel.output_size)
        result.update(flash_bytes=built.flash_bytes, ram_bytes=built.ram_bytes, stack_bytes=built.stack_bytes,
                      seconds_per_image=seconds, check=_agreement(got, _logits(src.model, images), labels),
                      cflags=" ".join(cbuild.CFLAGS))
    return result, {out: cmodel.source.encode(), out.with_suffix(".h"): cmodel.header.encode()}


FORMATS: dict[str, Callable[..., tuple[dict, dict]]] = dict(zip(EXPORT_FORMATS, (
    _onnx, _onnx_int8, _tflite_int8, _c, functools.partial(_c, dense=True))))


def export(path: str | os.PathLike, out: str | os.PathLike, *, format: str = "onnx", check: bool = True,
           check_images: int | None = None, split: str | None = None, data_dir: str | None = None,
           seed: int = 0) -> dict:
    """Write a .slz file's (or a checkpoint's) model as ``format`` (``onnx``: dense fp32; ``onnx-int8``;
    ``tflite-int8``: int8 TFLite through litert-torch; ``c``: C99 keeping the file's codebooks, codes and
    sparse positions; ``c-dense``: the same C with every weight a float32 array) and check it against the
    decoded PyTorch model: on ``check_images`` images of ``split`` (default all of it; ``auto``: test when
    the file names its dataset), or on seeded random inputs without a split (default 64). ``check=False``
    (C only) writes without compiling. Files are written only after the check passes."""
    if format not in FORMATS:
        raise SlimzipError(f"unknown export format {format!r}; choose from: {', '.join(FORMATS)}")
    if check_images is not None:
        check_range("check images", check_images, 1, 1_000_000)
    if not format.startswith("c") and not check:
        raise SlimzipError("ONNX and TFLite exports are always checked by their runtime")
    src = _source(path)
    if format.startswith("c") and check:
        from ..deploy.cbuild import compiler

        compiler()  # no compiler: say so before any work
    if check and split == "auto":
        split = "test" if src.meta.get("dataset") else None
    images, labels = _check_images(src, check_images, split, data_dir, seed) if check else (None, None)
    result, files = FORMATS[format](src, Path(out), images, labels, data_dir)
    for file, blob in files.items():
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(file, blob)
    return {"source": str(src.path), "source_bytes": src.path.stat().st_size if src.path.is_file() else None,
            "format": format, "model": src.name, "dataset": src.meta.get("dataset"), "input_shape": ["batch", *src.shape],
            "params": measure(src.model, src.shape).params, "split": split, **result}
