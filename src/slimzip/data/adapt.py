"""Any data a user brings, as slimzip's device-resident loader: ``(images, labels)`` tensors, a torch
``Dataset`` or a ``DataLoader``, read once into memory (per-epoch random transforms of a Dataset are
therefore drawn once; slimzip's own crop-and-flip is ``augment=True``)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import SlimzipError
from .loader import DeviceLoader, Loaders

MAX_RESIDENT_BYTES = 8 << 30  # data read into memory at most; larger sets need a smaller subset


def _materialise(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of tensors, a Dataset or a DataLoader, read into memory."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    elif isinstance(data, (Dataset, DataLoader)):
        loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=256, shuffle=False)
        xs, ys, size = [], [], 0
        for batch in loader:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise SlimzipError(f"{what}: each item must be (image, label)")
            xs.append(torch.as_tensor(batch[0]))
            ys.append(torch.as_tensor(batch[1]))
            size += xs[-1].element_size() * xs[-1].numel()
            if size > MAX_RESIDENT_BYTES:
                raise SlimzipError(f"{what}: more than {MAX_RESIDENT_BYTES >> 30} GiB of images; pass a subset")
        if not xs:
            raise SlimzipError(f"{what}: the data set is empty")
        x, y = torch.cat(xs), torch.cat(ys)
    else:
        raise SlimzipError(f"{what}: pass (images, labels) tensors, a torch Dataset or a DataLoader, "
                           f"not {type(data).__name__}")
    if x.dim() < 2 or y.dim() != 1 or len(x) != len(y) or len(y) == 0:
        raise SlimzipError(f"{what}: want images (N, ...) and labels (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise SlimzipError(f"{what}: labels are {str(y.dtype).replace('torch.', '')}; class indices are integers: "
                           "pass labels.long()")
    if y.min() < 0:
        raise SlimzipError(f"{what}: labels must be non-negative class indices (found {int(y.min())})")
    if x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        raise SlimzipError(f"{what}: images look channels-last {tuple(x.shape)} (N, H, W, C); slimzip takes "
                           "(N, C, H, W): pass images.permute(0, 3, 1, 2)")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        raise SlimzipError(f"{what}: images must be uint8 or floating point, got {x.dtype}")
    return x, y.long()


def as_loader(data: Any, *, train: bool, batch_size: int = 128, device: str | torch.device = "cpu",
              augment: bool = False, seed: int = 0, what: str = "data") -> DeviceLoader:
    """A ``DeviceLoader`` over any data slimzip accepts (uint8 images are scaled to [0, 1]; float images
    are used as given)."""
    if isinstance(data, DeviceLoader):
        return data
    x, y = _materialise(data, what)
    x = x if x.dtype == torch.uint8 else x.float()
    if train:  # one fixed order: consecutive images (short fine-tunes, BN recalibration) must mix the classes
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        x, y = x[order], y[order]
    channels = x.shape[1] if x.dim() == 4 else 1
    return DeviceLoader(x.to(device), y.to(device), batch_size=batch_size if train else 1000,
                        mean=(0.0,) * channels, std=(1.0,) * channels, shuffle=train, augment=train and augment,
                        drop_last=train and len(y) > batch_size, seed=seed)


def as_loaders(train: Any, val: Any, test: Any = None, *, batch_size: int = 128, device: str | torch.device = "cpu",
               augment: bool = False, seed: int = 0) -> Loaders:
    """Train / val / test loaders from any data slimzip accepts (test may be None: then it is val)."""
    tr = as_loader(train, train=True, batch_size=batch_size, device=device, augment=augment, seed=seed, what="train")
    va = as_loader(val, train=False, device=device, what="val")
    te = as_loader(test, train=False, device=device, what="test") if test is not None else None
    return Loaders(None, tr, va, te)  # type: ignore[arg-type]


