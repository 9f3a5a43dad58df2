"""The candidate pipeline on real models: warm-start from a parent candidate's saved model, remove
channels, prune weights with masked retraining, remove dead units, share weights, code the file,
decode it and measure validation accuracy on the decoded model.

Every candidate saves its *trunk* (the pruned, retrained model before weight sharing) so children can
start from it, in this run or in a resumed one; and its .slz file, so the winner is copied, not rebuilt.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors
from ..codec import decode_model, encode_model, file_model, self_describing
from ..deep_compression import (CompressConfig, profile, prune_and_retrain, remove_dead_units,
                                share_weights)
from ..sharing import default_bits, sharing_penalty
from ..container import decode_container
from ..data import DeviceLoader, Loaders
from ..errors import SlimzipError
from ..progress import log
from ..measure import measure
from ..schedule import sparsity_steps
from ..structured import (Sensitivity, apply_plan, build_model, default_channel_pruner, prunable_channels,
                          sensitivity_pruner)
from ..trainer import TrainConfig, distillation, evaluate, fit, recalibrate_bn
from ..unstructured import Masks, mask_hook, masks_from_zeros, prunable_weights
from .driver import (CANDIDATE_FAILURES, DEVICE_BUDGETS, LayerBits, OverBudgetError, SearchConfig, artifact_name,
                     structural_budgets, structural_excess)
from .journal import Candidate, Knobs
from ..state import load_state


class CandidatePipeline:
    """``RunCandidate`` for any model (see ``driver.RunCandidate``). ``spec``: the registry spec of ``base``
    (files then name it), or None for a user's model (files then store its graph, ``graph.describe``).
    ``loaders.train``: the proxy's training images (``train_subset``); ``full_train``: the whole training
    split that recovery trains on (default: ``loaders.train``); ``teacher``: the frozen model fine-tunes and
    recovery distill from (default: ``base``)."""

    def __init__(self, base: nn.Module, spec: dict | None, input_shape: tuple[int, ...], loaders: Loaders,
                 train_cfg: TrainConfig, cfg: SearchConfig, run_dir: Path, verbose: bool = True,
                 file_meta: dict | None = None, full_train: DeviceLoader | None = None,
                 teacher: nn.Module | None = None):
        self.base, self.spec, self.shape = base, spec, input_shape
        self.file_meta = dict(file_meta or {})  # what every candidate file's manifest records besides the model
        self.loaders, self.train_cfg, self.cfg, self.dir, self.verbose = loaders, train_cfg, cfg, run_dir, verbose
        self.full_train = full_train if full_train is not None else loaders.train
        self.device = next(base.parameters()).device
        self._channels: int | None = None  # counted when a candidate first removes channels (``channels``)
        self.sensitivity: Sensitivity | None = None  # set by ``prepare`` for --channel-scope sensitivity
        self.teacher = teacher if teacher is not None else base
        # --distill: every fine-tune also matches the teacher's softened outputs (a frozen copy)
        self.terms = [distillation(copy.deepcopy(self.teacher), cfg.distill)] if cfg.distill else []

    def prepare(self) -> Sensitivity | None:
        """What every candidate shares, made once before the search (a resumed run reads it back): the
        layer profile that ``--channel-scope sensitivity`` allocates channel ratios from."""
        if self.cfg.channel_scope != "sensitivity" or self.cfg.max_channel_ratio == 0:  # no channel will go
            return None
        path = self.dir / "sensitivity.json"
        if path.is_file():
            try:
                self.sensitivity = Sensitivity.from_json(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError) as e:
                raise SlimzipError(f"{path} is not a layer profile ({e}); delete it to profile again") from None
            return self.sensitivity
        log("profiling each layer's sensitivity to channel removal", verbose=self.verbose)
        images = self.cfg.calibration_images
        self.sensitivity = profile(self.base, self.loaders.train, self.loaders.val, self.shape, images,
                                   self._images(images, "sensitivity"))
        atomic_write_json(path, dataclasses.asdict(self.sensitivity))
        return self.sensitivity

    def compress_config(self, knobs: Knobs, bits: tuple[int, int] | None = None,
                        share_rate: float | None = None) -> CompressConfig:
        """A candidate file's coding: the config's, at ``knobs``, with ``bits`` and ``share_rate`` where given."""
        cfg = dataclasses.replace(self.cfg.coding(bits), channel_ratio=knobs.channel_ratio, sparsity=knobs.sparsity)
        return cfg if share_rate is None else dataclasses.replace(cfg, share_rate=share_rate)

    def file_path(self, key: str) -> Path:
        return self.dir / "files" / f"{artifact_name(key)}.slz"

    def _trunk_path(self, key: str) -> Path:
        return self.dir / "trunks" / f"{artifact_name(key)}.safetensors"

    def _load(self, parent: Candidate | None) -> tuple[nn.Module, dict]:
        """The parent's trunk and its channel plan relative to the input model."""
        if parent is None:
            return copy.deepcopy(self.base), {}
        path = self._trunk_path(parent.key)
        saved = json.loads(path.with_suffix(".json").read_text())
        if "relative_plan" in saved:
            plan = saved["relative_plan"]
            model = apply_plan(copy.deepcopy(self.base).cpu(), plan, self.shape)
        else:  # a trunk saved before user models: the registry spec with the plan composed in
            model = build_model(saved)
            plan = _relative(self.spec, saved)
        load_state(model, load_tensors(path))
        return model.to(self.device), plan

    def layer_weights(self, c: Candidate, bits: tuple[int, int]) -> dict[str, tuple[int, int]]:
        """The layers ``c``'s weights are shared in: {weight name: (kept weights, codebook bits by its kind
        at ``bits`` (conv, linear))}."""
        model, _ = self._load(c)
        modules = dict(model.named_modules())
        return {name: (int(w.count_nonzero()), default_bits(modules[name.rpartition(".")[0]], *bits))
                for name, w in prunable_weights(model).items()}

    def _tune_config(self, epochs: int) -> TrainConfig:
        return dataclasses.replace(self.train_cfg, epochs=epochs, lr=self.cfg.lr, schedule="cosine", patience=0,
                                   warmup_epochs=0, bn_l1=0.0)

    def _tune(self, model: nn.Module, epochs: float, masks: Masks | None, key: str) -> float:
        """Fine-tune for ``epochs``; a fraction of an epoch is one pass over that share of the training
        images (``_images``)."""
        hooks = [mask_hook(masks)] if masks else []
        whole, part = int(epochs), epochs - int(epochs)
        if whole:
            fit(model, self.loaders.train, None, self._tune_config(whole), after_step=hooks, loss_terms=self.terms,
                verbose=self.verbose)
        if part > 1e-9:
            fit(model, self._images(round(part * self.loaders.train.num_samples), key), None, self._tune_config(1),
                after_step=hooks, loss_terms=self.terms, verbose=self.verbose)
        return epochs

    @property
    def channels(self) -> int:
        """The input model's prunable channels, traced only once a candidate removes channels: a model whose
        channel groups cannot be traced still compresses without removing any."""
        if self._channels is None:
            self._channels = prunable_channels(self.base, self.shape)
        return self._channels

    @property
    def proxy_share(self) -> float:
        """The proxy's training images over the whole split's (its epochs in full-data epochs)."""
        return self.loaders.train.num_samples / max(self.full_train.num_samples, 1)

    def _recover(self, model: nn.Module, masks: Masks | None, epochs: int) -> float:
        """Recovery: ``epochs`` passes over the whole training split at ``recover_lr`` (cosine), distilled
        from the teacher (the input model unless ``--teacher``), the pruned weights held at zero, optionally
        pulled towards shared values (``compress_penalty``). Returns the epochs."""
        c = self.cfg
        terms = [*([distillation(copy.deepcopy(self.teacher), c.recover_distill)] if c.recover_distill else []),
                 *([sharing_penalty(c.compress_penalty)] if c.compress_penalty else [])]
        cfg = dataclasses.replace(self._tune_config(epochs), lr=c.recover_lr)
        fit(model, self.full_train, None, cfg, after_step=[mask_hook(masks)] if masks else [], loss_terms=terms,
            verbose=self.verbose)
        return float(epochs)

    def _images(self, count: int, key: str) -> DeviceLoader:
        """``count`` consecutive training images at an offset set by the candidate: short fine-tunes along
        a lineage see different images, and a resumed run the same ones."""
        n = self.loaders.train.num_samples
        count = min(max(count, 1), n)
        start = int(artifact_name(key), 16) % (n - count + 1)
        part = self.loaders.train.slice(start, start + count)
        part.set_epoch(0)  # its shuffle, whatever epoch the shared loader was last set to by a fine-tune
        return part

    def _calibrate(self, model: nn.Module, key: str) -> float:
        """BN statistics re-estimated after pruning without training; its forward passes are counted
        as epochs (images / training images), an upper bound on their cost."""
        seen = recalibrate_bn(model, self._images(self.cfg.calibration_images, key), self.cfg.calibration_images)
        return seen / self.loaders.train.num_samples

    def _remove_channels(self, model: nn.Module, ratio: float, removed: int) -> tuple[nn.Module, dict, int]:
        """Remove channels until ``ratio`` of the input model's prunable channels are gone (about: a
        per-layer scope rounds each layer down), by ``default_channel_pruner`` with the channel scope."""
        want = round(ratio * self.channels) - removed
        have = prunable_channels(model, self.shape)
        if want <= 0 or have <= 1:
            return model, {}, removed
        if self.cfg.channel_scope == "sensitivity":
            pruner = sensitivity_pruner(default_channel_pruner(model, 0.0, "layer"), self._profile(), ratio)
        else:
            pruner = default_channel_pruner(model, min((want + 0.5) / have, 0.999), self.cfg.channel_scope)
        pruner.fit(model, self.shape)
        gone = have - sum(len(k) for k in pruner.plan_.values())
        return pruner.transform(model, self.shape), pruner.plan_, removed + gone

    def _profile(self) -> Sensitivity:
        if self.sensitivity is None:
            raise SlimzipError("--channel-scope sensitivity: the layer profile was not made (CandidatePipeline.prepare)")
        return self.sensitivity

    def __call__(self, knobs: Knobs, parent: Candidate | None, *, key: str, epochs: float, rounds: int,
                 centroid_epochs: int, bits: tuple[int, int] | None = None, recover: bool = False,
                 layer_bits: LayerBits = (), share_rate: float | None = None) -> dict:
        model, plan = self._load(parent)
        start = parent.knobs if parent else Knobs()
        removed = [parent.channels_removed if parent else 0]
        spent = [0.0]

        def tune(m: nn.Module, masks: Masks | None) -> float:
            done = self._tune(m, epochs, masks, key)
            spent[0] += done
            return done

        def remove_channels(m: nn.Module) -> tuple[nn.Module, dict]:
            m, step_plan, removed[0] = self._remove_channels(m, knobs.channel_ratio, removed[0])
            self._check_structure(m)
            return m, step_plan
        try:
            if knobs.channel_ratio <= start.channel_ratio:  # no channel goes: the parent's structure is this one's
                self._check_structure(model)
            pruned = prune_and_retrain(
                model, plan, masks_from_zeros(model) if start.sparsity > 0 else None,
                remove_channels=remove_channels if knobs.channel_ratio > start.channel_ratio else None,
                sparsities=sparsity_steps(start.sparsity, knobs.sparsity, max(rounds, 1))
                if knobs.sparsity > start.sparsity else [], scope=self.cfg.scope, tune=tune, verbose=self.verbose,
                pattern=self.cfg.prune_pattern)
            if recover:  # the same point, retrained on the whole training split
                spent[0] += self._recover(pruned.model, pruned.masks, int(epochs))
            elif knobs == start:  # the same point, trained further (a screened candidate's fine-tune)
                tune(pruned.model, pruned.masks)
            if spent[0] == 0 and knobs != start:  # pruned, not trained: the BN statistics are stale
                spent[0] += self._calibrate(pruned.model, key)
            pruned = remove_dead_units(pruned, self.shape, self.verbose)
            self._save_trunk(key, pruned.model, pruned.plan)
            data = self._code(pruned.model, pruned.plan, knobs, centroid_epochs, bits, dict(layer_bits), share_rate)
            spent[0] += centroid_epochs
        except CANDIDATE_FAILURES as e:
            e.epochs = spent[0]  # type: ignore[attr-defined]
            raise
        spent, removed = spent[0], removed[0]
        container = decode_container(data)  # a candidate's file is kept only once slimzip's reader accepts it
        decoded = decode_model(container, None if self_describing(container.manifest) else self.base).to(self.device)
        atomic_write_bytes(self.file_path(key), data)
        cost = measure(decoded, self.shape)
        device = {}
        if any(getattr(self.cfg, b) is not None for b in DEVICE_BUDGETS):  # measured: the C model compiled
            from ..deploy.footprint import c_footprint

            device = c_footprint(data, latency=self.cfg.max_latency_ms is not None)
        return {"val_accuracy": evaluate(decoded, self.loaders.val)[1], "file_bytes": len(data),
                "params": cost.params, "macs": cost.macs, "epochs": spent, "channels_removed": removed, **device}

    def _check_structure(self, model: nn.Module) -> None:
        """Refuse, before any training, a narrowed model over the params or MACs budget (``OverBudgetError``)."""
        if not structural_budgets(self.cfg):
            return
        cost = measure(model, self.shape)
        if (excess := structural_excess(self.cfg, cost.params, cost.macs)) is not None:
            raise OverBudgetError(excess)

    def _save_trunk(self, key: str, model: nn.Module, plan: dict) -> None:
        path = self._trunk_path(key)
        atomic_write_json(path.with_suffix(".json"), {"relative_plan": plan})
        save_tensors(path, model.state_dict())

    def _code(self, model: nn.Module, plan: dict, knobs: Knobs, centroid_epochs: int,
              bits: tuple[int, int] | None = None, layer_bits: dict[str, int] | None = None,
              share_rate: float | None = None) -> bytes:
        """Share weights (k-means; ``bits``: conv and linear codebook bits, default the config's;
        ``layer_bits``: single layers' bits; ``share_rate``: the entropy-constrained sharing's, default the
        config's), fine-tune the centroids, and code the file."""
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise FloatingPointError("weights are not finite")
        cfg = self.compress_config(knobs, bits, share_rate)
        layers = share_weights(model, masks_from_zeros(model), cfg.bits_conv, cfg.bits_fc,
                               self._tune_config(centroid_epochs), self.loaders.train, None, verbose=self.verbose,
                               loss_terms=self.terms, rate=cfg.share_rate, layer_bits=layer_bits)
        model, spec = file_model(model.cpu(), self.spec, plan, self.shape)
        return encode_model(model, spec, layers, cfg, self.file_meta)


def _relative(spec: dict | None, saved: dict) -> dict:
    """An old trunk's plan relative to the input model (its spec's plan composed with the search's)."""
    base = (spec or {}).get("plan") or {}
    full = saved.get("plan") or {}
    return {root: [base[root].index(i) for i in kept] if root in base else kept for root, kept in full.items()}
