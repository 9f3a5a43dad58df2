"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from typing import Any


class SlimzipError(Exception):
    """A user mistake: unknown name, bad number, missing or corrupt file, infeasible request."""


INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it)


class NarrowingError(SlimzipError):
    """Removing channels left a model that no longer runs (a layer or attribute tied to the channels
    that slimzip cannot narrow). A search records the candidate as failed and goes on."""


def check_range(name: str, value: float, low: float, high: float, *, high_open: bool = False) -> float:
    """Return ``value`` if ``low <= value <= high`` (``< high`` if ``high_open``), else raise."""
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise SlimzipError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


def unknown(kind: str, name: str, known: list[str]) -> SlimzipError:
    """The error for a name that is not in a registry, listing the names that are."""
    return SlimzipError(f"unknown {kind} {name!r}; choose from: {', '.join(sorted(known))}")


def check_finite(model: Any, what: str) -> None:
    """Refuse a model holding a NaN or an infinity in any parameter or buffer (a diverged training): bad
    input for compression, whose file would decode to a model that cannot score."""
    import torch

    for name, t in (*model.named_parameters(), *model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise SlimzipError(f"{what}: {name} holds non-finite values (NaN or infinity): the model diverged; "
                               "retrain it (a lower --lr) before compressing")
