"""`slimzip report`: every kind of run directory becomes tables (text, JSON) and one HTML page with plots.
(Search and compare-search runs are reported in tests/test_search.py, where those runs are made.)"""

import json

import pytest

from slimzip.api import dropnet
from slimzip.cli import main


def _report(capsys, run, *extra):
    assert main(["report", str(run), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_train_and_prune_channels_runs(capsys, data_dir, tmp_path):
    run, narrow = tmp_path / "run", tmp_path / "narrow"
    assert main(["train", "--model", "lenet-300-100-bn", "--epochs", "2", "--subset", "1000", "--out", str(run),
                 "--quiet"]) == 0
    assert main(["prune-channels", str(run), "--ratio", "0.5", "--scope", "layer", "--finetune-epochs", "1",
                 "--out", str(narrow), "--quiet"]) == 0
    capsys.readouterr()
    r = _report(capsys, run)
    assert r["kind"] == "train" and r["plots"] == 1 and [row[0] for row in r["sections"][1]["rows"]] == [1, 2]
    page = (run / "report.html").read_text()
    assert page.count("<svg") == 1 and "lenet-300-100-bn" in page
    r = _report(capsys, narrow, "--out", str(tmp_path / "p.html"))
    widths = {row[0]: row[1:] for row in r["sections"][0]["rows"]}
    assert r["kind"] == "prune-channels" and widths["width features.1"] == [300, 150]
    assert (tmp_path / "p.html").is_file() and not (narrow / "report.html").exists()


def test_dropnet_run_gives_the_curve(capsys, data_dir, tmp_path):
    result = dropnet("dropnet-a", None, tmp_path / "dn", metric="min_layer", fraction=0.25, stop_remaining=0.6,
                     subset=1000, overrides={"epochs": 1, "batch_size": 100}, verbose=False)
    r = _report(capsys, tmp_path / "dn")
    assert r["kind"] == "dropnet" and len(r["sections"][0]["rows"]) == len(result["cycles"]) and r["plots"] == 1
    assert r["sections"][0]["plot"]["series"][0]["x"] == [c["remaining"] for c in result["cycles"]]


def test_bad_run_directories_are_one_line_errors(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cycles.jsonl").write_text("{not json\n")
    for argv, message in (([str(tmp_path / "none")], "not a run directory"),
                          ([str(tmp_path / "empty")], "not a slimzip run directory"),
                          ([str(bad)], "not readable JSON lines"),
                          ([str(bad), "--out", str(tmp_path / "r.txt")], "not readable JSON lines")):
        code = main(["report", *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in bad.iterdir()) == ["cycles.jsonl"]  # nothing written next to a bad run


@pytest.mark.parametrize("suffix", [".txt", ""])
def test_report_file_must_be_html(capsys, data_dir, tmp_path, suffix):
    run = tmp_path / "run"
    assert main(["train", "--model", "lenet-300-100", "--epochs", "1", "--subset", "500", "--out", str(run),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / f"r{suffix}")]) == 2
    assert "must end in .html" in capsys.readouterr().err
