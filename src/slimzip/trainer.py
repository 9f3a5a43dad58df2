"""The training engine: one loop, extended through extra loss terms and after-step hooks.

The L1 penalty on BatchNorm scales (network slimming) is a loss term; mask enforcement (deep
compression) is an after-step hook. With a ``run_dir`` the loop checkpoints every epoch (weights and
optimizer state as safetensors, the rest as JSON) and resumes from there when started again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from .atomic import remove_temporaries
from .checkpoint import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors
from .config import SCHEDULES, TrainConfig  # declared torch-free (a fast --help); here for its users
from .data import DeviceLoader
from .data.adapt import as_loader
from .errors import SlimzipError
from .progress import Bar, log, pct

LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, x, out, y) -> scalar
AfterStep = Callable[[nn.Module], None]  # model -> None, called after every optimizer step


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * SCHEDULES[cfg.schedule](step / (cfg.epochs * steps_per_epoch), cfg)


# --- loss terms ----------------------------------------------------------------------------------

def bn_l1_penalty(lam: float) -> LossTerm:
    """Network slimming's sparsity term: ``lam * sum |gamma|`` over every BatchNorm scale."""
    def term(model: nn.Module, _x: torch.Tensor, _out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        scales = [m.weight for m in model.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
        return lam * sum(s.abs().sum() for s in scales) if scales else torch.zeros(())
    return term


def distillation(teacher: nn.Module, weight: float, temperature: float = 4.0) -> LossTerm:
    """Knowledge distillation (Hinton et al. 2015): ``weight * T^2 * KL(teacher || student)`` on the
    batch's logits softened by ``T``; the teacher (e.g. the model before pruning) is frozen in eval mode."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def term(_model: nn.Module, x: torch.Tensor, out: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = F.log_softmax(teacher(x).float() / temperature, 1)
        student = F.log_softmax(out.float() / temperature, 1)
        return weight * temperature ** 2 * F.kl_div(student, target, log_target=True, reduction="batchmean")
    return term


# --- evaluation ----------------------------------------------------------------------------------

def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16. 'auto' says yes on CUDA and on CPUs with native bf16 (AMX or
    AVX512-BF16) only: elsewhere (an AVX2-only CPU, measured) bf16 convolutions take a slow path and
    train about 10x slower than fp32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def use_channels_last(model: nn.Module, wanted: bool, device: torch.device) -> bool:
    """Whether to train in NHWC. Not on a CPU for a model with a 1x1 convolution of stride > 1: PyTorch
    2.13's CPU backward of that convolution in channels_last aborts the process (double free) or never
    returns, depending on the CPU; such a model trains in NCHW."""
    if not wanted:
        return False
    risky = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.stride != (1, 1)]
    return not (risky and device.type == "cpu")


def autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, bf16: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction correct) over a loader, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    device = next(model.parameters()).device
    for x, y in loader:
        with autocast(bf16, device):
            out = model(x)
        loss_sum += F.cross_entropy(out.float(), y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        count += len(y)
    model.train(was_training)
    return loss_sum / max(count, 1), correct / max(count, 1)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, images: int) -> int:
    """Re-estimate every BatchNorm's running mean and variance from ``images`` training images (forward
    passes in train mode, no gradient, no weight change): after pruning, the old statistics no longer
    match the layer outputs, and this alone recovers most of the accuracy a pruned model seems to have
    lost. Returns the images used (0 when the model has no BatchNorm)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or images <= 0:
        return 0
    was_training, momenta = model.training, [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.train()
    seen = 0
    for x, _y in loader:
        model(x[:images - seen])
        seen += min(len(x), images - seen)
        if seen >= images:
            break
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    model.train(was_training)
    return seen


# --- the loop ------------------------------------------------------------------------------------

@dataclass
class TrainState:
    """What survives between epochs (and between a kill and a resume)."""

    epoch: int = 0  # epochs finished
    best_val_loss: float = math.inf
    bad_epochs: int = 0  # epochs since the best validation loss
    stopped_early: bool = False
    history: list[dict] = dataclasses.field(default_factory=list)
    best_weights: dict[str, torch.Tensor] | None = dataclasses.field(default=None, repr=False)  # not in JSON

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "best_weights"}


def fit(model: nn.Module, train: DeviceLoader, val: DeviceLoader | None, cfg: TrainConfig, *,
        loss_terms: Sequence[LossTerm] = (), after_step: Sequence[AfterStep] = (),
        run_dir: str | Path | None = None, verbose: bool = True) -> TrainState:
    """Train ``model`` in place; returns the state with one history row per epoch. ``train`` / ``val``
    may also be tensors, a torch Dataset or DataLoader (``data.adapt.as_loader`` reads them in)."""
    cfg.validate()
    device = next(model.parameters()).device
    train = as_loader(train, train=True, batch_size=cfg.batch_size, device=device, seed=cfg.seed, what="train")
    val = as_loader(val, train=False, device=device, what="val") if val is not None else None
    if nhwc := use_channels_last(model, cfg.channels_last, device):
        model.to(memory_format=torch.channels_last)
    bf16 = use_bf16(cfg.precision, device)
    net = torch.compile(model) if cfg.compile else model  # shares parameters with model
    terms = list(loss_terms) + ([bn_l1_penalty(cfg.bn_l1)] if cfg.bn_l1 > 0 else [])
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                          weight_decay=cfg.weight_decay)
    run = Path(run_dir) if run_dir else None
    state = _resume(run, model, opt, cfg, verbose) if run else TrainState()
    train = train if cfg.shuffle else train.in_order()
    if (steps := len(train)) == 0:
        raise SlimzipError("the training split is empty")
    for epoch in range(state.epoch, cfg.epochs):
        if state.stopped_early:
            break
        t0 = time.perf_counter()
        train.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = Bar(train, steps, f"epoch {epoch + 1}/{cfg.epochs}", enabled=verbose)
        for i, (x, y) in enumerate(bar):
            for group in opt.param_groups:
                group["lr"] = lr_at(epoch * steps + i, steps, cfg)
            if nhwc and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(bf16, device):
                out = net(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=cfg.label_smoothing)
            total = loss + sum(term(model, x, out, y) for term in terms)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            for hook in after_step:
                hook(model)
            loss_sum += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            if i % 25 == 0:
                bar.status(f"loss {loss.item():.4f}")
        row = _epoch_row(epoch, opt.param_groups[0]["lr"], loss_sum, correct,
                         steps * train.batch_size if train.drop_last else train.num_samples)
        if val is not None:
            row["val_loss"], row["val_acc"] = evaluate(model, val, bf16=bf16)
        row["seconds"] = time.perf_counter() - t0
        _end_epoch(state, row, cfg, model, run)
        log(_format_row(row, cfg.epochs), verbose=verbose)
        if run:
            _save_state(run, model, opt, state, cfg)
    if state.best_weights is not None:  # kept only by early stopping that ends on the best epoch, not the last
        model.load_state_dict(state.best_weights)
    return state


