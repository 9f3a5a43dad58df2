"""Run directories: every command's run directory is a ``RunDir``. ``config.json`` holds the run's
settings; the same command resumes the run (or gets a finished run's summary back), a different one is
refused; ``summary.json`` (one of ``summaries``' types) marks it finished."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .atomic import TEMPORARY, remove_temporaries
from .checkpoint import atomic_write_json, read_meta
from .errors import SlimzipError
from .settings import same_settings
from .trainer import TrainConfig

# A training setting missing from a saved run's "train" config is read back as TrainConfig's default
# (TrainConfig.from_json), so that default is what the run was made with.
TRAIN_DEFAULTS = json.loads(json.dumps(TrainConfig().to_json()))


@dataclass
class RunDir:
    """One run's directory. ``added_later``: settings added to slimzip after runs were made, nested like
    ``config``, at the values such runs implicitly used (training settings always are: their defaults);
    settings renamed since are read under their new names (``settings.RENAMED``)."""

    path: Path
    config: dict
    added_later: dict | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.config = json.loads(json.dumps(self.config))  # as it reads back from disk (tuples become lists)

    def _matches(self, saved: Any, resuming: bool = False) -> bool:
        extra = self.added_later or {}
        return same_settings(saved, self.config, {**extra, "train": {**TRAIN_DEFAULTS, **extra.get("train", {})}},
                             resuming)

    def finished(self) -> dict | None:
        """The summary of this run if it finished (summary and checkpoint written) with these settings."""
        run = self.path
        if (run / "summary.json").is_file() and (run / "model.json").is_file():
            if self._matches(read_meta(run).get("config")):
                return json.loads((run / "summary.json").read_text())
        return None

    def claim(self) -> "RunDir":
        """Write config.json, refusing a directory that holds a different run; remove what killed atomic
        writes of an earlier try left behind."""
        run, path = self.path, self.path / "config.json"
        if run.exists() and not run.is_dir():
            raise SlimzipError(f"{run} is a file; --out must name a directory")
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError:
                saved = None
            if not self._matches(saved, resuming=True):
                raise SlimzipError(f"{run} holds a different run (config.json differs); use a new --out directory")
        elif run.exists() and not _never_started(run):
            raise SlimzipError(f"{run} exists and is not a slimzip run directory; use a new --out directory")
        lock(run)
        remove_temporaries(run)
        atomic_write_json(path, self.config)
        return self

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        """Let another process use this run directory (``claim`` took it)."""
        unlock(self.path)

    def finish(self, summary: Mapping[str, Any]) -> Any:
        """Write ``summary.json`` (the run's result, and the mark that it finished); returns the summary."""
        atomic_write_json(self.path / "summary.json", dict(summary))
        return summary


def _never_started(run: Path) -> bool:
    """An empty directory, or one holding only what a run killed before its first file was in place left
    (atomic writes' temporaries, the lock file): a run that never started."""
    return all(p.is_file() and (TEMPORARY.match(p.name) or p.name == LOCK) for p in run.iterdir())


LOCK = ".lock"
_held: dict[Path, Any] = {}  # run directory -> its open lock file, while this process uses it


def lock(run: Path) -> None:
    """Take ``run`` for this process (an advisory lock on ``run/.lock``, released when the process ends or
    by ``unlock``); a directory another process holds is refused in one line naming that process."""
    run = run.resolve() if run.exists() else run.absolute()
    if run in _held:
        return
    run.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return
    f = open(run / LOCK, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "another process"
        f.close()
        raise SlimzipError(f"{run} is in use by {owner}; wait for it to finish, or use another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"process {os.getpid()}\n")
    f.flush()
    _held[run] = f


def unlock(run: Path) -> None:
    run = run.resolve() if run.exists() else run.absolute()
    if (f := _held.pop(run, None)) is not None:
        f.close()
