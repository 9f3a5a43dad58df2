"""Deep compression's steps: remove channels, prune weights and retrain with masks held, remove dead
units, share weights and fine-tune centroids. ``prune_and_retrain`` is the one sequence both ``compress``
with fixed knobs and every search candidate run; ``codec.py`` turns the result into a .slz file."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn

from .config import CompressConfig  # declared torch-free (a fast --help); here for its users
from .data import DeviceLoader
from .errors import SlimzipError
from .progress import log
from .sharing import SharedLayer, WeightSharer, tie_centroids_, untie_centroids_
from .structured import (Sensitivity, apply_plan, compose_plans, dead_channel_plan, default_channel_pruner,
                         layer_profile)
from .trainer import TrainConfig, evaluate, fit, recalibrate_bn
from .unstructured import MagnitudePruner, Masks, apply_masks_, masks_from_zeros


Tune = Callable[[nn.Module, "Masks | None"], float]  # fine-tune holding the masks; returns the epochs spent
RemoveChannels = Callable[[nn.Module], "tuple[nn.Module, dict[str, list[int]]]"]  # -> narrowed model, its plan


@dataclass
class Pruned:
    """A model after the structured and unstructured steps, before weight sharing."""

    model: nn.Module
    plan: dict[str, list[int]]  # channels removed, relative to the model the sequence started from
    masks: "Masks | None"
    epochs: float


def prune_and_retrain(model: nn.Module, plan: dict, masks: "Masks | None", *, remove_channels: RemoveChannels | None,
                      sparsities: Sequence[float], scope: str, tune: Tune, verbose: bool = True,
                      pattern: str = "weight") -> Pruned:
    """The deep-compression sequence that ``compress`` and every search candidate run: remove channels
    (structured first) and fine-tune; then prune weights to each of ``sparsities`` in turn (magnitude,
    ``scope``; ``pattern``: single weights or whole rows), fine-tuning with the masks held after each.
    ``masks`` (None: no weights pruned yet) are the current masks, rebuilt from the zeros after channels go."""
    spent = 0.0
    if remove_channels is not None:
        model, removed = remove_channels(model)
        plan = compose_plans(plan, removed)
        masks = masks_from_zeros(model) if masks is not None else None
        spent += tune(model, masks)
    for i, sparsity in enumerate(sparsities):
        masks = MagnitudePruner(sparsity=sparsity, scope=scope, pattern=pattern).fit(model).masks_
        apply_masks_(model, masks)
        log(f"pruning round {i + 1}/{len(sparsities)}: sparsity {sparsity:.4f}", verbose=verbose)
        spent += tune(model, masks)
    return Pruned(model, plan, masks, spent)


def remove_dead_units(pruned: Pruned, input_shape: tuple[int, ...], verbose: bool = True) -> Pruned:
    """Units no weight reads any more, removed physically (as the combined heuristic's paper does); this
    changes no output."""
    try:
        dead = dead_channel_plan(pruned.model, input_shape)
    except SlimzipError as e:  # channel groups that cannot be traced: the zeros stay, coded as zeros
        log(f"dead units kept ({e})", verbose=verbose)
        return pruned
    if not dead:
        return pruned
    log(f"removing dead units in {len(dead)} layers", verbose=verbose)
    model = apply_plan(pruned.model, dead, input_shape)
    return Pruned(model, compose_plans(pruned.plan, dead), masks_from_zeros(model), pruned.epochs)


CALIBRATION_IMAGES = 2048  # training images that re-estimate BN statistics for each profiled layer


def profile(model: nn.Module, train: DeviceLoader, val: DeviceLoader | None, input_shape: tuple[int, ...],
            images: int = CALIBRATION_IMAGES, calibration: DeviceLoader | None = None) -> Sensitivity:
    """``model``'s layer profile for ``--channel-scope sensitivity``: each group pruned alone, BN statistics
    re-estimated on ``images`` training images (``calibration``, default the first of ``train``), scored
    on ``val``; its cost (calibration passes, in epochs of ``train``, and wall seconds) recorded in it."""
    if val is None:
        raise SlimzipError("--channel-scope sensitivity scores layers on validation images: the run has none")
    t0, seen = time.perf_counter(), [0]
    calibration = calibration if calibration is not None else train.slice(0, max(images, 1))

    def score(m: nn.Module) -> float:
        seen[0] += recalibrate_bn(m, calibration, images)
        return evaluate(m, val)[1]
    found = layer_profile(model, input_shape, score, default_channel_pruner(model, 0.0, "layer"))
    found.epochs, found.wall_seconds = seen[0] / train.num_samples, time.perf_counter() - t0
    return found


def share_weights(model: nn.Module, masks: dict, bits_conv: int, bits_fc: int, centroid_cfg: TrainConfig,
                  train: DeviceLoader, val: DeviceLoader | None, grad: str = "mean",
                  verbose: bool = True, loss_terms: Sequence = (), rate: float = 0.0,
                  layer_bits: dict[str, int] | None = None) -> dict[str, SharedLayer]:
    """k-means weight sharing (``rate`` > 0: entropy-constrained, ``sharing.ecsq``; ``layer_bits``: single
    layers' codebook bits by weight name, where not ``bits_conv`` / ``bits_fc``), then
    ``centroid_cfg.epochs`` of centroid fine-tuning (no weight decay)."""
    layers = WeightSharer(bits_conv=bits_conv, bits_fc=bits_fc, rate=rate, layer_bits=layer_bits).fit(model, masks).layers_
    if centroid_cfg.epochs:
        log("fine-tuning centroids", verbose=verbose)
        tie_centroids_(model, layers, grad=grad)
        fit(model, train, val, dataclasses.replace(centroid_cfg, weight_decay=0.0), loss_terms=loss_terms,
            verbose=verbose)
        layers = untie_centroids_(model, layers)
    return layers


__all__ = ["CompressConfig", "Pruned", "prune_and_retrain", "remove_dead_units", "profile", "share_weights"]
