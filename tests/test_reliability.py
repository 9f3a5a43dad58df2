"""The last crash paths: checksum-valid files whose manifest or graph is wrong, a model that diverged, a
run directory that never started or that another process holds, and Ctrl-C while the CLI loads. Each is
one line and exit code 2 (130 for Ctrl-C), and nothing is left half-done."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slimzip.cli import main
from slimzip.container import encode_container, read_container
from slimzip.errors import SlimzipError
from slimzip.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
VALID = ROOT / "tests" / "corpus" / "valid"


def _rewrite(source: str, tmp_path: Path, name: str, change) -> Path:
    container = read_container(VALID / source)
    manifest = copy.deepcopy(container.manifest)
    change(manifest)
    path = tmp_path / f"{name}.slz"
    path.write_bytes(encode_container(manifest, container.sections, version=container.version))
    return path


def _cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _graph(change):
    def edit(manifest):
        change(manifest["model"]["graph"])
    return edit


MANIFESTS = {  # checksum-valid files whose manifest a reader cannot act on
    "v4 without architecture": ("v4-lenet-5-bn-plan-auto.slz", lambda m: m.update(model={"kwargs": {}}), "version-4"),
    "no model": ("v4-lenet-5-bn-plan-auto.slz", lambda m: m.pop("model"), "model: missing"),
    "model a number": ("v4-lenet-5-bn-plan-auto.slz", lambda m: m.update(model=7), "not an object"),
    "unknown keyword": ("v4-graph-huffman.slz", _graph(lambda g: g["nodes"][1].update(kwargs={"bogus": 1})), "run"),
    "integer for a tensor": ("v4-graph-huffman.slz", _graph(lambda g: g["nodes"][2].update(args=[5])), "run"),
    "stride 0": ("v4-graph-huffman.slz", _graph(lambda g: g["layers"]["0"]["args"].update(stride={"t": [0, 0]})),
                 "graph"),
    "kernel larger than the input": ("v4-graph-huffman.slz",
                                     _graph(lambda g: g["layers"]["0"]["args"].update(kernel_size={"t": [9, 9]})),
                                     "graph"),
    "padding of 2^24": ("v4-graph-huffman.slz", _graph(lambda g: g["layers"]["0"]["args"].update(padding=1 << 24)),
                        "makes a tensor of"),
}


def _plan_alone(change):
    """A version-3 file storing no architecture (a plan and input shape, as an untraceable model's), its
    tensor table then changed: ``inspect`` shows such a file by the table's own names and shapes."""
    def edit(manifest):
        manifest["model"] = {"plan": {}, "input_shape": [1, 8, 8]}
        change(manifest["tensors"])
    return edit


TABLES = {  # what the fuzzer found inspect crashing on: tables of files without a model, checked as a reader does
    "a shape that is not a list": (lambda t: t[0].update(shape="x"), "malformed shape"),
    "no shape": (lambda t: t[1].pop("shape"), "malformed shape"),
    "no encoding": (lambda t: t[0].pop("encoding"), "unknown encoding"),
    "a section given as an object": (lambda t: t[0].update(codebook={"a": 1}), "exactly once"),
    "a section used twice": (lambda t: t[0].update(index=t[0]["codes"]), "exactly once"),
    "a huge shape": (lambda t: t[0].update(shape=[1 << 24, 1 << 24]), "claims more than"),
}


@pytest.mark.parametrize("case", list(TABLES))
def test_inspect_of_a_file_without_its_model_checks_the_table_as_a_reader_does(capsys, tmp_path, case):
    change, message = TABLES[case]
    path = _rewrite("graph-rans.slz", tmp_path, case.replace(" ", "-"), _plan_alone(change))
    code, err = _cli(capsys, "inspect", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    ok = _rewrite("graph-rans.slz", tmp_path, "ok", _plan_alone(lambda t: None))
    assert _cli(capsys, "inspect", str(ok))[0] == 0


@pytest.mark.parametrize("case", list(MANIFESTS))
@pytest.mark.parametrize("command", ["inspect", "eval", "export"])
def test_files_that_cannot_run_are_refused_in_one_line(capsys, tmp_path, case, command):
    source, change, message = MANIFESTS[case]
    path = _rewrite(source, tmp_path, case.replace(" ", "-"), change)
    argv = {"inspect": ["inspect", str(path)], "eval": ["eval", str(path), "--dataset", "mnist"],
            "export": ["export", str(path), "--onnx", str(tmp_path / "m.onnx")]}[command]
    code, err = _cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("config", [[1, 2], "text", 3])
def test_an_informative_config_that_is_not_an_object_is_ignored(capsys, tmp_path, config, data_dir):
    path = _rewrite("v4-lenet-5-bn-plan-auto.slz", tmp_path, "config", lambda m: m.update(config=config))
    for argv in (["eval", str(path), "--dataset", "mnist", "--json"], ["inspect", str(path)]):
        code, err = _cli(capsys, *argv)
        assert code == 0, err


def test_a_diverged_checkpoint_is_refused_and_nothing_is_written(capsys, tmp_path, data_dir):
    run = tmp_path / "ckpt"
    assert main(["train", "--model", "lenet-300-100", "--epochs", "1", "--subset", "500", "--out", str(run),
                 "--quiet"]) == 0
    from safetensors.torch import load_file, save_file

    weights = run / "model.safetensors"
    state = load_file(weights)
    bias = next(k for k in state if k.endswith("bias"))
    state[bias][0] = float("nan")
    save_file(state, weights)
    for argv in (["compress", str(run), "--sparsity", "0.5", "--out", str(tmp_path / "a.slz")],
                 ["compress", str(run), "--max-drop", "5", "--search", "frontier", "--out", str(tmp_path / "b.slz")]):
        code, err = _cli(capsys, *argv, "--quiet")
        assert code == 2 and "non-finite" in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("*.slz"))


def test_a_run_directory_holding_only_temporaries_is_a_run_that_never_started(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.json.abcd1234").write_text("{")  # a kill before the first rename
    RunDir(run, {"a": 1}).claim().release()
    assert json.loads((run / "config.json").read_text()) == {"a": 1}
    assert not (run / ".config.json.abcd1234").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SlimzipError, match="not a slimzip run directory"):
        RunDir(other, {"a": 1}).claim()


def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from slimzip.runs import RunDir; "
                               f"RunDir({str(run)!r}, {{'a': 1}}).claim(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SlimzipError, match=f"in use by process {holder.pid}"):
            RunDir(run, {"a": 1}).claim()
    finally:
        holder.kill()
        holder.wait()
    RunDir(run, {"a": 1}).claim().release()  # free once the holder is gone


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_ctrl_c_while_the_cli_loads_is_one_line_and_exit_130(delay):
    proc = subprocess.Popen([sys.executable, "-m", "slimzip", "models"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    if proc.returncode == 0:
        pytest.skip("the command finished before the signal")
    assert proc.returncode in (130, -signal.SIGINT), err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 1, err


def test_a_constant_is_accepted_iff_it_rounds_to_a_finite_float32():
    from slimzip.codec import _finite

    assert _finite(3.4028235e38) and _finite(-3.4028235e38) and _finite(0) and _finite(-1.5)
    assert not _finite(3.4028236e38) and not _finite(1e308) and not _finite(float("nan"))
