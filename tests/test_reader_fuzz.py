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
    outcome = fuzz_slz.read_like_the_cli(path, export=False)
    assert outcome["inspect"] == "refused" and outcome["load"] == "refused", outcome
    run = subprocess.run([sys.executable, "-m", "slimzip", "inspect", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_the_seed_files_read_and_a_short_fuzz_run_finds_no_crash(tmp_path):
    """Each entry point (inspect, load, eval, export) on the valid seed files, then 300 mutated files
    (a share of them by the graph-aware mutator): every outcome is ok or slimzip's own refusal."""
    seeds, path = fuzz_slz.seed_files(), tmp_path / "input.slz"
    for blob in seeds:
        path.write_bytes(blob)
        outcome = fuzz_slz.read_like_the_cli(path, export=True)
        outcome.pop("export_seconds")
        assert set(outcome.values()) == {"ok"} and len(outcome) == 4  # valid files decode, run and export
    rng = random.Random(0)
    for _ in range(300):
        seed = rng.choice(seeds)
        path.write_bytes((fuzz_slz.mutate_graph(seed, rng) if rng.random() < 0.3 else None) or fuzz_slz.mutate(seed, rng))
        outcome = fuzz_slz.read_like_the_cli(path, export=False)
        assert set(outcome.values()) <= {"ok", "refused"}, outcome
