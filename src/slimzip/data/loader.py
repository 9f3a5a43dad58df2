"""The validation split and the device-resident loader.

The whole dataset sits on the training device as uint8; each batch is gathered, augmented as a batch
(a random crop inside a zero pad, a horizontal flip: the dataset's own) and normalised there. No DataLoader
workers, no per-image Python, no torchvision.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SlimzipError
from .sources import Arrays, DatasetSpec, get_dataset_spec, load_arrays

SPLIT_SEED = 0  # the validation split never moves, whatever the training seed


def stratified_split(labels: np.ndarray, val_size: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices; each class gets its share of ``val_size`` (largest remainder)."""
    if not 0 < val_size < len(labels):
        raise SlimzipError(f"validation size must be in (0, {len(labels)}), got {val_size}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * val_size / len(labels)
    take = np.floor(quota).astype(np.int64)
    take[np.argsort(-(quota - take), kind="stable")[: val_size - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)])
    val.sort()
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Crop each image of a (B, C, H, W) batch at its own random offset inside a zero pad of ``pad``."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=gen, device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image of a batch left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class DeviceLoader:
    """Batches of a uint8 image tensor held on ``device``, normalised to float as they are served.

    Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an epoch is the same
    whether a run went straight through or was resumed.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, mean: tuple[float, ...],
                 std: tuple[float, ...], shuffle: bool = False, augment: bool = False, drop_last: bool = False,
                 seed: int = 0, crop_pad: int = 4, flip: bool = True):
        self.x, self.y = x, y
        self.crop_pad, self.flip = crop_pad, flip  # what ``augment`` does: a crop inside this pad, then a flip
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.seed, self.epoch = seed, 0
        unit = 255.0 if x.dtype == torch.uint8 else 1.0  # float images are taken as given
        view = (1, -1) + (1,) * (x.dim() - 2)
        std_t = torch.tensor(std, device=x.device).view(view)
        self.scale = 1.0 / (unit * std_t)  # uint8 -> (x/255 - mean)/std as one multiply-add
        self.shift = -torch.tensor(mean, device=x.device).view(view) / std_t

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def slice(self, start: int, stop: int) -> "DeviceLoader":
        """The same loader over images ``start:stop`` only (views, no copy): a fraction of an epoch."""
        part = copy.copy(self)
        part.x, part.y = self.x[start:stop], self.y[start:stop]
        part.drop_last = self.drop_last and stop - start > self.batch_size
        return part

    def in_order(self) -> "DeviceLoader":
        """The same loader serving its images in their stored order every epoch (no shuffling)."""
        ordered = copy.copy(self)
        ordered.shuffle = False
        return ordered

    def _order(self, gen: torch.Generator) -> torch.Tensor:
        n = len(self.y)
        if self.shuffle:
            return torch.randperm(n, generator=gen, device=self.x.device)
        return torch.arange(n, device=self.x.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator(device=self.x.device)
        gen.manual_seed(self.seed * 100_003 + self.epoch)
        order = self._order(gen)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            xb = self.x[idx]
            if self.augment and xb.dim() == 4:
                xb = random_crop(xb, self.crop_pad, gen)
                xb = random_flip(xb, gen) if self.flip else xb
            yield xb.float().mul_(self.scale).add_(self.shift), self.y[idx]


@dataclass
class Loaders:
    """The three splits of one dataset, ready to train on."""

    spec: DatasetSpec | None  # None: data the user passed in
    train: DeviceLoader
    val: DeviceLoader
    test: DeviceLoader | None


def create_loaders(dataset: str, *, data_dir: str | os.PathLike | None = None, batch_size: int = 128,
                   eval_batch_size: int = 1000, device: str | torch.device = "cpu", augment: bool | None = None,
                   normalize: str = "standard", subset: int | None = None, seed: int = 0,
                   allow_download: bool = True, stats: dict | None = None) -> Loaders:
    """Load a registered dataset onto ``device`` and split it into train / val / test loaders.

    ``normalize``: ``standard`` (per-channel mean/std: the dataset's, or ``stats`` ``{"mean", "std"}`` as
    a checkpoint recorded them) or ``unit`` (pixels in [0, 1], as DropNet).
    ``subset``: train on only the first N images of the (fixed) training split, for quick runs.
    """
    spec = get_dataset_spec(dataset)
    if normalize not in ("standard", "unit"):
        raise SlimzipError(f"normalize must be 'standard' or 'unit', got {normalize!r}")
    if batch_size < 1:
        raise SlimzipError(f"batch size must be at least 1, got {batch_size}")
    arrays = load_arrays(dataset, data_dir, allow_download=allow_download)
    if arrays.val_x is not None:  # the source gives its own validation split
        arrays = Arrays(np.concatenate([arrays.train_x, arrays.val_x]), np.concatenate([arrays.train_y, arrays.val_y]),
                        arrays.test_x, arrays.test_y)
        train_idx, val_idx = np.arange(len(arrays.train_y) - spec.val_size), \
            np.arange(len(arrays.train_y) - spec.val_size, len(arrays.train_y))
    else:
        train_idx, val_idx = stratified_split(arrays.train_y, spec.val_size)
    if subset is not None:
        if not 1 <= subset <= len(train_idx):
            raise SlimzipError(f"subset must be between 1 and the {len(train_idx):,} training images, got {subset:,}")
        train_idx = train_idx[:subset]
    channels = spec.image_shape[0]
    mean, std = (spec.mean, spec.std) if normalize == "standard" else ((0.0,) * channels, (1.0,) * channels)
    if stats and normalize == "standard":
        mean, std = tuple(stats["mean"]), tuple(stats["std"])
        if len(mean) != channels or len(std) != channels or min(std) <= 0:
            raise SlimzipError(f"recorded normalisation {stats} does not fit {channels}-channel images")
    aug = spec.augment if augment is None else augment

    def make(x: np.ndarray, y: np.ndarray, train: bool) -> DeviceLoader:
        return DeviceLoader(torch.from_numpy(np.array(x)).to(device),
                            torch.from_numpy(y).to(device), batch_size=batch_size if train else eval_batch_size,
                            mean=mean, std=std, shuffle=train, augment=train and aug,
                            drop_last=train and len(y) > batch_size,
                            seed=seed, crop_pad=spec.crop_pad, flip=spec.flip)

    return Loaders(spec, make(arrays.train_x[train_idx], arrays.train_y[train_idx], True),
                   make(arrays.train_x[val_idx], arrays.train_y[val_idx], False),
                   make(arrays.test_x, arrays.test_y, False))
