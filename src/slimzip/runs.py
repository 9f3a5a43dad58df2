"""Run directories: a run directory holds one run's settings (``config.json``); the same command resumes
it, and a different one is refused."""

from __future__ import annotations

import json
from pathlib import Path

from .atomic import remove_temporaries
from .checkpoint import atomic_write_json, read_meta
from .settings import same_settings
from .errors import SlimzipError
from .trainer import TrainConfig

# A training setting missing from a saved run's "train" config is read back as TrainConfig's default
# (TrainConfig.from_json), so that default is what the run was made with.
TRAIN_DEFAULTS = json.loads(json.dumps(TrainConfig().to_json()))


def _with_train_added(defaults: dict | None) -> dict:
    return {**(defaults or {}), "train": {**TRAIN_DEFAULTS, **(defaults or {}).get("train", {})}}


def finished(run: Path, config: dict, defaults: dict | None = None) -> dict | None:
    """The summary of a finished run made with this config, if there is one."""
    if (run / "summary.json").is_file() and (run / "model.json").is_file():
        if same_settings(read_meta(run).get("config"), config, _with_train_added(defaults)):
            return json.loads((run / "summary.json").read_text())
    return None


def claim(run: Path, config: dict, defaults: dict | None = None) -> None:
    """Write config.json, refusing a directory that holds a different run (see ``same_settings``)."""
    if run.exists() and not run.is_dir():
        raise SlimzipError(f"{run} is a file; --out must name a directory")
    path = run / "config.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError:
            saved = None
        if not same_settings(saved, config, _with_train_added(defaults)):
            raise SlimzipError(f"{run} holds a different run (config.json differs); use a new --out directory")
    elif run.exists() and any(run.iterdir()):
        raise SlimzipError(f"{run} exists and is not a slimzip run directory; use a new --out directory")
    remove_temporaries(run)  # what killed atomic writes of an earlier try left behind
    atomic_write_json(path, config)


