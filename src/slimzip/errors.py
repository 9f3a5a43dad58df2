"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class SlimzipError(Exception):
    """A user mistake: unknown name, bad number, missing or corrupt file, infeasible request."""


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
