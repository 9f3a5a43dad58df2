"""The console entry point (``slimzip`` and ``python -m slimzip``): loads the command line's modules and
runs it, so that a Ctrl-C while they load (seconds on a busy machine: torch, Torch-Pruning) ends the
same way as one later, in one line and exit code 130, never a traceback."""

from __future__ import annotations

import sys

from .errors import INTERRUPTED


def run() -> int:
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("slimzip: interrupted", file=sys.stderr)
        return INTERRUPTED
    return main()
