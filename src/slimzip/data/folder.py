"""Image folders: ``imagefolder:DIR`` as a dataset, one sub-folder per class, read with Pillow.

Layouts: ``DIR/train/<class>/*``, ``DIR/val/<class>/*`` and optionally ``DIR/test/<class>/*`` (without
``test/`` the validation images are the test images too); or ``DIR/<class>/*`` alone, split per class
into 80% train, 10% validation, 10% test with a fixed seed. Every image must have the same size; images
that are all greyscale give one channel, otherwise RGB. Normalisation: the training images' per-channel
mean and standard deviation, recorded in the checkpoint (and the .slz file) by the dataset's name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SlimzipError

PREFIX = "imagefolder:"
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MAX_IMAGES = 2_000_000
SPLIT_SEED = 0


@dataclass(frozen=True)
class Folder:
    classes: tuple[str, ...]
    splits: dict  # 'train' / 'val' / 'test' -> (images uint8 (N, C, H, W), labels int64 (N,))
    layout: str  # how the splits were made, in words


def is_image_folder(name: str) -> bool:
    return name.startswith(PREFIX)


def absolute(name: str) -> str:
    """``imagefolder:DIR`` with DIR made absolute, so a checkpoint or file finds it from any directory."""
    return f"{PREFIX}{Path(name[len(PREFIX):]).expanduser().resolve()}" if is_image_folder(name) else name


def folder_path(name: str) -> Path:
    path = Path(name[len(PREFIX):]).expanduser()
    if not path.is_dir():
        raise SlimzipError(f"--dataset {name}: {path} is not a folder")
    return path.resolve()


def _files(root: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {c.name: sorted(f for f in c.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
            for c in classes}


def _read(files: list[Path], root: Path) -> tuple[np.ndarray, str]:
    from PIL import Image, UnidentifiedImageError

    images, modes, size, first = [], set(), None, None
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                modes.add("L" if im.mode in ("L", "1", "I;16", "I") else "RGB")
                im = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise SlimzipError(f"{f}: not a readable image ({type(e).__name__})") from None
        if size is None:
            size, first = im.size, f
        elif im.size != size:
            raise SlimzipError(f"image folder {root}: mixed image sizes ({first.name} is {size[0]}x{size[1]}, "
                               f"{f.name} is {im.size[0]}x{im.size[1]}); resize them to one size first")
        images.append(np.asarray(im, dtype=np.uint8))
    return np.stack(images).transpose(0, 3, 1, 2), "L" if modes == {"L"} else "RGB"


@functools.lru_cache(maxsize=4)
def read_folder(root: Path) -> Folder:
    """Read every image below ``root`` (see the module docstring)."""
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" in split_dirs and "val" not in split_dirs:
        raise SlimzipError(f"image folder {root}: has train/ but no val/")
    trees = {s: _files(d) for s, d in split_dirs.items()} if "train" in split_dirs else {"all": _files(root)}
    classes = tuple(sorted(set().union(*(t.keys() for t in trees.values()))))
    listed = {s: [(f, classes.index(c)) for c, fs in t.items() for f in fs] for s, t in trees.items()}
    count = sum(len(v) for v in listed.values())
    if count == 0:
        raise SlimzipError(f"image folder {root}: no images (want one sub-folder per class holding "
                           f"{', '.join(sorted(EXTENSIONS))} files)")
    if len(classes) < 2:
        raise SlimzipError(f"image folder {root}: {len(classes)} class folder; a classifier needs at least 2")
    if count > MAX_IMAGES:
        raise SlimzipError(f"image folder {root}: {count:,} images is more than slimzip reads ({MAX_IMAGES:,})")
    x, mode = _read([f for v in listed.values() for f, _ in v], root)
    if mode == "L":
        x = x[:, :1]
    y = np.array([c for v in listed.values() for _, c in v], dtype=np.int64)
    bounds = np.cumsum([0] + [len(v) for v in listed.values()])
    parts = {s: _shuffled(x[a:b], y[a:b]) for s, a, b in zip(listed, bounds[:-1], bounds[1:])}
    if "all" in parts:
        return Folder(classes, _split(*parts["all"]), "class folders split 80/10/10 (train/val/test), seed 0")
    if "test" not in parts:
        parts["test"] = parts["val"]
        return Folder(classes, parts, "train/ and val/ folders; val/ is also the test split")
    return Folder(classes, parts, "train/, val/ and test/ folders")


def _shuffled(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One fixed permutation: folders list images class by class, and slimzip takes consecutive images
    for subsets, short fine-tunes and BN recalibration, which must not all come from one class."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    return x[order], y[order]


def _split(x: np.ndarray, y: np.ndarray) -> dict:
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = n_test = max(1, len(idx) // 10) if len(idx) >= 3 else 0
        parts["val"] += idx[:n_val].tolist()
        parts["test"] += idx[n_val:n_val + n_test].tolist()
        parts["train"] += idx[n_val + n_test:].tolist()
    if not parts["val"]:
        raise SlimzipError("image folder: too few images per class to split off validation images (want >= 3)")
    return {s: (x[sorted(i)], y[sorted(i)]) for s, i in parts.items()}  # ``x`` is shuffled already


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, as fractions of 255."""
    flat = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1).astype(np.float64) / 255.0
    return tuple(float(m) for m in flat.mean(1)), tuple(float(max(s, 1e-3)) for s in flat.std(1))
