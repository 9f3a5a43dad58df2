"""The registry's catalog: every registered model's dataset, params, MACs and paper, stored as JSON beside
this module so that ``slimzip models`` answers without importing PyTorch. ``build()`` measures the real
models (tests compare it with the stored file, so the catalog cannot go stale).

Usage: python -m slimzip.catalog   (rewrites catalog.json)
"""

from __future__ import annotations

import json
from pathlib import Path

PATH = Path(__file__).with_name("catalog.json")


def load() -> list[dict]:
    """The stored catalog rows, in registry order (torch-free)."""
    return json.loads(PATH.read_text())["models"]


def build() -> list[dict]:
    """Measure every registered model (shapes only) into catalog rows."""
    from .api.training import list_models

    return list_models()


def main() -> None:
    PATH.write_text(json.dumps({"models": build()}, indent=1) + "\n")
    print(f"wrote {PATH}")


if __name__ == "__main__":
    main()
