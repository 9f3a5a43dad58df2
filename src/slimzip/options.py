"""Knobs declared once: a config dataclass field carries its help in its metadata (``knob``), and the
command line's options are generated from the fields (``add_options``), with the dataclass's default
shown in ``--help``. No default is restated by hand."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Sequence


def knob(default: Any, help: str, *, flag: str | None = None, points: bool = False, positive: bool = False,
         alias: str | None = None) -> Any:
    """A config field with its command-line help. ``flag``: the option's name where it is not
    ``--field-name`` (a boolean that turns a True default off: ``--no-shuffle``); ``points``: a fraction
    entered and shown in percentage points; ``positive``: an integer of at least 1 (checked as parsed);
    ``alias``: the option's old name, still accepted."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, "points": points,
                                                        "positive": positive, "alias": alias})


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def fractions(text: str) -> tuple[float, ...]:
    """A comma-separated list of numbers (range checks are the config's)."""
    return tuple(number(part) for part in text.split(",") if part.strip())


PARSE = {int: int, float: number, str: str}


def _parse(hint: Any) -> Any:
    """The argparse type of a field annotation (``X | None`` parses as X)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return fractions
    if args and typing.get_origin(hint) is not tuple:
        return PARSE[args[0]]
    return PARSE[hint]


def _shown(value: Any, points: bool) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}" for v in value)
    if points:
        return f"{100 * value:g} points"
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_options(parser: argparse.ArgumentParser, sources: Sequence[tuple[str, Any]],
                names: Sequence[str] | None = None) -> list[str]:
    """One option per field of the ``(label, dataclass or instance)`` sources (only ``names`` if given);
    a field in several sources is one option whose help gives each source's default (an instance's
    values are its defaults: a recipe). Every option defaults to None (not given: the config's default
    applies). Returns the names."""
    fields: dict[str, list[tuple[str, dataclasses.Field, Any, Any]]] = {}
    for label, source in sources:
        cls = source if isinstance(source, type) else type(source)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if "help" in f.metadata and (names is None or f.name in names):
                default = f.default if source is cls else getattr(source, f.name)
                fields.setdefault(f.name, []).append((label, f, hints[f.name], default))
    for name, found in fields.items():
        _, f, hint, _ = found[0]
        meta = f.metadata
        defaults = [(label, default) for label, _, _, default in found]
        if len(sources) == 1 and defaults[0][0]:  # one recipe: say whose defaults they are
            shown = f"default: {defaults[0][0]} {_shown(defaults[0][1], meta['points'])}"
        elif len({repr(d) for _, d in defaults}) == 1:
            shown = f"default {_shown(defaults[0][1], meta['points'])}"
        else:
            shown = "default " + ", ".join(f"{_shown(d, meta['points'])} ({label})" for label, d in defaults)
        flag = meta["flag"] or f"--{name.replace('_', '-')}"
        text = meta["help"] if meta["flag"] else f"{meta['help']} ({shown})"  # a named flag's help says it all
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": text}
        if hint is bool:
            kwargs["action"] = (argparse.BooleanOptionalAction if meta["flag"] is None and f.default
                                else "store_false" if f.default else "store_true")
        else:
            kwargs["type"] = positive_int if meta["positive"] else _parse(hint)
        if meta.get("alias"):
            kwargs["help"] += f" (old name: {meta['alias']})"
        parser.add_argument(flag, *([meta["alias"]] if meta.get("alias") else []), **kwargs)
    return list(fields)


def given(args: argparse.Namespace, cls: type, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The options of ``cls``'s fields the user gave (points converted back to fractions)."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None and (names is None or f.name in names) and "help" in f.metadata:
            out[f.name] = value / 100 if f.metadata["points"] else value
    return out
