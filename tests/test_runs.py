"""Run directories: one type for every command; renamed settings still resume; typed summaries."""

from __future__ import annotations

import json

import pytest

from slimzip.cli import build_parser
from slimzip.errors import SlimzipError
from slimzip.runs import RunDir
from slimzip.settings import same_settings, upgrade
from slimzip.summaries import SearchSummary, TrainSummary, read_summary
from slimzip.trainer import TrainConfig


def test_old_flag_names_are_aliases():
    args = build_parser().parse_args(["train", "--model", "lenet-5", "--out", "x", "--sparsity", "1e-4"])
    assert args.bn_l1 == 1e-4
    args = build_parser().parse_args(["train", "--model", "lenet-5", "--out", "x", "--bn-l1", "2e-4"])
    assert args.bn_l1 == 2e-4
    args = build_parser().parse_args(["prune-channels", "ck", "--out", "x", "--ratio", "0.5", "--sparsity", "1e-3",
                                      "--pass-sparsity", "1e-4"])
    assert (args.bn_l1, args.pass_bn_l1) == (1e-3, 1e-4)


def test_configs_saved_under_old_names_read_back():
    assert TrainConfig.from_json({"sparsity": 1e-4, "epochs": 3}) == TrainConfig(bn_l1=1e-4, epochs=3)
    saved = {"train": {"sparsity": 1e-4}, "prune": {"sparsity": 0.0, "pass_sparsity": 1e-4}, "other": {"sparsity": 1}}
    assert upgrade(saved) == {"train": {"bn_l1": 1e-4}, "prune": {"bn_l1": 0.0, "pass_bn_l1": 1e-4},
                              "other": {"sparsity": 1}}  # only the sections whose setting was renamed
    assert same_settings(saved, upgrade(saved))
    assert not same_settings(saved, {**upgrade(saved), "train": {"bn_l1": 2e-4}})


def test_run_dir_resumes_an_old_run_and_refuses_another(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    old = {"model": {"name": "lenet-5"}, "train": {**TrainConfig().to_json(), "epochs": 3}}
    old["train"]["sparsity"] = old["train"].pop("bn_l1")  # as runs made before the rename were saved
    (run / "config.json").write_text(json.dumps(old))
    new = {"model": {"name": "lenet-5"}, "train": TrainConfig(epochs=3).to_json()}
    RunDir(run, new).claim()  # the same run: resumes
    with pytest.raises(SlimzipError, match="holds a different run"):
        RunDir(run, {**new, "train": TrainConfig(epochs=4).to_json()}).claim()
    with pytest.raises(SlimzipError, match="is a file"):
        RunDir(run / "config.json", new).claim()


def test_claim_removes_what_killed_writes_left_anywhere_in_the_run(tmp_path):
    run = tmp_path / "r"
    RunDir(run, {"a": 1}).claim()
    (run / "trunks").mkdir()
    left = [run / ".last.safetensors.abcd1234", run / "trunks" / ".tmp29cai8", run / "trunks" / ".x.json.ABCDEFGH"]
    kept = [run / "trunks" / "00ee.safetensors", run / ".hidden", run / "trunks" / ".tmp29cai"]
    for p in left + kept:
        p.write_bytes(b"")
    RunDir(run, {"a": 1}).claim()
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)


def test_run_dir_finish_and_finished(tmp_path):
    run_dir = RunDir(tmp_path / "r", {"a": (1, 2)}).claim()
    assert run_dir.config == {"a": [1, 2]}  # as it reads back from disk
    assert run_dir.finished() is None  # no summary yet
    assert run_dir.finish({"x": 1}) == {"x": 1}
    assert json.loads((tmp_path / "r" / "summary.json").read_text()) == {"x": 1}


def test_read_summary_checks_the_type(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"model": "m"}))
    with pytest.raises(SlimzipError, match="not a TrainSummary .missing dataset"):
        read_summary(path, TrainSummary)
    path.write_text("[1, 2]")
    with pytest.raises(SlimzipError, match="not a SearchSummary"):
        read_summary(path, SearchSummary)
    path.write_text("{")
    with pytest.raises(SlimzipError, match="not readable JSON"):
        read_summary(path, SearchSummary)
