"""The pipeline on objects: any ``nn.Module`` and any data in, a compressed model and its .slz bytes out.

    slimzip.search(model, train, val, max_drop=1.0)          # the smallest file at a target accuracy
    slimzip.compress(model, train, val, channel_ratio=0.3, sparsity=0.9)   # fixed knobs
    slimzip.load("model.slz")                                 # no user code needed

``train`` / ``val`` / ``test`` are ``(images, labels)`` tensors, torch ``Dataset``s or ``DataLoader``s. They
are read once into memory on the training device (slimzip's fast path: no DataLoader workers, batches
gathered on the device), so per-epoch random transforms of a ``Dataset`` are drawn once; pass
``augment=True`` for slimzip's own crop-and-flip of image batches. The path-based functions in
``slimzip.api`` and the command line call these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .checkpoint import atomic_write_bytes, atomic_write_json, load_checkpoint
from .config import CompressConfig, merged
from .codec import decode_model, recoder, self_describing
from .container import decode_container
from .data import Loaders
from .data.adapt import as_loader, as_loaders
from .errors import SlimzipError, check_finite, check_range
from .measure import dense_fp32_bytes, measure
from .progress import log, pct
from .reader import load
from .runs import RunDir
from .searcher import Candidate, Journal, Knobs, SearchConfig, run_search
from .searcher.driver import (BUDGETS, DEVICE_BUDGETS, broken_budgets, candidate_bits, candidate_layer_bits,
                              candidate_share_rate, over_budget, refused)
from .settings import RENAMED
from .searcher.pipeline import CandidatePipeline
from .trainer import TrainConfig, evaluate, fit
from .unstructured import sparsity_of

DEFAULT_TRAIN = TrainConfig(epochs=1, batch_size=128, lr=0.01, schedule="cosine")  # fine-tuning recipe


@dataclass
class Compressed:
    """What ``search`` and ``compress`` return: the model decoded from the file, and its numbers."""

    model: nn.Module  # decoded from ``data``: the compressed model is what the file holds
    data: bytes  # the .slz file
    path: Path | None  # where it was written, if anywhere
    val_accuracy: float
    test_accuracy: float | None  # measured once, on the decoded model
    baseline_val_accuracy: float
    target_accuracy: float | None
    dense_fp32_bytes: int
    params: int
    macs: int
    sparsity: float
    knobs: dict
    search: dict  # strategy, candidates, epochs, wall_seconds
    candidates: list[dict] = field(default_factory=list)
    margin: float | None = None  # accuracy the search kept in reserve for weight pruning

    @property
    def file_bytes(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        test = "n/a" if self.test_accuracy is None else f"{100 * self.test_accuracy:.2f}%"
        knobs = ", ".join(f"{k} {v:g}" for k, v in self.knobs.items() if isinstance(v, (int, float)) and k != "candidate")
        cost = self.search or {}
        return (f"Compressed({self.file_bytes:,} B, {self.compression_ratio:.1f}x smaller than dense fp32; "
                f"val {100 * self.val_accuracy:.2f}%, test {test} (percent); {knobs}; "
                f"{cost.get('strategy', '?')}: {cost.get('candidates', 0)} candidates, {cost.get('epochs', 0):g} "
                f"epochs{'' if self.path is None else f'; {self.path}'})")

    @property
    def compression_ratio(self) -> float:
        return self.dense_fp32_bytes / self.file_bytes

    def summary(self) -> dict:
        """The numbers as JSON-ready data (the CLI's ``--json``)."""
        keep = ("val_accuracy", "test_accuracy", "baseline_val_accuracy", "target_accuracy", "dense_fp32_bytes",
                "params", "macs", "sparsity", "knobs", "search", "margin")
        return {"file": str(self.path) if self.path else None, "file_bytes": self.file_bytes,
                "compression_ratio": self.compression_ratio, **{k: getattr(self, k) for k in keep}}


def _input_shape(loaders: Loaders) -> tuple[int, ...]:
    return tuple(loaders.val.x.shape[1:])


def weights_sha256(model: nn.Module) -> str:
    """A hash of a model's state (names and values)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def digest(model: nn.Module, loaders: Loaders) -> dict:
    """What identifies a search's input for its journal: a hash of the weights and of the data."""
    d = hashlib.sha256()
    for loader in (loaders.train, loaders.val):
        d.update(str(tuple(loader.x.shape)).encode())
        d.update(loader.x[:256].cpu().contiguous().numpy().tobytes())
        d.update(loader.y.cpu().numpy().tobytes())
    return {"model_sha256": weights_sha256(model), "data_sha256": d.hexdigest()}


# --- train, search and compress ------------------------------------------------------------------

def train(model: nn.Module, train: Any, val: Any = None, *, config: TrainConfig | None = None,
          device: str | torch.device = "cpu", augment: bool = False, run_dir: str | os.PathLike | None = None,
          verbose: bool = True, **overrides: Any) -> nn.Module:
    """Train ``model`` in place with slimzip's loop (``TrainConfig``; keyword overrides such as
    ``epochs=15, bn_l1=1e-4`` for slimming's L1 on BatchNorm scales); ``run_dir`` makes it resumable."""
    overrides = {RENAMED["train"].get(k, k): v for k, v in overrides.items()}  # old names still accepted
    cfg = dataclasses.replace(config or TrainConfig(), **overrides).validate()
    dev = torch.device(device)
    tr = as_loader(train, train=True, batch_size=cfg.batch_size, device=dev, augment=augment, seed=cfg.seed,
                   what="train")
    fit(model.to(dev), tr, val, cfg, run_dir=Path(run_dir) if run_dir else None, verbose=verbose)
    return model


def _target(baseline: float, target_accuracy: float | None, max_drop: float | None) -> float:
    if (target_accuracy is None) == (max_drop is None):
        raise SlimzipError("give exactly one of --target-accuracy (a validation accuracy, e.g. 0.99) and "
                           "--max-drop (points below the baseline, e.g. 0.5)")
    if target_accuracy is not None:
        return check_range("target accuracy", target_accuracy, 0.0, 1.0)
    return max(0.0, baseline - check_range("max drop", max_drop, 0.0, 100.0) / 100)


def search(model: nn.Module, train: Any, val: Any, test: Any = None, *, target_accuracy: float | None = None,
           max_drop: float | None = None, strategy: str | None = None, config: SearchConfig | None = None,
           train_config: TrainConfig | None = None, out: str | os.PathLike | None = None,
           run_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu", augment: bool = False,
           verbose: bool = True, spec: dict | None = None, identity: dict | None = None,
           file_meta: dict | None = None, defaults: dict | None = None, workers: int = 1,
           ray_address: str | None = None, full_train: Any = None, max_epochs: float | None = None,
           seed: int | None = None, teacher: nn.Module | None = None) -> Compressed:
    """The smallest .slz file whose decoded model meets a validation-accuracy target (``target_accuracy``
    as a fraction, or ``max_drop`` points below ``model``'s own), searching channel ratio x weight sparsity
    with ``strategy`` ('heuristic', 'grid', 'frontier'; default ``SearchConfig``'s); ``max_epochs``: the
    proxy search's budget; ``seed``: data order and initialisation. An argument that contradicts ``config``
    is an error, never silently dropped. ``run_dir`` holds the journal and the summary: the same call
    resumes a killed search (default: a temporary directory, not resumable). ``spec`` (a registry spec),
    ``identity``, ``file_meta``, ``defaults`` and ``full_train`` (the whole training split beside loaders
    already cut to ``train_subset``) are for the path-based API. With ``config.recover_epochs`` the best
    candidates are retrained on the whole training split (recovery) and the search goes on from them.
    ``teacher``: what distillation learns from instead of ``model`` (default: ``config.teacher``'s checkpoint)."""
    cfg = _with_tools(merged(config or SearchConfig(), strategy=strategy, max_epochs=max_epochs).validate())
    train_cfg = _seeded(train_config or DEFAULT_TRAIN, seed)
    dev = torch.device(device)
    loaders, full_train = _proxy_loaders(train, val, test, cfg, train_cfg, dev, augment, full_train)
    model = model.to(dev)
    check_finite(model, "the model")
    baseline = evaluate(model, loaders.val)[1]
    target = _target(baseline, target_accuracy, max_drop)
    teacher = _teacher(teacher, cfg, model, loaders, dev)
    config_json = json.loads(json.dumps({**(identity or digest(model, loaders)), "baseline_val_accuracy": baseline,
                                         "target_accuracy": target, "search": dataclasses.asdict(cfg),
                                         **({"teacher_sha256": weights_sha256(teacher)} if teacher else {})}))
    with _run_directory(run_dir) as run, RunDir(run, config_json, defaults).claim():
        journal = Journal(run / "journal.sqlite", config_json, defaults)
        pipeline = CandidatePipeline(model, spec, _input_shape(loaders), loaders, train_cfg, cfg, run,
                                     verbose=verbose, file_meta=file_meta, full_train=full_train, teacher=teacher)
        goal = "the smallest file" if cfg.objective == "bytes" else "the most accurate file within the budgets"
        log(f"searching ({cfg.strategy}) for {goal} at val accuracy >= {pct(target)} "
            f"(baseline {pct(baseline)}); journal {run / 'journal.sqlite'}", verbose=verbose)
        try:
            profile = pipeline.prepare()
            setup = (profile.epochs, profile.wall_seconds) if profile else (0.0, 0.0)
            pool = _pool(pipeline, workers, ray_address, dev)
            try:
                result = run_search(cfg, target, baseline, journal, pipeline, verbose=verbose, pool=pool, setup=setup,
                                    proxy_share=pipeline.proxy_share)
            finally:
                if pool is not None:
                    pool.close()
        finally:
            journal.close()
        candidates = [c.as_dict() for c in result.candidates]
        if result.best is None:
            _refuse_infeasible(result, cfg, pipeline, out, run, target, baseline)
        data, raw_bits, val = _lower_raw_bits(pipeline.file_path(result.best.key).read_bytes(), cfg, loaders, target,
                                              result.best.val_accuracy, verbose)
        knobs = {**_winner_knobs(result.best, cfg), **({"raw_bits": raw_bits} if raw_bits != cfg.raw_bits else {})}
        done = _finish(model, data, out, loaders, baseline, target, knobs, result.cost(), candidates, val,
                       result.margin)
        if run_dir is not None:  # as the command line's: `slimzip report` reads it
            atomic_write_json(run / "summary.json", {**done.summary(), "candidates": candidates, "run_dir": str(run)})
    return done


def _lower_raw_bits(data: bytes, cfg: SearchConfig, loaders: Loaders, target: float, val: float | None,
                    verbose: bool) -> tuple[bytes, int, float | None]:
    """``--min-raw-bits``, after the search: the winner's small tensors re-coded one bit fewer at a time (no
    training; the rest of the file unchanged) while the decoded file meets the target; the smallest such file
    wins. Returns the file, its small tensors' bits and its validation accuracy."""
    kept = (data, cfg.raw_bits, val)
    if not cfg.min_raw_bits or cfg.raw_dtype != "uint8" or cfg.objective != "bytes":
        return kept
    container = decode_container(data)
    if not self_describing(container.manifest):
        return kept
    write = recoder(container)  # the winner decoded once, written at each step
    for bits in range(cfg.raw_bits - 1, cfg.min_raw_bits - 1, -1):
        trial = write(dataclasses.replace(cfg, raw_bits=bits))
        acc = evaluate(decode_model(decode_container(trial)).to(loaders.val.x.device), loaders.val)[1]
        log(f"small tensors in {bits} bits: val {pct(acc)} ({'meets' if acc >= target else 'misses'} "
            f"{pct(target)}), {len(trial):,} B", verbose=verbose)
        if acc < target:
            break
        if len(trial) < len(kept[0]):
            kept = (trial, bits, acc)
    return kept


def _winner_knobs(best: Candidate, cfg: SearchConfig) -> dict:
    """What the summary says of the winner's knobs: channels, sparsity, codebook bits (single layers' apart),
    its share rate when not 0, and its journal id."""
    bits = candidate_bits(best, cfg)
    return {**dataclasses.asdict(best.knobs), "bits_conv": bits[0], "bits_fc": bits[1], "candidate": best.id,
            **({"layer_bits": layers} if (layers := candidate_layer_bits(best)) else {}),
            **({"share_rate": rate} if (rate := candidate_share_rate(best, cfg)) else {})}


def _teacher(teacher: nn.Module | None, cfg: SearchConfig, model: nn.Module, loaders: Loaders,
             dev: torch.device) -> nn.Module | None:
    """The model to distill from instead of ``model`` (``teacher``, else ``cfg.teacher``'s checkpoint), checked
    on a few validation images to give ``model``'s outputs; None: ``model`` itself."""
    if teacher is None and cfg.teacher is not None:
        teacher = load_checkpoint(cfg.teacher, dev)[0]
    if teacher is None:
        return None
    teacher = teacher.to(dev).eval()
    check_finite(teacher, "the teacher")
    x = next(iter(loaders.val))[0][:2]
    was = model.training
    try:
        with torch.no_grad():
            want = tuple(model.eval()(x).shape)
            try:
                got = tuple(teacher(x).shape)
            except (RuntimeError, ValueError, TypeError) as e:
                raise SlimzipError(f"the teacher does not take this data's images ({str(e).splitlines()[0]})") from None
    finally:
        model.train(was)
    if got != want:
        raise SlimzipError(f"the teacher gives outputs of shape {got} for the model's {want}: distillation needs the "
                           "same classes")
    return teacher


def _proxy_loaders(train: Any, val: Any, test: Any, cfg: SearchConfig, train_cfg: TrainConfig, dev: torch.device,
                   augment: bool, full_train: Any) -> tuple[Loaders, Any]:
    """The loaders the proxy search fine-tunes on (training images cut to ``train_subset``) and the whole
    training split recovery trains on. The path-based API's loaders come cut already, with their split."""
    if isinstance(train, Loaders):
        return train, full_train
    loaders = as_loaders(train, val, test, batch_size=train_cfg.batch_size, device=dev, augment=augment,
                         seed=train_cfg.seed)
    if cfg.train_subset is None:
        return loaders, loaders.train
    return dataclasses.replace(loaders, train=loaders.train.slice(0, cfg.train_subset)), loaders.train


def compress(model: nn.Module, train: Any, val: Any, test: Any = None, *, config: CompressConfig | None = None,
             channel_ratio: float | None = None, sparsity: float | None = None, epochs: float | None = None,
             prune_steps: int | None = None, train_config: TrainConfig | None = None,
             out: str | os.PathLike | None = None, device: str | torch.device = "cpu", augment: bool = False,
             verbose: bool = True, seed: int | None = None, spec: dict | None = None,
             file_meta: dict | None = None) -> Compressed:
    """Compress ``model`` at fixed knobs (``config``, a ``CompressConfig``; the plain arguments override
    it, a contradiction is an error) through the search's own candidate pipeline: remove
    ``channel_ratio`` of its channels, prune ``sparsity`` of the weights in ``prune_steps`` rounds, each
    followed by ``epochs`` (``retrain_epochs``) of fine-tuning, share weights, fine-tune centroids, code
    the file. ``slimzip compress`` with fixed knobs is this function. ``spec`` and ``file_meta`` are for
    the path-based API (a registry model's files name it instead of storing its graph)."""
    cfg = merged(config or CompressConfig(), channel_ratio=channel_ratio, sparsity=sparsity,
                  retrain_epochs=epochs, prune_steps=prune_steps).validate()
    train_cfg = _seeded(train_config or DEFAULT_TRAIN, seed)
    dev = torch.device(device)
    loaders = train if isinstance(train, Loaders) else as_loaders(train, val, test, batch_size=train_cfg.batch_size,
                                                                    device=dev, augment=augment, seed=train_cfg.seed)
    model = model.to(dev)
    check_finite(model, "the model")
    baseline = evaluate(model, loaders.val)[1]
    t0 = time.perf_counter()
    with _run_directory(None) as run:
        pipeline = CandidatePipeline(model, spec, _input_shape(loaders), loaders, train_cfg, SearchConfig.fixed(cfg),
                                     run, verbose=verbose, file_meta=file_meta)
        profile = pipeline.prepare()
        knobs = Knobs(cfg.channel_ratio, cfg.sparsity)
        row = pipeline(knobs, None, key="compress", epochs=cfg.retrain_epochs, rounds=cfg.prune_steps,
                       centroid_epochs=cfg.centroid_epochs)
        data = pipeline.file_path("compress").read_bytes()
    cost = {"strategy": "fixed", "candidates": 1, "epochs": row["epochs"] + (profile.epochs if profile else 0.0),
            "wall_seconds": time.perf_counter() - t0}
    return _finish(model, data, out, loaders, baseline, None, dataclasses.asdict(cfg), cost, [], row["val_accuracy"])


def _seeded(train_cfg: TrainConfig, seed: int | None) -> TrainConfig:
    """``train_cfg`` with ``seed`` (data order and initialisation), if one is given."""
    if seed is None:
        return train_cfg
    torch.manual_seed(seed)
    return dataclasses.replace(train_cfg, seed=seed)


def _pool(pipeline: CandidatePipeline, workers: int, ray_address: str | None, device: torch.device):
    """Ray workers for the search's independent candidates (``searcher.parallel``), or None: in-process.
    On ``cuda`` every worker takes one GPU."""
    check_range("workers", workers, 1, 4096)
    if workers == 1 and not ray_address:
        return None
    from .searcher.parallel import RayPool

    return RayPool(pipeline, workers, ray_address, gpus=device.type == "cuda")


@contextlib.contextmanager
def _run_directory(path: str | os.PathLike | None) -> Iterator[Path]:
    """The given run directory, or a temporary one removed afterwards."""
    if path is not None:
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix="slimzip-") as tmp:
        yield Path(tmp)


