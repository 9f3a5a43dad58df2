"""The seams a new user trips on: coding knobs checked before any work, arguments that contradict a config,
one default strategy, what the returned object says of itself, and a Python search's summary."""

from __future__ import annotations

import json
import time

import pytest
import torch

import slimzip
from slimzip.cli import main
from slimzip.errors import SlimzipError
from slimzip.searcher import SearchConfig

from test_zoo_patterns import SHAPE, _data


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


FAST = dict(step=0.5, refine=0, short_epochs=0.0, min_bits=0, centroid_epochs=0, calibration_images=64)


@pytest.mark.parametrize("extra, message", [(["--coder", "zip"], "unknown coder"),
                                            (["--index-bits-fc", "-1"], "index bits fc"),
                                            (["--bits-conv", "17"], "bits conv")])
def test_coding_knobs_of_a_search_are_one_line_before_any_work(capsys, tmp_path, extra, message):
    capsys.readouterr()
    t0 = time.perf_counter()
    code = main(["compress", str(tmp_path / "nothing-yet"), "--max-drop", "5", "--out", str(tmp_path / "m.slz"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "m.slz").exists()


def test_each_coding_and_tuning_knob_is_declared_once_and_checked_alike():
    """Fixed-knob compression and the search share their coding and tuning knobs (one declaration, one
    check); only the weight-pruning scope is declared by each, its default differing by design."""
    from slimzip.config import CodingConfig, CompressConfig, TuneConfig

    assert set(CompressConfig.__annotations__) & set(SearchConfig.__annotations__) == {"scope"}
    for base in (CodingConfig, TuneConfig):
        assert issubclass(CompressConfig, base) and issubclass(SearchConfig, base)
    for bad in (dict(coder="zip"), dict(index_bits_fc=17), dict(raw_dtype="int4"), dict(prune_steps=0), dict(lr=0.0)):
        messages = []
        for cls in (CompressConfig, SearchConfig):
            with pytest.raises(SlimzipError) as info:
                cls(**bad).validate()
            messages.append(str(info.value))
        assert messages[0] == messages[1]


def test_an_argument_that_contradicts_the_config_is_an_error_not_dropped():
    with pytest.raises(SlimzipError, match="strategy='frontier' contradicts config.strategy='heuristic'"):
        slimzip.search(Small(), _data(32, 0), _data(16, 1), max_drop=50.0, strategy="frontier",
                       config=SearchConfig(strategy="heuristic"), verbose=False)
    assert SearchConfig().strategy == "frontier"  # the one default: slimzip.search's and compress --search's


def test_a_python_search_records_its_bits_summary_and_speaks_briefly(tmp_path):
    torch.manual_seed(0)
    result = slimzip.search(Small(), _data(128, 0), _data(64, 1), max_drop=50.0, strategy="heuristic", max_epochs=2,
                            seed=3, config=SearchConfig(**FAST), run_dir=tmp_path / "run", verbose=False)
    assert result.search["strategy"] == "heuristic" and result.search["epochs"] <= 2 + 1e-9
    assert {"bits_conv", "bits_fc"} <= set(result.knobs)
    text = repr(result)
    assert len(text) < 400 and f"{result.file_bytes:,} B" in text and "percent" in text
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["file_bytes"] == result.file_bytes and summary["knobs"] == result.knobs
    assert main(["report", str(tmp_path / "run")]) == 0


def test_the_reader_stands_alone():
    import subprocess
    import sys

    code = ("import sys; from slimzip import load; m = load('tests/corpus/valid/v4-graph-huffman.slz'); "
            "print(sorted(n for n in sys.modules if n.startswith('slimzip')), 'torch_pruning' in sys.modules, "
            "'sqlite3' in sys.modules)")
    from pathlib import Path

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    modules, pruning, sqlite = out.rsplit(" ", 2)[0], *out.split()[-2:]
    assert pruning == "False" and sqlite == "False"
    for heavy in ("trainer", "searcher", "core", "structured", "deep_compression", "data"):
        assert f"slimzip.{heavy}'" not in modules and f"slimzip.{heavy}." not in modules, modules


@pytest.mark.parametrize("name", ["v4-lenet-5-bn-plan-auto.slz", "lenet-5-bn-plan-auto.slz"])
def test_inspect_measures_the_streams_entropies(capsys, name):
    capsys.readouterr()
    from pathlib import Path

    assert main(["inspect", str(Path(__file__).parent / "corpus" / "valid" / name), "--json"]) == 0
    shared = [t for t in json.loads(capsys.readouterr().out)["tensors"] if t["encoding"] == "shared"]
    assert shared and all(0 < t["code_entropy"] <= t["bits"] + 1e-9 and t["index_entropy"] > 0 for t in shared)


@pytest.mark.parametrize("x, y, message", [
    (torch.rand(8, 16, 16, 3), torch.zeros(8, dtype=torch.long), "permute(0, 3, 1, 2)"),
    (torch.rand(8, 3, 16, 16), torch.zeros(8), "labels.long()"),
    (torch.rand(8, 3, 16, 16), -torch.ones(8, dtype=torch.long), "found -1")])
def test_inputs_are_checked_at_the_boundary_with_the_fix_named(x, y, message):
    with pytest.raises(SlimzipError, match=message.replace("(", r"\(").replace(")", r"\)")):
        slimzip.train(Small(), (x, y), epochs=1, verbose=False)


def test_the_command_line_and_the_library_compress_through_one_pipeline(capsys, tmp_path):
    """Fixed knobs: ``slimzip compress`` and ``slimzip.compress`` on the same checkpoint, knobs and seed
    write the same bytes (the command is the function on the checkpoint's model and data)."""
    from slimzip.api.common import _checkpoint_loaders, _checkpoint_recipe, _file_data
    from slimzip.checkpoint import load_checkpoint
    from slimzip.config import CompressConfig

    run = tmp_path / "run"
    assert main(["train", "--model", "lenet-300-100", "--epochs", "1", "--subset", "1500", "--out", str(run),
                 "--quiet"]) == 0
    knobs = ["--sparsity", "0.8", "--retrain-epochs", "0.5", "--prune-steps", "2", "--bits-fc", "4",
             "--centroid-epochs", "0", "--seed", "3"]
    assert main(["compress", str(run), "--out", str(tmp_path / "cli.slz"), "--quiet", *knobs]) == 0
    capsys.readouterr()
    model, meta = load_checkpoint(run, torch.device("cpu"))
    recipe = _checkpoint_recipe(meta)
    loaders = _checkpoint_loaders(meta, recipe.batch_size, torch.device("cpu"), None, 3)
    result = slimzip.compress(model, loaders, None, config=CompressConfig(sparsity=0.8, prune_steps=2, bits_fc=4,
                              centroid_epochs=0), epochs=0.5, train_config=recipe, seed=3, verbose=False,
                              spec=meta["model"], file_meta={"dataset": meta["dataset"], **_file_data(meta)})
    assert result.data == (tmp_path / "cli.slz").read_bytes()
    assert result.knobs["sparsity"] == 0.8 and result.knobs["retrain_epochs"] == 0.5
    with pytest.raises(SlimzipError, match="contradicts config.sparsity"):
        slimzip.compress(model, loaders, None, config=CompressConfig(sparsity=0.5), sparsity=0.7)


def test_prune_channels_takes_one_config_and_refuses_what_contradicts_it(tmp_path):
    """``prune_channels``'s knobs are one ``PruneConfig`` (the command line's options are its fields): a
    keyword that contradicts the config, or one it does not have, is an error before anything is read."""
    from slimzip.api import prune_channels
    from slimzip.config import PruneConfig

    cfg = PruneConfig(channel_ratio=0.25, scope="layer")
    with pytest.raises(SlimzipError, match="channel_ratio=0.5 contradicts config.channel_ratio=0.25"):
        prune_channels(tmp_path / "none", tmp_path / "out", cfg, channel_ratio=0.5)
    with pytest.raises(SlimzipError, match="unknown argument"):
        prune_channels(tmp_path / "none", tmp_path / "out", ratio=0.5)
    with pytest.raises(SlimzipError, match="channel ratio must be in"):
        prune_channels(tmp_path / "none", tmp_path / "out", channel_ratio=1.5)
    assert not (tmp_path / "out").exists()


def test_the_raw_ladder_recodes_the_winners_small_tensors_while_the_target_holds(tmp_path):
    """``min_raw_bits``: after the search, the winner's small tensors one bit fewer at a time, no training; the
    file shrinks, keeps its other streams, and records the bits its packed rows hold; resumed with the ladder
    off, the same journal gives the file before it."""
    from slimzip.container import decode_container

    torch.manual_seed(0)
    common = dict(**FAST, raw_dtype="uint8", strategy="heuristic")
    args = (Small(), _data(128, 0), _data(64, 1))
    lowered = slimzip.search(*args, max_drop=50.0, max_epochs=2, seed=3, run_dir=tmp_path / "run", verbose=False,
                             config=SearchConfig(**common, min_raw_bits=2))
    plain = slimzip.search(*args, max_drop=50.0, max_epochs=2, seed=3, run_dir=tmp_path / "run", verbose=False,
                           config=SearchConfig(**common))
    bits = lowered.knobs["raw_bits"]
    assert 2 <= bits < 8 and "raw_bits" not in plain.knobs and lowered.val_accuracy >= lowered.target_accuracy
    assert lowered.file_bytes < plain.file_bytes
    rows = decode_container(lowered.data).manifest["tensors"]
    assert {tuple(r) for r in rows if r[0] in "pq"} == {("p", bits)}
    shared = [r for r in rows if r[0] == "s"]
    assert shared == [r for r in decode_container(plain.data).manifest["tensors"] if r[0] == "s"]
