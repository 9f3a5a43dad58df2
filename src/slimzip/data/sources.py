"""Official dataset files: where they live, how they are verified, downloaded and read.

MNIST comes as four idx ``.gz`` files; CIFAR-10/100 as pickled python batches, which are read with a
restricted unpickler that accepts only the three numpy globals those files contain, so a hostile file
cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SlimzipError, unknown
from .folder import channel_stats, folder_path, is_image_folder, read_folder


@dataclass(frozen=True)
class Arrays:
    """A dataset as uint8 images (N, C, H, W) and int64 labels (N,), train and test."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_x: np.ndarray | None = None  # given by the source (an image folder's val/); None: carved from train
    val_y: np.ndarray | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything slimzip knows about one dataset."""

    name: str
    folder: str  # sub-folder of the data dir holding the files
    files: dict[str, str]  # file name -> md5 of the official release
    read: Callable[[Path], Arrays]
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]  # per channel, pixels in [0, 1]
    std: tuple[float, ...]
    val_size: int  # images carved from the training set for validation
    augment: bool  # trained on augmented batches by default (natural images; digits are not)
    crop_pad: int = 4  # augmentation: a random crop inside a zero pad of this many pixels (a shift)
    flip: bool = True  # augmentation: mirrored left-right half the time (not for digits: a mirrored 2 is no 2)
    urls: tuple[str, ...] = ()  # tried in order; {name} is a file name, or one archive URL
    archive: str | None = None  # the files come inside this tar.gz
    archive_md5: str | None = None


# --- readers -------------------------------------------------------------------------------------

def _read_idx(path: Path) -> np.ndarray:
    """Read one idx file (MNIST's format): magic, dims as big-endian int32, then uint8 data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SlimzipError(f"{path}: not an idx file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise SlimzipError(f"{path}: idx header says {tuple(dims)} but holds {data.size} bytes")
    return data.reshape(tuple(dims))


def read_mnist(folder: Path) -> Arrays:
    def images(name: str) -> np.ndarray:
        return _read_idx(folder / name)[:, None, :, :]

    def labels(name: str) -> np.ndarray:
        return _read_idx(folder / name).astype(np.int64)

    return Arrays(images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
                  images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR python batches hold: dicts, lists, bytes, numbers, numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle's hook
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def _reconstruct():
    try:  # numpy >= 2 moved the module; both spellings resolve to the same function
        from numpy._core.multiarray import _reconstruct as fn
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def load_batch(path: Path) -> dict:
    """Load one CIFAR python batch safely; keys come back as str."""
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise SlimzipError(f"{path}: not a CIFAR batch file ({e})") from None
    if not isinstance(obj, dict):
        raise SlimzipError(f"{path}: not a CIFAR batch file (top level is {type(obj).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_arrays(batch: dict, label_key: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get("data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise SlimzipError(f"{path}: 'data' is not an (N, 3072) uint8 array")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (data.shape[0],):
        raise SlimzipError(f"{path}: {y.shape[0]} labels for {data.shape[0]} images")
    return data.reshape(-1, 3, 32, 32), y


def _read_cifar(folder: Path, train: list[str], test: str, label_key: str) -> Arrays:
    parts = [_cifar_arrays(load_batch(folder / n), label_key, folder / n) for n in train]
    test_x, test_y = _cifar_arrays(load_batch(folder / test), label_key, folder / test)
    return Arrays(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                  test_x, test_y)


def read_cifar10(folder: Path) -> Arrays:
    return _read_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels")


def read_cifar100(folder: Path) -> Arrays:
    return _read_cifar(folder, ["train"], "test", "fine_labels")


# --- registry ------------------------------------------------------------------------------------

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", folder="mnist", read=read_mnist, num_classes=10, image_shape=(1, 28, 28),
        mean=(0.1307,), std=(0.3081,), val_size=6000, augment=False, crop_pad=2, flip=False,
        files={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        # The original host has refused downloads at times; the second is the mirror PyTorch uses.
        urls=("https://yann.lecun.com/exdb/mnist/{name}",
              "https://ossci-datasets.s3.amazonaws.com/mnist/{name}"),
    ),
    "cifar10": DatasetSpec(
        name="cifar10", folder="cifar-10-batches-py", read=read_cifar10, num_classes=10,
        image_shape=(3, 32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        val_size=5000, augment=True,
        files={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
        urls=("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        archive="cifar-10-python.tar.gz", archive_md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": DatasetSpec(
        name="cifar100", folder="cifar-100-python", read=read_cifar100, num_classes=100,
        image_shape=(3, 32, 32), mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        val_size=5000, augment=True,
        files={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
        urls=("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
        archive="cifar-100-python.tar.gz", archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def get_dataset_spec(name: str) -> DatasetSpec:
    if isinstance(name, str) and is_image_folder(name):
        return _folder_spec(name)
    if name not in DATASETS:
        raise unknown("dataset", name, [*DATASETS, "imagefolder:DIR"])
    return DATASETS[name]


def _folder_spec(name: str) -> DatasetSpec:
    """An image folder as a dataset (``data.folder``): read once, normalised by its training images."""
    root = folder_path(name)
    folder = read_folder(root)
    x, y = folder.splits["train"]
    mean, std = channel_stats(x)

    def read(_unused: Path) -> Arrays:
        return Arrays(x, y, *folder.splits["test"], *folder.splits["val"])
    return DatasetSpec(name=name, folder="", files={}, read=read, num_classes=len(folder.classes),
                       image_shape=tuple(x.shape[1:]), mean=mean, std=std, val_size=len(folder.splits["val"][1]),
                       augment=False)


# --- files on disk -------------------------------------------------------------------------------

def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, else ``$SLIMZIP_DATA``, else a per-user cache folder."""
    if data_dir:
        path = Path(data_dir).expanduser()
        if path.exists() and not path.is_dir():
            raise SlimzipError(f"--data-dir {path} is a file, not a folder")
        return path
    if os.environ.get("SLIMZIP_DATA"):
        return Path(os.environ["SLIMZIP_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "slimzip" / "data"


def md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(spec: DatasetSpec, folder: Path) -> None:
    """Raise if any official file is missing or its md5 differs from the release."""
    for name, expected in spec.files.items():
        path = folder / name
        if not path.is_file():
            raise SlimzipError(f"{spec.name}: missing file {path}")
        if (got := md5(path)) != expected:
            raise SlimzipError(f"{spec.name}: {path} is corrupt (md5 {got}, expected {expected})")


def _fetch(url: str, dest: Path) -> None:
    print(f"slimzip: downloading {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
        shutil.copyfileobj(r, f)


def _fetch_any(urls: list[str], dest: Path, expected_md5: str | None) -> None:
    errors = []
    for url in urls:
        try:
            _fetch(url, dest)
        except OSError as e:
            errors.append(f"{url}: {e}")
            continue
        if expected_md5 is None or md5(dest) == expected_md5:
            return
        errors.append(f"{url}: md5 mismatch")
    raise SlimzipError(f"download failed ({'; '.join(errors)})")


def download(spec: DatasetSpec, folder: Path) -> None:
    """Fetch the official files into ``folder`` (atomically per file), verifying md5s. A failed download
    leaves no folder it created behind (the data directory is not modified)."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _download_into(spec, folder)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _download_into(spec: DatasetSpec, folder: Path) -> None:
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        if spec.archive:
            archive = tmp / spec.archive
            _fetch_any(list(spec.urls), archive, spec.archive_md5)
            _extract(archive, spec, tmp)
        else:
            for name, expected in spec.files.items():
                if not (folder / name).is_file():
                    _fetch_any([u.format(name=name) for u in spec.urls], tmp / name, expected)
        for name in spec.files:
            if (tmp / name).is_file():
                os.replace(tmp / name, folder / name)


def _extract(archive: Path, spec: DatasetSpec, dest: Path) -> None:
    """Extract only the expected regular files, flattened, so a crafted tar cannot write elsewhere."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if member.isfile() and name in spec.files:
                with tar.extractfile(member) as src, open(dest / name, "wb") as out:
                    shutil.copyfileobj(src, out)


def load_arrays(name: str, data_dir: str | os.PathLike | None = None, *, allow_download: bool = True) -> Arrays:
    """Verify (downloading if missing and allowed) and read a registered dataset (or an image folder)."""
    spec = get_dataset_spec(name)
    if is_image_folder(name):
        return spec.read(Path())
    folder = resolve_data_dir(data_dir) / spec.folder
    missing = [n for n in spec.files if not (folder / n).is_file()]
    if missing and allow_download:
        download(spec, folder)
    verify(spec, folder)
    return spec.read(folder)