def _with_tools(cfg: SearchConfig) -> SearchConfig:
    """``cfg``, once the tools its budgets need are here: device budgets are measured by compiling."""
    if any(getattr(cfg, b) is not None for b in DEVICE_BUDGETS):
        from .deploy.cbuild import compiler

        compiler()
    return cfg


def _refuse_infeasible(result, cfg: SearchConfig, pipeline: CandidatePipeline, out, run: Path, target: float,
                       baseline: float) -> None:
    """Nothing met the target and the budgets: the closest file written apart, the summary, one line."""
    closest = _best_effort(result, cfg, pipeline, out)
    atomic_write_json(run / "summary.json", {"file": None, "search": result.cost(),
                                             "candidates": [c.as_dict() for c in result.candidates],
                                             "target_accuracy": target, "baseline_val_accuracy": baseline,
                                             "best_effort": closest})
    raise SlimzipError(_infeasible(result, target, baseline, run, closest,
                                   budgets=any(getattr(cfg, b) is not None for b in BUDGETS)))


def _best_effort(result, cfg: SearchConfig, pipeline: CandidatePipeline, out: str | os.PathLike | None) -> dict | None:
    """A search that meets nothing still hands over what it found: the most accurate candidate within the
    budgets (none within them: the smallest file), written beside ``out`` as NAME.best-effort.slz."""
    ok = [c for c in result.candidates if c.status == "ok" and pipeline.file_path(c.key).exists()]
    fits = [c for c in ok if not broken_budgets(c, cfg)]
    top = (max(fits, key=lambda c: (c.val_accuracy, -c.file_bytes)) if fits
           else min(ok, key=lambda c: (c.file_bytes, -c.val_accuracy), default=None))
    if top is None:
        return None
    path = None
    if out is not None:
        path = Path(out).with_name(Path(out).stem + ".best-effort.slz")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, pipeline.file_path(top.key).read_bytes())
    return {"candidate": top.id, "file": str(path) if path else None, "val_accuracy": top.val_accuracy,
            "file_bytes": top.file_bytes, "params": top.params, "macs": top.macs, "over_budget": over_budget(top, cfg),
            "channel_ratio": top.knobs.channel_ratio, "sparsity": top.knobs.sparsity}


