"""What every command returns (its ``--json``) and writes as ``summary.json``: one type per run kind.

The report and the resumed runs read summaries back through ``read_summary``, which checks the type's
required keys, so a file from another kind or a truncated one is a one-line error, not a KeyError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, TypedDict, TypeVar

from .errors import SlimzipError


class Cost(TypedDict):
    params: int
    macs: int
    flops: int
    nonzero_macs: int


class TrainSummary(TypedDict):
    """``slimzip train``."""

    model: str
    dataset: str
    out: str
    val_accuracy: float
    test_accuracy: float
    test_loss: float
    epochs_run: int
    stopped_early: bool
    train_seconds: float  # epochs trained, across resumes
    wall_seconds_this_call: float
    params: int
    macs: int
    flops: int
    nonzero_macs: int


class PruneState(TypedDict, total=False):
    cost: Cost
    widths: dict[str, int]
    val_accuracy: float
    val_accuracy_before_finetune: float
    test_accuracy: float


class PruneSummary(TypedDict, total=False):
    """``slimzip prune-channels`` (``passes`` only with more than one pass)."""

    model: str
    dataset: str
    out: str
    method: str
    channel_ratio: float
    scope: str
    finetune_epochs: int
    before: PruneState
    after: PruneState
    params_removed: float
    macs_removed: float
    criteria: dict[str, str]
    passes: list[dict]


class DropNetSummary(TypedDict):
    """``slimzip dropnet``."""

    model: str
    dataset: str
    metric: str
    out: str
    checkpoint: dict[str, Any]
    cycles: list[dict[str, Any]]


class SearchCost(TypedDict):
    strategy: str
    candidates: int
    epochs: float
    wall_seconds: float


class FileSummary(TypedDict):
    """A .slz file made by ``compress`` (fixed knobs) or a search: ``slimzip.Compressed.summary()``."""

    file: Optional[str]
    file_bytes: int
    compression_ratio: float
    val_accuracy: float
    test_accuracy: Optional[float]  # measured once, on the decoded file
    baseline_val_accuracy: float
    target_accuracy: Optional[float]
    dense_fp32_bytes: int
    params: int
    macs: int
    sparsity: float
    knobs: dict[str, Any]  # channel_ratio, sparsity (a search's: and the winning candidate's id)
    search: SearchCost
    margin: Optional[float]


class CompressSummary(FileSummary):
    """``slimzip compress`` with fixed knobs: ``slimzip.compress``'s summary of the file, and what the
    command prints besides (``knobs``: the ``CompressConfig``)."""

    nonzero_macs: int
    dense_macs: int
    dead_units_removed: int
    epochs: float
    wall_seconds: float
    components: dict[str, Any]  # bytes per part of the file (``inspect``)


class SearchSummary(FileSummary):
    """``slimzip compress --search`` (also each row of ``compare-search``)."""

    baseline_test_accuracy: Optional[float]
    candidates: list[dict[str, Any]]
    run_dir: str
    wall_seconds_this_call: float


class CompareSummary(TypedDict):
    """``slimzip compare-search`` (``compare.json``): each search's file numbers, side by side."""

    checkpoint: str
    target_accuracy: Optional[float]
    strategies: dict[str, dict[str, Any]]
    ratios: dict[str, dict[str, float]]
    ablation: dict[str, dict[str, Any]]
    ablation_strategy: Optional[str]
    budget_ratio: Optional[float]


S = TypeVar("S")


def read_summary(path: Path, kind: type[S]) -> S:
    """A summary file of ``kind``, its required keys checked."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise SlimzipError(f"{path}: not readable JSON ({e.__class__.__name__})") from None
    missing = sorted(getattr(kind, "__required_keys__", set()) - set(data)) if isinstance(data, dict) else ["(all)"]
    if missing:
        raise SlimzipError(f"{path}: not a {kind.__name__} (missing {', '.join(missing[:5])})")
    return data  # type: ignore[return-value]