def _epoch_row(epoch: int, lr: float, loss_sum: torch.Tensor, correct: torch.Tensor, images: int) -> dict:
    """The epoch's training numbers; a loss that is not finite means training diverged."""
    row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum.item() / images, "train_acc": correct.item() / images}
    if not math.isfinite(row["train_loss"]):
        raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {row['train_loss']})")
    return row


def _end_epoch(state: TrainState, row: dict, cfg: TrainConfig, model: nn.Module, run: Path | None) -> None:
    """Record the epoch; with early stopping, count epochs without progress and keep the best weights
    (when they are to be restored)."""
    state.epoch = row["epoch"]
    state.history.append(row)
    if not cfg.patience or "val_loss" not in row:
        return
    if row["val_loss"] < state.best_val_loss:
        state.best_val_loss, state.bad_epochs = row["val_loss"], 0
        if cfg.restore_best:
            state.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if run:
                save_tensors(run / "best.safetensors", state.best_weights)
    else:
        state.bad_epochs += 1
        state.stopped_early = state.bad_epochs >= cfg.patience


def _format_row(row: dict, epochs: int) -> str:
    val = f"  val loss {row['val_loss']:.4f} acc {pct(row['val_acc'])}" if "val_loss" in row else ""
    return (f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} acc {pct(row['train_acc'])}"
            f"{val}  lr {row['lr']:.4g}  {row['seconds']:.1f}s")


def _save_state(run: Path, model: nn.Module, opt: torch.optim.Optimizer, state: TrainState, cfg: TrainConfig) -> None:
    """Weights + momentum buffers (safetensors), then the JSON state that points at them."""
    names = {id(p): name for name, p in model.named_parameters()}
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    for group in opt.param_groups:
        for p in group["params"]:
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"momentum/{names[id(p)]}"] = buf
    saved = {"config": cfg.to_json(), **state.to_json()}
    # The one commit point: weights, momentum and the state (history included) in one file, one rename.
    # train_state.json and metrics.jsonl are views of it, rewritten from it on resume if a kill beat them.
    save_tensors(run / "last.safetensors", tensors, metadata={STATE_KEY: json.dumps(saved)})
    _write_views(run, saved)


def _write_views(run: Path, saved: dict) -> None:
    atomic_write_json(run / "train_state.json", saved)
    atomic_write_bytes(run / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in saved["history"]).encode())


STATE_KEY = "slimzip_train_state"  # last.safetensors metadata: the JSON state of the epoch its weights end


def _saved_state(last: Path) -> dict:
    try:
        with safe_open(str(last), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise SlimzipError(f"{last}: not a readable safetensors file ({e})") from None
    if STATE_KEY in meta:
        return json.loads(meta[STATE_KEY])
    return json.loads((last.parent / "train_state.json").read_text())  # a run saved before the state moved


def _resume(run: Path, model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, verbose: bool) -> TrainState:
    """Continue after the last epoch ``run/last.safetensors`` commits (its metadata holds the state; runs
    from before that read ``train_state.json``), if it was made with the same config."""
    remove_temporaries(run)
    last = run / "last.safetensors"
    if not last.is_file():
        return TrainState()
    saved = _saved_state(last)
    _write_views(run, saved)
    if TrainConfig.from_json(saved["config"]) != cfg:
        raise SlimzipError(f"{run} holds a run with a different training config; use a new --out directory")
    tensors = load_tensors(run / "last.safetensors", next(model.parameters()).device)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    params = dict(model.named_parameters())
    for key, buf in tensors.items():
        if key.startswith("momentum/"):
            opt.state[params[key[9:]]]["momentum_buffer"] = buf
    state = TrainState(**{k: v for k, v in saved.items() if k != "config"})
    if cfg.patience and cfg.restore_best and (run / "best.safetensors").is_file():
        state.best_weights = load_tensors(run / "best.safetensors", next(model.parameters()).device)
    log(f"resuming {run} after epoch {state.epoch}", verbose=verbose)
    return state
