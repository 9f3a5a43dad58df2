"""The knobs of training and of fixed-knob compression, declared once, importable without torch (the
command line builds its options from them, and ``--help`` should not wait for torch to load)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from .coding import CODECS
from .errors import SlimzipError, check_range, unknown
from .options import knob
from .settings import CHANNEL_SCOPES, RENAMED

PRUNE_PATTERNS = ("weight", "row")  # what magnitude pruning removes at once (unstructured.PATTERNS)
RAW_DTYPE_NAMES = ("float16", "float32", "uint8")  # how small tensors are stored (codec.RAW_DTYPES + 8-bit affine)

EXPORT_FORMATS = ("onnx", "onnx-int8", "tflite-int8", "c", "c-dense")  # `slimzip export`: fp32 ONNX, int8 ONNX,
# int8 TFLite, C99 (stored or float32 weights)
MAX_BATCH = 1 << 20  # images per step; more is a typo, not a batch


def merged(cfg: Any, **arguments: Any) -> Any:
    """``cfg`` (a config dataclass) with the plain arguments given (not None); an argument the config does
    not have, or one that contradicts a value set in ``cfg`` (not its default), is an error."""
    names = {f.name for f in dataclasses.fields(cfg)}
    if unknown_names := sorted(set(arguments) - names):
        raise SlimzipError(f"unknown argument(s) {', '.join(unknown_names)}; the knobs are {', '.join(sorted(names))}")
    defaults = type(cfg)()
    given = {k: v for k, v in arguments.items() if v is not None}
    for name, value in given.items():
        mine = getattr(cfg, name)
        if mine != value and mine != getattr(defaults, name):
            raise SlimzipError(f"{name}={value!r} contradicts config.{name}={mine!r}: give it once")
    return dataclasses.replace(cfg, **given)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Saved as JSON beside every result."""

    epochs: int = knob(10, "passes over the training split", positive=True)
    batch_size: int = knob(128, "images per step", positive=True)
    lr: float = knob(0.1, "peak learning rate")
    momentum: float = knob(0.9, "SGD momentum")
    nesterov: bool = knob(False, "Nesterov momentum")
    weight_decay: float = knob(5e-4, "L2 coefficient on every parameter")
    schedule: str = knob("cosine", "learning-rate schedule: constant, step, cosine or onecycle")
    milestones: tuple[float, ...] = knob((0.5, 0.75), "step schedule: fractions of training where lr /= 10, "
                                                      "comma-separated")
    warmup_epochs: float = knob(0.0, "linear warm-up from 0, in epochs")
    label_smoothing: float = knob(0.0, "cross-entropy label smoothing, in [0, 1)")
    bn_l1: float = knob(0.0, "lambda of the L1 penalty on BN scales (network slimming; 0: off)", alias="--sparsity")
    precision: str = knob("auto", "auto, bf16 or fp32 (auto: bf16 only where the hardware has it)")
    channels_last: bool = knob(True, "NHWC memory layout (faster convs on CPU and GPU; no effect on MLPs; not on a "
                                     "CPU for a model with a 1x1 stride-2 conv, whose NHWC backward crashes PyTorch)")
    compile: bool = knob(False, "torch.compile the model: faster epochs after a one-off compile (minutes on a CPU)")
    seed: int = knob(0, "weight init and data order")
    patience: int = knob(0, "early stopping after N epochs without a lower validation loss (0: off)")
    restore_best: bool = knob(True, "early stopping keeps the last epoch's weights, as Keras does (default: the "
                                    "best epoch's)", flag="--keep-last")
    shuffle: bool = knob(True, "train on the split in its stored order every epoch (default: reshuffled each "
                               "epoch)", flag="--no-shuffle")

    def validate(self) -> "TrainConfig":
        if self.epochs < 1:
            raise SlimzipError(f"epochs must be at least 1, got {self.epochs}")
        check_range("batch size", self.batch_size, 1, MAX_BATCH)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SlimzipError(f"learning rate must be a positive number, got {self.lr}")
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("weight decay", self.weight_decay, 0.0, 1.0)
        check_range("label smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        check_range("BN L1 lambda (--bn-l1)", self.bn_l1, 0.0, 1.0)
        check_range("warm-up epochs", self.warmup_epochs, 0.0, float(self.epochs))
        if self.patience < 0:
            raise SlimzipError(f"patience must be 0 (off) or positive, got {self.patience}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise unknown("precision", self.precision, ["auto", "bf16", "fp32"])
        if not self.milestones or any(not 0 < m < 1 for m in self.milestones) or \
                list(self.milestones) != sorted(self.milestones):
            raise SlimzipError(f"milestones must be increasing fractions of training in (0, 1), got {self.milestones}")
        if self.schedule not in SCHEDULES:
            raise unknown("schedule", self.schedule, list(SCHEDULES))
        return self

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {RENAMED["train"].get(k, k): v for k, v in d.items()}  # configs saved before a rename
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**d)


# --- schedules: progress in [0, 1] -> multiplier of the peak learning rate -----------------------

def _step(t: float, cfg: TrainConfig) -> float:
    return 0.1 ** sum(t >= m for m in cfg.milestones)


SCHEDULES: dict[str, Callable[[float, TrainConfig], float]] = {
    "constant": lambda t, cfg: 1.0,
    "step": _step,
    "cosine": lambda t, cfg: 0.5 * (1 + math.cos(math.pi * t)),
    "onecycle": lambda t, cfg: t / 0.3 if t < 0.3 else (1 - t) / 0.7,  # triangle, peak at 30%
}



@dataclass(frozen=True)
class CodingConfig:
    """How a file is coded, declared once: fixed-knob compression (``CompressConfig``) and the search
    (``searcher.SearchConfig``) are both coding configs, checked by the same ``validate_coding``."""

    bits_conv: int = knob(8, "codebook index bits, conv layers")
    bits_fc: int = knob(5, "codebook index bits, linear layers")
    index_bits_conv: int = knob(0, "relative-index bits, conv layers (fillers past 2^bits - 1; 0: per tensor, the "
                                   "width whose position stream is smallest)")
    index_bits_fc: int = knob(0, "relative-index bits, linear layers (0: per tensor, the smallest stream's)")
    coder: str = knob("auto", "adaptive, rans, huffman, fixed, or auto: the smallest of them for each stream, or the "
                             "file's joint stream (one adaptive coder for every stream) where that is smaller")
    raw_dtype: str = knob("float16", "float16, float32 or uint8 (8-bit affine, .slz version 4) for BN, biases and "
                                     "other small tensors")
    raw_bits: int = knob(8, "with --raw-dtype uint8: the small tensors' steps in this many bits, packed (1-8; "
                            ".slz version 6); BatchNorm scale and shift often hold at 4-5")
    fold_bn: bool = knob(True, "store BatchNorm as scale + shift (a preceding bias folded in): exact in eval mode "
                               "and smaller (--no-fold-bn: its four tensors as they are)", flag="--no-fold-bn")
    share_rate: float = knob(0.0, "entropy-constrained weight sharing: each weight's code chosen for its squared "
                                  "error plus this x the layer's weight variance per bit of code (0: plain k-means; "
                                  "0.01-0.04: fewer bits per code for a little more error; past ~0.05 cells empty "
                                  "fast)")

    def validate_coding(self) -> None:
        for name in ("bits_conv", "bits_fc"):
            check_range(name.replace("_", " "), getattr(self, name), 1, 16)
        for name in ("index_bits_conv", "index_bits_fc"):  # 0: chosen per tensor
            check_range(name.replace("_", " "), getattr(self, name), 0, 16)
        if self.coder not in (*CODECS, "auto"):
            raise unknown("coder", self.coder, [*CODECS, "auto"])
        if self.raw_dtype not in RAW_DTYPE_NAMES:
            raise unknown("raw dtype", self.raw_dtype, list(RAW_DTYPE_NAMES))
        check_range("share rate", self.share_rate, 0.0, 1.0)
        check_range("raw bits", self.raw_bits, 1, 8)


@dataclass(frozen=True)
class TuneConfig:
    """The pruning and fine-tuning knobs fixed-knob compression and the search share, declared once."""

    channel_scope: str = knob("auto", "channel removal threshold: global, layer, auto (global where the model has "
                                      "BN, else layer), or sensitivity (each layer its own ratio, from a layer "
                                      "profile on val)")
    prune_steps: int = knob(3, "prune-retrain rounds; sparsity rises geometrically over them (a search: the "
                               "grid's per candidate)", positive=True)
    prune_pattern: str = knob("weight", "what weight pruning removes: weight (each alone, by magnitude) or row "
                                        "(whole conv kernel rows and runs of 4 linear inputs, by mean magnitude: "
                                        "positions that code in fewer bits)")
    centroid_epochs: int = knob(1, "centroid fine-tuning epochs after weight sharing (a search: its winner's)")
    lr: float = knob(0.01, "retraining / fine-tuning learning rate (cosine within each round or step)")

    def validate_tuning(self) -> None:
        if self.channel_scope not in CHANNEL_SCOPES:
            raise unknown("channel scope", self.channel_scope, list(CHANNEL_SCOPES))
        check_range("prune steps", self.prune_steps, 1, 1000)
        if self.prune_pattern not in PRUNE_PATTERNS:
            raise unknown("pruning pattern", self.prune_pattern, list(PRUNE_PATTERNS))
        check_range("centroid epochs", self.centroid_epochs, 0, 1000)
        if not (self.lr > 0 and self.lr < 10):
            raise SlimzipError(f"learning rate must be in (0, 10), got {self.lr}")


CODING_FIELDS = tuple(f.name for f in dataclasses.fields(CodingConfig))


@dataclass(frozen=True)
class CompressConfig(TuneConfig, CodingConfig):
    """The knobs of deep compression (its coding and tuning knobs from ``CodingConfig`` and
    ``TuneConfig``). Saved in the file's manifest."""

    channel_ratio: float = knob(0.0, "fixed knobs: fraction of channels removed first, then retrained")
    sparsity: float = knob(0.9, "fixed knobs: fraction of conv/linear weights set to zero")
    scope: str = knob("layer", "weight-pruning threshold: layer (each at the sparsity) or global")
    retrain_epochs: float = knob(2.0, "fixed knobs: retraining epochs (masks held) after each pruning round (a "
                                      "fraction: one pass over that share of the training images)")
    centroid_grad: str = "mean"  # 'mean' or 'sum' of the cluster's weight gradients (see sharing.py)

    def validate(self) -> "CompressConfig":
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        check_range("channel ratio", self.channel_ratio, 0.0, 1.0, high_open=True)
        self.validate_coding()
        self.validate_tuning()
        check_range("retrain epochs", self.retrain_epochs, 0.0, 1000.0)
        return self


@dataclass(frozen=True)
class PruneConfig:
    """The knobs of ``slimzip prune-channels`` (``api.prune_channels``): remove channels once, or in
    passes, then fine-tune. Saved in the output checkpoint's config."""

    method: str = knob("slimming", "channel criterion: slimming (BN scales), l1, l2, dropnet (mean activation), "
                                   "dropnet_max, apoz or random")
    channel_ratio: float = knob(0.5, "fraction of channels removed, in [0, 1)", flag="--ratio")
    scope: str = knob("global", "global (one threshold) or layer (the ratio in every layer)")
    min_channels: int = knob(1, "channels every layer keeps", positive=True)
    round_to: int = knob(1, "round kept widths up to a multiple (8, 16, 32)", positive=True)
    finetune_epochs: int = knob(0, "fine-tune epochs after the last pass")
    lr: float | None = knob(None, "fine-tune learning rate (none: a tenth of the checkpoint's)")
    schedule: str = knob("cosine", "fine-tune schedule: cosine, step (the checkpoint's milestones), constant or "
                                   "onecycle")
    bn_l1: float = knob(0.0, "L1 lambda on BN scales while fine-tuning (multi-pass slimming)", alias="--sparsity")
    passes: int = knob(1, "remove the ratio in N equal steps, fine-tuning between them (gradual)", positive=True)
    pass_epochs: int | None = knob(None, "fine-tune epochs after each step but the last (none: a quarter of "
                                         "--finetune-epochs, at least 1)")
    pass_bn_l1: float | None = knob(None, "L1 lambda on BN scales in those fine-tunes (none: the checkpoint's own "
                                          "training lambda)", alias="--pass-sparsity")
    distill: float = knob(0.0, "fine-tune with this weight on distillation from the unpruned model (0: off; e.g. 1)")
    teacher: str | None = knob(None, "with --distill: distill from this checkpoint directory instead (same dataset)")

    def validate(self) -> "PruneConfig":
        check_range("channel ratio", self.channel_ratio, 0.0, 1.0, high_open=True)
        check_range("distillation weight", self.distill, 0.0, 100.0)
        if self.scope not in ("global", "layer"):
            raise unknown("channel scope", self.scope, ["global", "layer"])
        if self.passes < 1 or self.finetune_epochs < 0 or (self.pass_epochs is not None and self.pass_epochs < 0):
            raise SlimzipError(f"passes must be at least 1 and epochs at least 0 (got {self.passes} passes)")
        if self.teacher is not None and not self.distill:
            raise SlimzipError("--teacher is the model to distill from: give --distill a weight above 0 too")
        return self


# Training recipes per dataset (every field can be overridden from the command line), and for other data
RECIPES: dict[str, TrainConfig] = {
    # LeNets / MLPs on MNIST: short cosine runs are enough (no augmentation for digits).
    "mnist": TrainConfig(epochs=15, batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine"),
    # Network slimming's CIFAR recipe: SGD, batch 64, 160 epochs, lr 0.1 / 10 at 50% and 75%, wd 1e-4.
    "cifar10": TrainConfig(epochs=160, batch_size=64, lr=0.1, weight_decay=1e-4, schedule="step"),
    "cifar100": TrainConfig(epochs=160, batch_size=64, lr=0.1, weight_decay=1e-4, schedule="step"),
}
DEFAULT_RECIPE = TrainConfig(epochs=30, batch_size=128, lr=0.05, weight_decay=5e-4, schedule="cosine")  # other data

DROPNET_RECIPE = TrainConfig(epochs=100, batch_size=32, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant",
                             patience=5)  # DropNet's: plain SGD, early stopping
