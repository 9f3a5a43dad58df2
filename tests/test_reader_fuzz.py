"""The .slz reader against hostile files: every corpus file that once crashed it is now refused with
slimzip's own error (and `slimzip inspect` says so in one line, exit 2), and a short structure-aware
fuzz run (benchmarks/fuzz_slz.py, whose long run is a benchmark) finds no crash."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from slimzip.errors import SlimzipError

ROOT = Path(__file__).resolve().parents[1]
INVALID = sorted((ROOT / "tests" / "corpus" / "invalid").glob("*.slz"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import fuzz_slz  # noqa: E402


@pytest.mark.parametrize("path", INVALID, ids=[p.name for p in INVALID])
def test_every_file_that_once_crashed_the_reader_is_refused(path):
    with pytest.raises(SlimzipError):
        fuzz_slz.read_like_the_cli(path.read_bytes())
    run = subprocess.run([sys.executable, "-m", "slimzip", "inspect", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_the_seed_files_read_and_a_short_fuzz_run_finds_no_crash():
    seeds = fuzz_slz.seed_files()
    for blob in seeds:
        fuzz_slz.read_like_the_cli(blob)  # valid files decode
    rng = random.Random(0)
    for _ in range(300):
        try:
            fuzz_slz.read_like_the_cli(fuzz_slz.mutate(rng.choice(seeds), rng))
        except SlimzipError:
            pass
