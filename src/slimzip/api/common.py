"""What the commands share: recipes, devices, run-directory claims, checkpoint loaders."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint
from ..codec import decode_model, spec_input_shape
from ..container import read_container
from ..data import create_loaders, get_dataset_spec
from ..errors import SlimzipError
from ..models import MODELS, get_model_entry
from ..config import DEFAULT_RECIPE, RECIPES, TrainConfig


def check_runs(model: torch.nn.Module, loader, model_name: str, dataset: str) -> None:
    """A user's model must take the dataset's images and give one score per class."""
    x, _ = next(iter(loader))
    try:
        with torch.no_grad():
            out = model.eval()(x[:2])
    except Exception as e:
        raise SlimzipError(f"--model {model_name} does not run on {dataset} images of shape {tuple(x.shape[1:])} "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
    finally:
        model.train()
    classes = int(loader.y.max()) + 1
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < classes:
        raise SlimzipError(f"--model {model_name} gives outputs {getattr(out, 'shape', type(out).__name__)}; "
                           f"{dataset} needs (batch, {classes}) class scores")


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SlimzipError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SlimzipError("--device cuda was asked for, but no CUDA GPU is available")
    if device.type not in ("cpu", "cuda"):
        raise SlimzipError(f"unsupported device {name!r}; use cpu or cuda")
    return device


def check_fits(spec: dict, dataset: str) -> None:
    """A model built for one input shape cannot take another (LeNet-5 on CIFAR, say). ``spec``: a
    checkpoint's or a file's model entry (registry name, recorded input shape, or graph)."""
    want, got = tuple(spec_input_shape(spec)), get_dataset_spec(dataset).image_shape
    if want != got:
        name = spec.get("name", "in the file")
        inputs = f"{get_model_entry(name).dataset} inputs" if name in MODELS else "inputs"
        raise SlimzipError(f"model {name} takes {inputs} {want}; {dataset} images are {got}")


def _data_options(meta: dict) -> dict:
    """A checkpoint's data options (its config's ``data``) or a .slz manifest's ``data``."""
    config = meta.get("config")  # informative in a .slz file: anything but an object is ignored
    data = meta.get("data") if isinstance(meta.get("data"), dict) else \
        config.get("data", {}) if isinstance(config, dict) else {}
    return data if isinstance(data, dict) else {}


def _normalization(meta: dict) -> str:
    """The input normalisation a model was trained with: 'standard' (default) or 'unit'."""
    return _data_options(meta).get("normalize", "standard")


def _stats(meta: dict) -> dict | None:
    """The per-channel mean / std a model was trained with, where recorded (image folders)."""
    stats = _data_options(meta).get("stats")
    return stats if isinstance(stats, dict) and {"mean", "std"} <= set(stats) else None


def _file_data(meta: dict) -> dict:
    """What a .slz manifest records of a checkpoint's data options (so `eval` normalises as training did):
    nothing for the default, standard normalisation with the dataset's own statistics."""
    normalize, stats = _normalization(meta), _stats(meta)
    data = {**({"normalize": normalize} if normalize != "standard" else {}), **({"stats": stats} if stats else {})}
    return {"data": data} if data else {}


def _load_any(path: str | os.PathLike, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A model and its metadata from a checkpoint directory or a .slz file."""
    if not Path(path).exists():
        raise SlimzipError(f"{path}: no such file or directory")
    if Path(path).is_file():  # a .slz file
        container = read_container(path)
        return decode_model(container).to(device), container.manifest
    return load_checkpoint(path, device)


def _slz_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    if out.suffix != ".slz":
        raise SlimzipError(f"{out}: the output file must end in .slz")
    return out


def _checkpoint_recipe(meta: dict) -> TrainConfig:
    """The training config a checkpoint was made with (its dataset's recipe if it records none)."""
    saved = meta.get("config", {}).get("train")
    return TrainConfig.from_json(saved) if saved else RECIPES.get(meta["dataset"], DEFAULT_RECIPE)


def _checkpoint_loaders(meta: dict, batch_size: int, device: torch.device, data_dir: str | None, seed: int,
                        subset: int | None = None):
    """Loaders for a checkpoint's dataset, with the data options it was trained with (its training subset
    too, unless ``subset`` says otherwise)."""
    opts = meta.get("config", {}).get("data", {})
    return create_loaders(meta["dataset"], data_dir=data_dir, batch_size=batch_size, device=device,
                          augment=opts.get("augment"), normalize=opts.get("normalize", "standard"), seed=seed,
                          subset=subset if subset is not None else opts.get("subset"), stats=_stats(meta))


def load_teacher(path: str | None, dataset: str, device: torch.device) -> torch.nn.Module | None:
    """A distillation teacher from a checkpoint directory, checked to be for the same dataset."""
    if path is None:
        return None
    model, meta = load_checkpoint(path, device)
    if meta.get("dataset") != dataset:
        raise SlimzipError(f"teacher {path} was trained on {meta.get('dataset')}, not {dataset}")
    return model
