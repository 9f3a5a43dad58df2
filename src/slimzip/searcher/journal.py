"""The search journal: one SQLite row per finished candidate, in the run directory.

A candidate is identified by its *key* (knobs, parent, and fine-tune budget), so running the same
search again replays the strategy and finds every finished candidate in the journal instead of
training it again: a killed search loses at most the candidate it was in the middle of.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..settings import same_settings
from ..errors import SlimzipError


@dataclass(frozen=True)
class Knobs:
    """What a candidate sets: channels removed (fraction of the input model's prunable channels) and
    weight sparsity (fraction of the remaining conv/linear weights set to zero)."""

    channel_ratio: float = 0.0
    sparsity: float = 0.0

    def __post_init__(self) -> None:  # round so that 0.1 + 0.2 and 0.3 are the same candidate
        object.__setattr__(self, "channel_ratio", round(self.channel_ratio, 6))
        object.__setattr__(self, "sparsity", round(self.sparsity, 6))


@dataclass(frozen=True)
class Candidate:
    """One evaluated candidate: its knobs, its lineage, what it cost and what it measured."""

    id: int
    key: str
    knobs: Knobs
    parent: int | None  # the candidate it was warm-started from (None: the input model)
    epochs: float  # fine-tune epochs spent on this candidate alone (channel, weight and centroid stages;
    # fractions: a short fine-tune)
    status: str  # 'ok' or 'failed' (training diverged, or the pipeline raised)
    val_accuracy: float | None = None
    file_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    channels_removed: int = 0  # by the channel stage, cumulative along the lineage
    wall_seconds: float = 0.0
    error: str | None = None
    strategy: str = ""
    flash_bytes: int | None = None  # the C model's, measured when a flash or RAM budget is set
    ram_bytes: int | None = None
    latency_ms: float | None = None  # the C model's on this CPU, measured when a latency budget is set

    def meets(self, threshold: float) -> bool:
        return self.status == "ok" and self.val_accuracy is not None and self.val_accuracy >= threshold - 1e-12

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(d.pop("knobs"))
        return d


_COLUMNS = ("id", "key", "strategy", "channel_ratio", "sparsity", "parent", "epochs", "status", "val_accuracy",
            "file_bytes", "params", "macs", "channels_removed", "wall_seconds", "error", "created", "flash_bytes",
            "ram_bytes", "latency_ms")
ADDED_COLUMNS = {"flash_bytes": "INTEGER", "ram_bytes": "INTEGER", "latency_ms": "REAL"}  # columns newer than a journal may have
_SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, strategy TEXT NOT NULL, channel_ratio REAL NOT NULL,
    sparsity REAL NOT NULL, parent INTEGER, epochs REAL NOT NULL, status TEXT NOT NULL, val_accuracy REAL,
    file_bytes INTEGER, params INTEGER, macs INTEGER, channels_removed INTEGER NOT NULL, wall_seconds REAL NOT NULL,
    error TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Journal:
    """Finished candidates of one search, persisted after each one (a transaction per candidate)."""

    def __init__(self, path: str | Path, config: dict, defaults: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.executescript(_SCHEMA)
            row = self.db.execute("SELECT value FROM meta WHERE name = 'config'").fetchone()
            have = {r[1] for r in self.db.execute("PRAGMA table_info(candidates)")}
            with self.db:
                for column, kind in ADDED_COLUMNS.items():
                    if column not in have:
                        self.db.execute(f"ALTER TABLE candidates ADD COLUMN {column} {kind}")
        except sqlite3.DatabaseError as e:
            raise SlimzipError(f"{self.path}: not a readable search journal ({e})") from None
        text = json.dumps(config, sort_keys=True)
        if row is None:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('config', ?)", (text,))
        elif not same_settings(json.loads(row[0]), config, defaults, resuming=True):
            raise SlimzipError(f"{self.path} belongs to a search with other settings; use a new run directory")
        elif row[0] != text:  # the same search, its ladders with other settings (``FREE_ON_RESUME``): as now
            with self.db:
                self.db.execute("UPDATE meta SET value = ? WHERE name = 'config'", (text,))

    def get(self, key: str) -> Candidate | None:
        row = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM candidates WHERE key = ?", (key,)).fetchone()
        return _candidate(row) if row else None

    def next_id(self) -> int:
        return (self.db.execute("SELECT MAX(id) FROM candidates").fetchone()[0] or 0) + 1

    def add(self, c: Candidate) -> Candidate:
        values = (c.id, c.key, c.strategy, c.knobs.channel_ratio, c.knobs.sparsity, c.parent, c.epochs, c.status,
                  c.val_accuracy, c.file_bytes, c.params, c.macs, c.channels_removed, c.wall_seconds, c.error,
                  time.time(), c.flash_bytes, c.ram_bytes, c.latency_ms)
        with self.db:
            self.db.execute(f"INSERT INTO candidates ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                            values)
        return c

    def all(self) -> list[Candidate]:
        rows = self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM candidates ORDER BY id").fetchall()
        return [_candidate(r) for r in rows]

    def close(self) -> None:
        self.db.close()


def _candidate(row: tuple) -> Candidate:
    d = dict(zip(_COLUMNS, row))
    d.pop("created")
    knobs = Knobs(d.pop("channel_ratio"), d.pop("sparsity"))
    return Candidate(knobs=knobs, **d)