def _infeasible(result, target: float, baseline: float, run: Path, closest: dict | None = None,
                budgets: bool = False) -> str:
    found = (f"closest: channels {closest['channel_ratio']:g}, sparsity {closest['sparsity']:g} -> val "
             f"{pct(closest['val_accuracy'])}, {closest['file_bytes']:,} B"
             + (f" (over {', '.join(closest['over_budget'])})" if closest["over_budget"] else "")
             + (f", written to {closest['file']}" if closest["file"] else "") if closest else _unfinished(result))
    why = (f"is above the input model's {pct(baseline)}" if target > baseline
           else "with the budgets was met by no candidate" if budgets else "was met by no candidate")
    return (f"target val accuracy {pct(target)} {why}: infeasible; {found} "
            f"({len(result.candidates)} candidates, {result.epochs} epochs; journal in {run})")


def _unfinished(result) -> str:
    """Why no candidate finished: the most narrowed one's refusal when a params / MACs budget refused them."""
    over = [c for c in result.candidates if refused(c)]
    if not over:
        return "no candidate finished"
    last = max(over, key=lambda c: c.knobs.channel_ratio)
    return f"no candidate fits: channels {last.knobs.channel_ratio:g} is {last.error}"


def _finish(model: nn.Module, data: bytes, out: str | os.PathLike | None, loaders: Loaders, baseline: float,
            target: float | None, knobs: dict, cost: dict, candidates: list[dict], val_accuracy: float,
            margin: float | None = None) -> Compressed:
    """Decode the file, write it (if ``out``: only a file slimzip's own reader accepts is written), and
    measure the decoded model once on the test split."""
    container = decode_container(data)  # decoded once: the file is the compressed model
    decoded = decode_model(container, None if self_describing(container.manifest) else model).eval()
    if out is not None:
        atomic_write_bytes(Path(out), data)
    decoded = decoded.to(loaders.val.x.device)
    test_acc = evaluate(decoded, loaders.test)[1] if loaders.test is not None else None
    shape = _input_shape(loaders)
    cost_ = measure(decoded, shape)
    return Compressed(decoded, data, Path(out) if out is not None else None, val_accuracy, test_acc, baseline,
                      target, dense_fp32_bytes(model), cost_.params, cost_.macs, sparsity_of(decoded), knobs, cost,
                      candidates, margin)


__all__: Sequence[str] = ("Compressed", "as_loader", "as_loaders", "compress", "load", "search", "train")
