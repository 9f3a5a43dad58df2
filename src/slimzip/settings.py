"""Run settings, without any heavy import: matching a run directory's saved settings against a new
command's, and the value sets that several configs share."""

from __future__ import annotations

from typing import Any

CHANNEL_SCOPES = ("auto", "global", "layer", "sensitivity")  # see structured.slimming and structured.sensitivity

# Settings renamed after runs were saved with the old names, per section of a saved config: one word, one
# meaning ("sparsity" is a fraction of zero weights; the L1 lambda on BN scales is "bn_l1").
RENAMED: dict[str, dict[str, str]] = {
    "train": {"sparsity": "bn_l1"},
    "prune": {"sparsity": "bn_l1", "pass_sparsity": "pass_bn_l1"},
}


def upgrade(saved: Any) -> Any:
    """A saved config with every renamed setting under its new name (the section's own renames)."""
    if not isinstance(saved, dict):
        return saved
    out = dict(saved)
    for section, renames in RENAMED.items():
        if isinstance(out.get(section), dict):
            out[section] = {renames.get(k, k): v for k, v in out[section].items()}
    return out


def same_settings(saved: Any, config: Any, defaults: Any = None) -> bool:
    """Whether a run directory's saved settings are ``config``. A setting added to slimzip after the run
    was made is absent from ``saved``; it matches when ``config`` holds its default (``defaults``: nested
    like ``config``, default values only), so an upgrade does not orphan finished runs; a renamed one is
    read under its new name (``RENAMED``)."""
    return _same(upgrade(saved), config, defaults)


def _same(saved: Any, config: Any, defaults: Any = None) -> bool:
    if not (isinstance(saved, dict) and isinstance(config, dict)):
        return saved == config
    defaults = defaults if isinstance(defaults, dict) else {}
    if set(saved) - set(config):
        return False
    return all(_same(saved[k], v, defaults.get(k)) if k in saved else (k in defaults and defaults[k] == v)
               for k, v in config.items())
