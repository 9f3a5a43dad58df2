"""What a benchmark says of the machine that ran it (timings depend on the CPU kind and native bf16)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name and whether it has native bf16."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    return f"{name} ({'avx512_bf16' if 'avx512_bf16' in flags else 'amx_bf16' if 'amx_bf16' in flags else 'no native bf16'})"
