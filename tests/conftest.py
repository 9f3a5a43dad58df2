"""Tests read the official dataset files from ../shared/data (or $SLIMZIP_DATA) and never download."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLIMZIP_DATA") or REPO.parent / "shared" / "data").resolve()  # tests may chdir
os.environ["SLIMZIP_DATA"] = str(DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "mnist").is_dir():
        pytest.fail(f"test data not found at {DATA}; "
                    "set SLIMZIP_DATA to the folder with mnist/ and cifar-10-batches-py/")
    return DATA


@pytest.fixture(scope="session")
def mnist_loaders(data_dir):
    from slimzip.data import create_loaders

    return create_loaders("mnist", data_dir=data_dir, batch_size=100, subset=2000, allow_download=False)
