"""The command-line contract: --json on stdout, exit 2 with one line for user mistakes, resumable runs."""

import json
import shutil
from pathlib import Path
import subprocess
import sys

import pytest

from slimzip.cli import main


def run(capsys, *argv):
    """The command's exit code, stdout and stderr (argparse's own errors exit through SystemExit)."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def lenet5bn_run(tmp_path_factory, data_dir):
    """One one-epoch LeNet-5-BN checkpoint on 2,000 images, shared (read-only) by the commands that start
    from one (they write elsewhere, and one test checks the input is never touched)."""
    path = tmp_path_factory.mktemp("l5bn") / "run"
    assert main(["train", "--model", "lenet-5-bn", "--epochs", "1", "--subset", "2000", "--out", str(path),
                 "--quiet"]) == 0
    return path


def _tiny_checkpoint(capsys, path, model="lenet-300-100", subset="3000"):
    """A one-epoch checkpoint on a subset, for the commands that start from one."""
    assert main(["train", "--model", model, "--epochs", "1", "--subset", subset, "--out", str(path), "--quiet"]) == 0
    capsys.readouterr()
    return path


def test_models_json_lists_the_registry(capsys):
    code, out, _ = run(capsys, "models", "--json")
    names = {m["name"]: m for m in json.loads(out)["models"]}
    assert code == 0 and names["lenet-5"]["params"] == 431080 and names["vgg19"]["macs"] > 3.9e8


def test_models_catalog_is_what_the_registry_measures():
    """`slimzip models` reads a stored catalog (no PyTorch import); it must equal the real models' counts
    (rebuild it with `python -m slimzip.catalog` after changing the registry)."""
    from slimzip import catalog

    assert catalog.load() == catalog.build()


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "vgg99", "--out", "X"], "unknown model 'vgg99'"),
    (["train", "--model", "lenet-5", "--dataset", "imagenet", "--out", "X"], "unknown dataset 'imagenet'"),
    (["train", "--model", "lenet-5", "--dataset", "cifar10", "--out", "X"], "takes mnist inputs"),
    (["train", "--model", "lenet-5", "--epochs", "0", "--out", "X"], "--epochs: must be at least 1"),
    (["train", "--model", "lenet-5", "--lr", "fast", "--out", "X"], "--lr: not a number"),
    (["train", "--model", "lenet-5", "--lr", "nan", "--out", "X"], "not a finite number"),
    (["train", "--model", "lenet-5", "--momentum", "1.5", "--out", "X"], "momentum must be in"),
    (["train", "--model", "lenet-5", "--schedule", "linear", "--out", "X"], "unknown schedule"),
    (["train", "--model", "lenet-5", "--device", "tpu", "--out", "X"], "device"),
    (["eval", "does/not/exist"], "no such file"),
    (["frobnicate"], "invalid choice"),
])
def test_user_mistakes_exit_2_with_one_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "X").exists()


def test_corrupt_data_file_exits_2(capsys, data_dir, tmp_path):
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    code, _, err = run(capsys, "train", "--model", "lenet-300-100", "--data-dir", str(tmp_path), "--out",
                       str(tmp_path / "run"))
    assert code == 2 and "corrupt" in err and "md5" in err


def test_train_eval_and_rerun(capsys, data_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", "lenet-300-100", "--epochs", "1", "--subset", "3000", "--out", str(out),
            "--json"]
    code, stdout, _ = run(capsys, *argv)
    summary = json.loads(stdout)
    assert code == 0 and summary["epochs_run"] == 1 and summary["test_accuracy"] > 0.5  # chance is 0.1
    assert {"config.json", "metrics.jsonl", "model.safetensors", "model.json", "summary.json"} <= \
        {p.name for p in out.iterdir()}
    code, stdout, _ = run(capsys, "eval", str(out), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == summary["test_accuracy"]
    before = (out / "model.safetensors").read_bytes()
    code, stdout, err = run(capsys, *argv)  # same command again: finished, nothing retrained
    assert code == 0 and json.loads(stdout) == summary and "already finished" in err
    code, _, err = run(capsys, *[a if a != "3000" else "2000" for a in argv])  # other config, same --out
    assert code == 2 and "different run" in err
    assert (out / "model.safetensors").read_bytes() == before


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "slimzip", "train", "--model", "nope", "--out", "x"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("slimzip: error: unknown model")


def test_compress_inspect_eval_agree(capsys, data_dir, tmp_path):
    ckpt = _tiny_checkpoint(capsys, tmp_path / "run")
    slz = tmp_path / "m.slz"
    code, out, _ = run(capsys, "compress", str(ckpt), "--sparsity", "0.9", "--prune-steps", "1", "--retrain-epochs",
                       "0", "--centroid-epochs", "0", "--out", str(slz), "--json", "--quiet")
    result = json.loads(out)
    assert code == 0 and result["file_bytes"] == slz.stat().st_size
    assert result["compression_ratio"] == pytest.approx(result["dense_fp32_bytes"] / result["file_bytes"])
    assert result["sparsity"] == pytest.approx(0.9, abs=1e-3)
    code, out, _ = run(capsys, "eval", str(slz), "--json")
    assert code == 0 and json.loads(out)["accuracy"] == result["test_accuracy"]
    code, out, _ = run(capsys, "inspect", str(slz), "--json")
    assert code == 0 and sum(json.loads(out)["components"].values()) == slz.stat().st_size
    slz.write_bytes(slz.read_bytes()[:-10])
    code, _, err = run(capsys, "eval", str(slz))
    assert code == 2 and "checksum" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--sparsity", "1.0"], "sparsity must be in"),
    (["--coder", "zip"], "unknown coder"),
    (["--bits-fc", "0"], "bits fc must be in"),
])
def test_compress_rejects_bad_knobs(capsys, tmp_path, argv, message):
    code, _, err = run(capsys, "compress", str(tmp_path), "--out", str(tmp_path / "x.slz"), *argv)
    assert code == 2 and message in err


def test_prune_channels_narrows_saves_and_never_touches_the_input(capsys, lenet5bn_run, tmp_path):
    ckpt = lenet5bn_run
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    out = tmp_path / "narrow"
    code, stdout, _ = run(capsys, "prune-channels", str(ckpt), "--method", "slimming", "--ratio", "0.5",
                          "--out", str(out), "--json", "--quiet")
    r = json.loads(stdout)
    assert code == 0 and r["after"]["cost"]["params"] < r["before"]["cost"]["params"]
    assert sum(r["after"]["widths"].values()) < sum(r["before"]["widths"].values())
    code, stdout, _ = run(capsys, "eval", str(out), "--json")  # rebuilt from registry name + plan
    assert code == 0 and json.loads(stdout)["accuracy"] == r["after"]["test_accuracy"]
    slz = tmp_path / "n.slz"  # a narrowed model compresses and decodes too
    code, stdout, _ = run(capsys, "compress", str(out), "--prune-steps", "1", "--retrain-epochs", "0",
                          "--centroid-epochs", "0", "--out", str(slz), "--json", "--quiet")
    compressed = json.loads(stdout)  # dead units removed on top of the channel plan: never more params
    assert code == 0 and compressed["params"] <= r["after"]["cost"]["params"]
    code, stdout, _ = run(capsys, "eval", str(slz), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == compressed["test_accuracy"]
    for argv, message in ((["--ratio", "1.0"], "channel ratio"), (["--ratio", "0.5", "--method", "magic"], "method"),
                          (["--ratio", "0.5", "--out", str(ckpt)], "never modified"),
                          (["--ratio", "0.5", "--teacher", str(ckpt)], "--distill")):
        argv = argv if "--out" in argv else argv + ["--out", str(tmp_path / "x")]
        code, _, err = run(capsys, "prune-channels", str(ckpt), *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert before == {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}


def test_prune_channels_in_passes_reaches_the_ratio_step_by_step_and_resumes(capsys, lenet5bn_run, tmp_path):
    ckpt = lenet5bn_run
    out = tmp_path / "gradual"
    argv = ["prune-channels", str(ckpt), "--ratio", "0.75", "--scope", "layer", "--passes", "3", "--finetune-epochs",
            "1", "--pass-epochs", "1", "--out", str(out), "--json", "--quiet"]
    code, stdout, _ = run(capsys, *argv)
    r = json.loads(stdout)
    before, after = r["before"]["widths"], r["after"]["widths"]
    assert code == 0 and [p["pass"] for p in r["passes"]] == [1, 2, 3]
    for layer, width in before.items():
        seq = [width] + [p["widths"][layer] for p in r["passes"]]
        assert seq == sorted(seq, reverse=True) and seq[-1] == after[layer]
        if layer != "classifier":  # the output layer is never pruned
            assert after[layer] == width - int(0.75 * width) and seq[1] < width  # the widths of one step
    code, stdout, _ = run(capsys, "eval", str(out), "--json")  # rebuilt from the composed plan
    assert code == 0 and json.loads(stdout)["accuracy"] == r["after"]["test_accuracy"]
    for name in ("summary.json", "model.json", "model.safetensors"):  # a run killed in the last fine-tune
        (out / name).unlink()
    shutil.rmtree(out / "finetune")
    code, stdout, _ = run(capsys, *argv)  # resumes from the pass-2 checkpoint: the same result
    assert code == 0 and json.loads(stdout)["after"] == r["after"]


def test_compress_with_channel_ratio_combines_both_kinds(capsys, lenet5bn_run, tmp_path):
    ckpt = lenet5bn_run
    slz = tmp_path / "c.slz"
    code, out, _ = run(capsys, "compress", str(ckpt), "--channel-ratio", "0.5", "--sparsity", "0.8", "--prune-steps",
                       "1", "--retrain-epochs", "0", "--centroid-epochs", "0", "--out", str(slz), "--json", "--quiet")
    r = json.loads(out)
    assert code == 0 and r["params"] < 0.6 * 432220 and r["macs"] < r["dense_macs"]
    code, out, _ = run(capsys, "eval", str(slz), "--json")
    assert code == 0 and json.loads(out)["accuracy"] == r["test_accuracy"]
    # inspect: one row per layer in graph order, widths before -> after, the bytes of every layer
    code, out, _ = run(capsys, "inspect", str(slz), "--json")
    info = json.loads(out)
    layers = {x["layer"]: x for x in info["layers"]}
    assert code == 0 and [x["layer"] for x in info["layers"]][:2] == ["features.0", "features.1"]
    assert any(x["width_before"] > x["width"] for x in info["layers"] if x["kind"] == "Conv2d")
    assert layers["features.0"]["kept"] < layers["features.0"]["weights"]
    parts = info["components"]
    assert sum(x["bytes"] for x in info["layers"]) == \
        sum(parts.values()) - parts["header"] - parts["manifest"] - parts.get("stream", 0)  # the joint stream's own
    code, out, _ = run(capsys, "inspect", str(slz))
    assert code == 0 and " -> " in out and "layer" in out.splitlines()[1]


def test_a_file_remembers_the_normalisation_its_model_was_trained_with(capsys, data_dir, tmp_path):
    """`eval` of a .slz normalises inputs as the checkpoint's training did (pixels in [0, 1] here)."""
    ckpt = tmp_path / "run"
    assert main(["train", "--model", "lenet-300-100", "--epochs", "1", "--subset", "2000", "--normalize", "unit",
                 "--out", str(ckpt), "--quiet"]) == 0
    capsys.readouterr()
    slz = tmp_path / "u.slz"
    code, out, _ = run(capsys, "compress", str(ckpt), "--sparsity", "0.5", "--prune-steps", "1", "--retrain-epochs",
                       "0", "--centroid-epochs", "0", "--out", str(slz), "--json", "--quiet")
    assert code == 0
    code, stdout, _ = run(capsys, "eval", str(slz), "--json")
    assert code == 0 and json.loads(stdout)["accuracy"] == json.loads(out)["test_accuracy"]


