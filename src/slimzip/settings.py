"""Run settings, without any heavy import: matching a run directory's saved settings against a new
command's, and the value sets that several configs share."""

from __future__ import annotations

from typing import Any

CHANNEL_SCOPES = ("auto", "global", "layer")  # channel removal: one global threshold, per layer, or by BatchNorm


def same_settings(saved: Any, config: Any, defaults: Any = None) -> bool:
    """Whether a run directory's saved settings are ``config``. A setting added to slimzip after the run
    was made is absent from ``saved``; it matches when ``config`` holds its default (``defaults``: nested
    like ``config``, default values only), so an upgrade does not orphan finished runs."""
    if not (isinstance(saved, dict) and isinstance(config, dict)):
        return saved == config
    defaults = defaults if isinstance(defaults, dict) else {}
    if set(saved) - set(config):
        return False
    return all(same_settings(saved[k], v, defaults.get(k)) if k in saved else (k in defaults and defaults[k] == v)
               for k, v in config.items())
