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


# Settings a resumed run may change, per section: they choose only how far a search goes on, never what a
# journaled candidate was: the ladders' settings pick which candidates its last stage tries (each one's key
# names its codebook bits and share rate); more prune / recover rounds replay the rounds already run from
# the journal (a walk is a function of its candidates' results) and walk on from the last recovered model.
FREE_ON_RESUME: dict[str, tuple[str, ...]] = {"search": ("min_bits", "bits_ladder", "max_share_rate",
                                                         "recover_rounds", "min_raw_bits")}


def same_settings(saved: Any, config: Any, defaults: Any = None, resuming: bool = False) -> bool:
    """Whether a run directory's saved settings are ``config``. A setting added to slimzip after the run
    was made is absent from ``saved``; it matches when ``config`` holds its default (``defaults``: nested
    like ``config``, default values only), so an upgrade does not orphan finished runs; a renamed one is
    read under its new name (``RENAMED``). ``resuming``: the settings in ``FREE_ON_RESUME`` may differ."""
    saved = upgrade(saved)
    if resuming:
        saved, config = _without_free(saved), _without_free(config)
    return _same(saved, config, defaults)


def _without_free(config: Any) -> Any:
    if not isinstance(config, dict):
        return config
    return {k: {n: v for n, v in section.items() if n not in FREE_ON_RESUME[k]}
            if k in FREE_ON_RESUME and isinstance(section, dict) else section for k, section in config.items()}


def _same(saved: Any, config: Any, defaults: Any = None) -> bool:
    if not (isinstance(saved, dict) and isinstance(config, dict)):
        return saved == config
    defaults = defaults if isinstance(defaults, dict) else {}
    if set(saved) - set(config):
        return False
    return all(_same(saved[k], v, defaults.get(k)) if k in saved else (k in defaults and defaults[k] == v)
               for k, v in config.items())