def _snapshot_tree(root):
    return {p.relative_to(root): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("setup, argv, message", [
    (None, ["train", "--model", "lenet-300-100", "--epochs", "1", "--subset", "512", "--lr", "1e30", "--out", "R"],
     "diverged"),
    ("file:R", ["train", "--model", "lenet-300-100", "--out", "R"], "is a file"),
    ("file:D", ["train", "--model", "lenet-300-100", "--data-dir", "D", "--out", "R"], "is a file, not a folder"),
    (None, ["train", "--model", "lenet-300-100", "--batch-size", str(10**12), "--out", "R"], "batch size must be"),
    (None, ["train", "--model", "lenet-300-100", "--subset", str(10**12), "--out", "R"], "subset must be between"),
    ("classes:R", ["eval", "R"], "num_classes must be"),
    ("emptydir:D", ["train", "--model", "lenet-300-100", "--data-dir", "D", "--out", "R"], ""),
    ("readonly:RO", ["train", "--model", "lenet-300-100", "--epochs", "1", "--subset", "256", "--out", "RO/run"],
     "permission denied"),
])
def test_more_user_mistakes_are_one_line_and_modify_nothing(capsys, data_dir, tmp_path, monkeypatch, setup, argv,
                                                            message):
    """Issue 15's list: diverging training, --out a file, --data-dir a file or an empty folder (no download
    here: it fails, and leaves no mnist/ behind), absurd batch sizes and subsets, a checkpoint asking for
    10^12 classes, an output folder that cannot be written."""
    import os

    monkeypatch.chdir(tmp_path)
    kind, _, name = (setup or "none:").partition(":")
    if kind == "file":
        (tmp_path / name).write_text("not a directory")
    elif kind == "classes":
        run_dir = _tiny_checkpoint(capsys, tmp_path / name)
        meta = json.loads((run_dir / "model.json").read_text())
        meta["model"]["kwargs"] = {"num_classes": 10**12}
        (run_dir / "model.json").write_text(json.dumps(meta))
    elif kind == "emptydir":
        (tmp_path / name).mkdir()
        monkeypatch.setattr("slimzip.data.sources._fetch", lambda url, dest: (_ for _ in ()).throw(OSError("offline")))
    elif kind == "readonly":
        if os.geteuid() == 0:
            pytest.skip("root writes through read-only permissions")
        (tmp_path / name).mkdir(mode=0o500)
    before = _snapshot_tree(tmp_path)
    code, out, err = run(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("slimzip: error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert _snapshot_tree(tmp_path) == before or kind == "none" and not (tmp_path / "R" / "model.json").exists()


def test_errors_of_the_machine_are_named_in_one_line():
    import errno

    from slimzip.cli import _environment_error

    assert _environment_error(OSError(errno.EROFS, "Read-only file system", "out/x")) == "out/x: read-only file system"
    assert _environment_error(OSError(errno.ENOSPC, "No space left on device", "f")) == "f: disk full"
    assert _environment_error(OSError(errno.EIO, "No space left on device")).startswith("disk full")
    assert _environment_error(OSError(errno.ECONNRESET, "reset")) is None  # not a user's problem: a traceback


CORPUS_FILE = Path(__file__).resolve().parent / "corpus" / "valid" / "graph-rans.slz"


@pytest.mark.parametrize("argv, message", [
    # train: every knob range-checked before anything is written
    (["train", "--model", "lenet-5", "--label-smoothing", "1.0", "--out", "R"], "label smoothing"),
    (["train", "--model", "lenet-5", "--bn-l1", "5", "--out", "R"], "BN L1 lambda"),
    (["train", "--model", "lenet-5", "--milestones", "0.5,x", "--out", "R"], "not a number"),
    (["train", "--model", "lenet-5", "--precision", "fp8", "--out", "R"], "precision"),
    (["train", "--model", "lenet-5", "--subset", "0", "--out", "R"], "subset"),
    (["train", "--model", "lenet-5", "--batch-size", "0", "--out", "R"], "at least 1"),
    (["train", "--model", "nothere.py:f", "--dataset", "mnist", "--out", "R"], "nothere.py"),
    # commands that read a checkpoint (CKPT) or a .slz file (SLZ); none may change them
    (["prune-channels", "CKPT", "--ratio", "1.5", "--out", "R"], "channel ratio must be in"),
    (["prune-channels", "CKPT", "--ratio", "0.5", "--method", "magic", "--out", "R"], "unknown method"),
    (["prune-channels", "CKPT", "--ratio", "0.5", "--out", "CKPT"], "never modified"),
    (["prune-channels", "CKPT", "--ratio", "0.5", "--teacher", "CKPT", "--out", "R"], "--distill"),
    (["prune-channels", "nothere", "--ratio", "0.5", "--out", "R"], "nothere"),
    (["compress", "CKPT", "--out", "R.slz", "--max-drop", "1", "--search", "anneal"], "invalid choice: 'anneal'"),
    (["compress", "CKPT", "--out", "R.slz", "--target-accuracy", "1.5", "--search", "grid"], "target accuracy"),
    (["compress", "CKPT", "--out", "R.slz", "--max-drop", "1", "--target-accuracy", "0.9", "--search", "grid"],
     "exactly one"),
    (["compress", "CKPT", "--out", "R.slz", "--max-drop", "1", "--step", "0", "--search", "grid"], "step must be"),
    (["compress", "CKPT", "--out", "R.slz", "--max-drop", "1000", "--search", "grid"], "max drop"),
    (["compress", "CKPT", "--out", "R.slz", "--prune-steps", "0"], "--prune-steps: must be at least 1"),
    (["compare-search", "CKPT", "--out", "R", "--max-drop", "1", "--strategies", "heuristic,anneal"],
     "unknown search strategy"),
    (["compare-search", "CKPT", "--out", "R", "--max-drop", "1", "--strategies", "grid", "--budget-ratio", "0.5"],
     "include heuristic"),
    (["eval", "SLZ", "--dataset", "cifar10"], "cifar10"),
    (["eval", "CKPT", "--dataset", "imagenet"], "unknown dataset"),
    (["inspect", "CKPT"], "CKPT"),
    (["export", "nothere.slz", "--onnx", "R.onnx"], "no such file"),
    (["report", "nothere"], "not a run directory"),
    (["dropnet", "--model", "vgg99", "--out", "R"], "unknown model"),
    (["dropnet", "--model", "dropnet-a", "--fraction", "1.5", "--out", "R"], "fraction"),
    (["dropnet", "--model", "dropnet-a", "--metric", "best", "--out", "R"], "metric"),
])
def test_bad_input_matrix_one_line_exit_2_inputs_unchanged(capsys, lenet5bn_run, tmp_path, monkeypatch, argv,
                                                          message):
    """Across commands: a one-line error naming the problem, exit code 2, the checkpoint and the .slz file
    given as inputs byte-identical afterwards, nothing written."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(CORPUS_FILE, tmp_path / "in.slz")
    names = {"CKPT": str(lenet5bn_run), "SLZ": str(tmp_path / "in.slz")}
    argv = [names.get(a, a) for a in argv]
    message = names.get(message, message)
    before, ckpt_before = _snapshot_tree(tmp_path), _snapshot_tree(lenet5bn_run)
    code, out, err = run(capsys, *argv)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert _snapshot_tree(tmp_path) == before and _snapshot_tree(lenet5bn_run) == ckpt_before


def test_help_groups_options_and_states_the_defaults_a_run_uses(capsys):
    """``compress --help`` groups its options by concern; ``train --help`` gives each recipe's defaults
    (image folders train with the other-data recipe, not TrainConfig's bare defaults)."""
    from slimzip.config import DEFAULT_RECIPE, RECIPES

    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for group in ("fixed knobs (no target):", "the file's coding:", "search: recovery", "search: the walk:"):
        assert group in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (f"--epochs EPOCHS passes over the training split (default {RECIPES['mnist'].epochs} (mnist), "
            f"{RECIPES['cifar10'].epochs} (cifar10/100), {DEFAULT_RECIPE.epochs} (other data))") in text
    assert f"{DEFAULT_RECIPE.lr:g} (other data)" in text
