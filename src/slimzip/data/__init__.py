"""Datasets: official files, the fixed validation split, and the device-resident loader."""

from .loader import DeviceLoader, Loaders, create_loaders, random_crop, random_flip, stratified_split
from .sources import DATASETS, Arrays, DatasetSpec, RestrictedUnpickler, get_dataset_spec, load_arrays, \
    load_batch, resolve_data_dir, verify

__all__ = ["DATASETS", "Arrays", "DatasetSpec", "DeviceLoader", "Loaders", "RestrictedUnpickler", "create_loaders",
           "get_dataset_spec", "load_arrays", "load_batch", "random_crop", "random_flip", "resolve_data_dir",
           "stratified_split", "verify"]
