import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from slimzip.data import DATASETS, DeviceLoader, load_arrays, load_batch, random_crop, random_flip, stratified_split
from slimzip.data import sources
from slimzip.errors import SlimzipError


def test_mnist_reader_shapes(data_dir):
    a = load_arrays("mnist", data_dir, allow_download=False)
    assert a.train_x.shape == (60000, 1, 28, 28) and a.train_x.dtype == np.uint8
    assert a.test_x.shape == (10000, 1, 28, 28)
    assert set(np.unique(a.train_y)) == set(range(10)) and a.train_y.dtype == np.int64


def test_cifar10_reader_shapes(data_dir):
    a = load_arrays("cifar10", data_dir, allow_download=False)
    assert a.train_x.shape == (50000, 3, 32, 32) and a.test_x.shape == (10000, 3, 32, 32)
    assert np.bincount(a.train_y).tolist() == [5000] * 10


def _copy_mnist(src: Path, dst: Path) -> Path:
    (dst / "mnist").mkdir(parents=True)
    for f in (src / "mnist").iterdir():
        shutil.copy(f, dst / "mnist" / f.name)
    return dst / "mnist"


def test_corrupt_file_is_rejected_by_md5(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(SlimzipError, match="corrupt.*md5"):
        load_arrays("mnist", tmp_path, allow_download=False)


def test_missing_file_is_named(data_dir, tmp_path):
    folder = _copy_mnist(data_dir, tmp_path)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(SlimzipError, match="missing file .*train-labels"):
        load_arrays("mnist", tmp_path, allow_download=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Evil()}, protocol=2))
    with pytest.raises(SlimzipError, match="not allowed"):
        load_batch(path)


def test_restricted_unpickler_reads_arrays(tmp_path):
    path = tmp_path / "b"
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=3))
    batch = load_batch(path)
    assert np.array_equal(batch["data"], data) and batch["labels"] == [3, 4]


def test_download_extracts_only_expected_files(tmp_path):
    payload = b"hello batch"
    tar_path = tmp_path / "src" / "archive.tar.gz"
    tar_path.parent.mkdir()
    with tarfile.open(tar_path, "w:gz") as tar:
        for name, data in (("folder/wanted.bin", payload), ("../escape.bin", b"evil")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    md5 = lambda b: hashlib.md5(b).hexdigest()  # noqa: E731
    spec = replace(DATASETS["cifar10"], name="fake", folder="fake", files={"wanted.bin": md5(payload)},
                   urls=(tar_path.as_uri(),), archive="archive.tar.gz", archive_md5=md5(tar_path.read_bytes()))
    dest = tmp_path / "data" / "fake"
    sources.download(spec, dest)
    assert (dest / "wanted.bin").read_bytes() == payload
    assert sorted(p.name for p in dest.iterdir()) == ["wanted.bin"]
    assert not (tmp_path / "data" / "escape.bin").exists()


def test_download_rejects_bad_md5(tmp_path):
    src = tmp_path / "f.gz"
    src.write_bytes(gzip.compress(b"x"))
    spec = replace(DATASETS["mnist"], files={"f.gz": "0" * 32}, urls=(str(tmp_path.as_uri()) + "/{name}",))
    with pytest.raises(SlimzipError, match="md5 mismatch"):
        sources.download(spec, tmp_path / "out")
    assert not (tmp_path / "out" / "f.gz").exists()


@pytest.mark.parametrize("val_size", [6000, 5000, 7])
def test_split_is_stratified_disjoint_and_fixed(val_size):
    labels = np.random.default_rng(1).choice(10, size=20000, p=np.linspace(1, 2, 10) / 15)
    train, val = stratified_split(labels, val_size)
    assert len(val) == val_size and len(np.intersect1d(train, val)) == 0
    assert len(train) + len(val) == len(labels)
    quota = np.bincount(labels, minlength=10) * val_size / len(labels)
    assert np.all(np.abs(np.bincount(labels[val], minlength=10) - quota) < 1)
    assert np.array_equal(val, stratified_split(labels, val_size)[1])


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    assert out.shape == x.shape
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_random_flip_mirrors_about_half():
    x = torch.arange(2000 * 4, dtype=torch.float32).reshape(2000, 1, 1, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).all(dim=(1, 2, 3))
    assert torch.all(flipped | (out == x).all(dim=(1, 2, 3)))
    assert 900 < flipped.sum() < 1100


def test_digit_augmentation_shifts_and_never_mirrors():
    """MNIST's augmentation: each image a window of its 2-pixel pad (a shift), never a mirror image."""
    spec = DATASETS["mnist"]
    assert (spec.crop_pad, spec.flip, spec.augment) == (2, False, False)
    x = torch.zeros(400, 1, 6, 6, dtype=torch.uint8)
    x[:, 0, 1:5, 1] = 255  # a bar near the left edge: a flip would put it near the right one
    loader = DeviceLoader(x, torch.zeros(400, dtype=torch.long), batch_size=400, mean=(0.0,), std=(1.0,),
                          shuffle=True, augment=True, crop_pad=spec.crop_pad, flip=spec.flip)
    out = next(iter(loader))[0]
    columns = out.sum(dim=(1, 2)).argmax(dim=-1)  # where each served image's bar is
    assert set(columns.tolist()) == {0, 1, 2, 3}  # shifted left and right by up to 2 pixels, nothing past
    assert not torch.equal(out, x.float() / 255)


def test_loader_normalises_and_is_deterministic_per_epoch():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(50)
    loader = DeviceLoader(x, y, batch_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), shuffle=True, seed=3)
    first = [b for b in loader]
    assert [len(b[1]) for b in first] == [16, 16, 16, 2]
    xb, yb = first[0]
    assert torch.allclose(xb, (x[yb].float() / 255 - 0.5) / 0.25, atol=1e-5)
    again = [b[1] for b in loader]
    assert all(torch.equal(a[1], b) for a, b in zip(first, again))
    loader.set_epoch(1)
    assert not torch.equal(torch.cat([b[1] for b in loader]), torch.cat([b[1] for b in first]))


def test_slice_serves_only_its_images_without_copying():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    loader = DeviceLoader(x, torch.arange(10), batch_size=3, mean=(0.0,), std=(1 / 255,), shuffle=True)
    part = loader.slice(4, 9)
    seen = torch.cat([y for _x, y in part])
    assert sorted(seen.tolist()) == [4, 5, 6, 7, 8] and part.num_samples == 5
    assert part.x.data_ptr() == x[4:].data_ptr() and loader.num_samples == 10  # a view; the loader is unchanged
