"""Kill -9 at checkpoint-file renames of a training run, resume with the same call: the result must be
bit-identical to an uninterrupted run, the metrics complete, and no temporary file left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

SCRIPT = """
import os, signal, sys, torch
from slimzip.trainer import TrainConfig, fit
kill_at = int(sys.argv[2])
if kill_at:  # SIGKILL instead of the kill_at-th rename: the file is never renamed into place
    real, calls = os.replace, [0]
    def replace(src, dst):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst)
    os.replace = replace
g = torch.Generator().manual_seed(1)
x = torch.randn(512, 20, generator=g)
y = (x[:, 0] + x[:, 1] > 0).long()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
fit(model, (x, y), (x[:128], y[:128]), TrainConfig(epochs=3, batch_size=64, lr=0.1, channels_last=False,
    precision="fp32", patience=2), run_dir=sys.argv[1], verbose=False)
torch.save(model.state_dict(), os.path.join(sys.argv[1], "final.pt"))
"""
RENAMES_PER_EPOCH = 3  # last.safetensors (the commit point), train_state.json, metrics.jsonl (+ best.safetensors)


def _train(run, kill_at: int = 0) -> int:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(run), str(kill_at)], capture_output=True,
                          timeout=120).returncode


def _check_resumed(tmp_path, kill_at: int, reference) -> None:
    run = tmp_path / f"kill{kill_at}"
    assert _train(run, kill_at) == -9  # killed at that rename
    assert _train(run) == 0  # the same call resumes
    want, got = torch.load(reference / "final.pt"), torch.load(run / "final.pt")
    assert all(torch.equal(want[k], got[k]) for k in want), f"weights differ after a kill at rename {kill_at}"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in ref_rows]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("chaos") / "straight"
    assert _train(run) == 0
    return run


@pytest.mark.parametrize("kill_at", [4, 5])  # epoch 2: before its commit point, and just after it
def test_a_kill_between_the_checkpoint_renames_resumes_bit_identically(tmp_path, reference, kill_at):
    _check_resumed(tmp_path, kill_at, reference)


@pytest.mark.slow
def test_a_kill_at_every_rename_of_a_three_epoch_run_resumes_bit_identically(tmp_path, reference):
    renames = 3 * RENAMES_PER_EPOCH + 3  # and a few best.safetensors writes of early stopping
    for kill_at in range(1, renames + 1):
        _check_resumed(tmp_path, kill_at, reference)
