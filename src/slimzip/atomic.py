"""Atomic file writes: a temporary file beside the target, renamed into place, so a killed process never
leaves a half-written file; the next run removes the temporaries a kill left behind. Files are created
with the permissions the user's umask gives (not mkstemp's 0600). Kept apart so that light modules (the
.slz reader) need nothing else."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

# ".NAME." + mkstemp's 8 random characters; ".tmp" + 6: the temporary safetensors' own writer makes
# beside its target (Rust's tempfile crate) before it renames it to ours
TEMPORARY = re.compile(r"^(\..+\.[A-Za-z0-9_]{8}|\.tmp[A-Za-z0-9]{6})$")


def temporary_beside(path: Path) -> str:
    """A new, empty temporary file in ``path``'s folder (created), named after ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    return tmp


def commit(tmp: str, path: Path) -> None:
    """Give the finished temporary file the umask's permissions and rename it into place."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    tmp = temporary_beside(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        commit(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def remove_temporaries(directory: Path) -> int:
    """Delete the temporary files killed atomic writes left anywhere under ``directory``; returns how many."""
    gone = 0
    if directory.is_dir():
        for p in directory.rglob(".*"):
            if p.is_file() and TEMPORARY.match(p.name):
                p.unlink(missing_ok=True)
                gone += 1
    return gone
