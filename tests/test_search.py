"""The search: strategies on a synthetic landscape (fast, exact), the journal (resume, no repeats,
failed candidates), and the real pipeline end to end on a tiny checkpoint."""

import dataclasses
import json
import math
import sqlite3
import subprocess
import sys

import pytest

from slimzip.cli import main
from slimzip.errors import SlimzipError
from slimzip.searcher import Journal, Knobs, SearchConfig, run_search
from slimzip.searcher.driver import OverBudgetError
from slimzip.schedule import sparsity_steps
from slimzip.searcher.strategies import _axis

BASELINE = 0.99


class Landscape:
    """A fake candidate pipeline: accuracy falls with both knobs (faster past a knee), file bytes
    shrink with both; a screened candidate (pruned, not trained) loses twice what the step costs a
    fine-tuned one (fine-tuning recovers half of the damage)."""

    def __init__(self, fail_at=None, stop_after=None):
        self.calls, self.fail_at, self.stop_after = [], fail_at, stop_after

    def accuracy(self, k: Knobs) -> float:
        return BASELINE - 0.02 * max(k.channel_ratio - 0.5, 0) - 0.05 * max(k.sparsity - 0.8, 0) - 0.001 * k.sparsity

    def __call__(self, knobs, parent, *, key, epochs, rounds, centroid_epochs, bits=(8, 5)):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(key)
        if knobs == self.fail_at:
            raise FloatingPointError("training diverged at epoch 1 (loss nan)")
        acc = self.accuracy(knobs)
        if epochs == 0 and (parent is None or parent.knobs != knobs):  # screened: pruned, not trained
            acc -= self.accuracy(parent.knobs if parent else Knobs()) - acc
        size = int(100_000 * (1 - knobs.channel_ratio) ** 2 * (1 - knobs.sparsity)) + 500
        if bits != (8, 5):  # smaller codebooks: smaller files, and below 4 bits the accuracy goes
            size = int(size * sum(bits) / 13)
            acc -= 0.002 * max(0, 4 - min(bits))
        return {"val_accuracy": acc, "file_bytes": size, "params": size, "macs": size,
                "epochs": epochs * max(rounds, 1) + centroid_epochs, "channels_removed": 0}

    def layer_weights(self, c, bits):  # one conv and one linear layer
        return {"conv.weight": (1000, bits[0]), "fc.weight": (100, bits[1])}


def _search(tmp_path, strategy, target=0.985, fake=None, **kw):
    cfg = SearchConfig(strategy=strategy, **{"min_bits": 0, **kw})  # the bits ladder has a test of its own
    fake = fake or Landscape()
    journal = Journal(tmp_path / f"{strategy}.sqlite", {"cfg": strategy, "target": target})
    try:
        return run_search(cfg, target, BASELINE, journal, fake, verbose=False), fake
    finally:
        journal.close()


def _feasible_grid_best(target, step=0.1):
    fake = Landscape()
    points = [Knobs(r, s) for r in _axis(step, 0.9) for s in _axis(step, 0.99)]
    ok = [p for p in points if fake.accuracy(p) >= target]
    return min(int(100_000 * (1 - p.channel_ratio) ** 2 * (1 - p.sparsity)) + 500 for p in ok)


def test_grid_tries_every_pair_and_finds_the_grid_optimum(tmp_path):
    result, fake = _search(tmp_path, "grid")
    assert len(fake.calls) == 10 * 10 + 1  # every pair, then the winner's centroid fine-tune
    assert result.best.file_bytes == _feasible_grid_best(0.985)
    assert result.best.meets(0.985)


def test_heuristic_and_frontier_meet_the_target_far_cheaper(tmp_path):
    grid, _ = _search(tmp_path, "grid")
    heur, _ = _search(tmp_path, "heuristic")
    front, _ = _search(tmp_path, "frontier")
    for r in (heur, front):
        assert r.best.meets(0.985) and all(c.meets(0.985) or c is not r.best for c in r.candidates)
    assert grid.epochs >= 10 * heur.epochs
    assert heur.best.file_bytes <= 1.1 * grid.best.file_bytes
    # on this landscape channels are the cheaper bytes and the heuristic's refinement trades sparsity for
    # them; frontier (which never lowers a knob) ends a little larger: on LeNet the comparison is measured
    assert front.epochs * 2 <= heur.epochs and front.best.file_bytes <= 1.3 * heur.best.file_bytes


def test_heuristic_walks_channels_at_target_plus_margin_then_sparsity(tmp_path):
    result, _ = _search(tmp_path, "heuristic", refine=0, margin=0.004)
    channel_only = [c for c in result.candidates if c.knobs.sparsity == 0]
    # accuracy at ratio r is 0.99 - 0.02 * (r - 0.5): it reaches 0.985 + 0.004 up to r = 0.55 (0.5 on the grid)
    assert max(c.knobs.channel_ratio for c in channel_only if c.meets(0.989)) == 0.5
    assert result.best.knobs.channel_ratio == 0.5
    parents = {c.id: c for c in result.candidates}
    for c in result.candidates:  # warm starts: every candidate continues from a feasible one
        assert c.parent is None or parents[c.parent].meets(0.985)


def test_infeasible_target_ends_after_one_candidate(tmp_path):
    result, fake = _search(tmp_path, "heuristic", target=0.995)
    assert len(fake.calls) == 1 and result.best is None
    assert result.candidates[0].knobs == Knobs() and result.candidates[0].epochs == 0


def test_diverged_candidate_is_recorded_as_failed_and_the_search_goes_on(tmp_path):
    fake = Landscape(fail_at=Knobs(0.3, 0.0))
    result, _ = _search(tmp_path, "grid", fake=fake)
    failed = [c for c in result.candidates if c.status == "failed"]
    assert [c.knobs for c in failed] == [Knobs(0.3, 0.0)] and "diverged" in failed[0].error
    assert not any(c.knobs.channel_ratio == 0.3 for c in result.candidates if c.status == "ok")
    assert result.best is not None and result.best.meets(0.985)
    rows = sqlite3.connect(tmp_path / "grid.sqlite").execute("SELECT status, error FROM candidates").fetchall()
    assert ("failed", failed[0].error) in rows


@pytest.mark.parametrize("strategy", ["heuristic", "grid", "frontier"])
def test_a_killed_search_resumes_without_repeating_or_losing_candidates(tmp_path, strategy):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, fake_whole = _search(tmp_path / "a", strategy)
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path / "b", strategy, fake=Landscape(stop_after=7))
    again = Landscape()
    resumed, _ = _search(tmp_path / "b", strategy, fake=again)
    assert len(again.calls) == len(fake_whole.calls) - 7  # the 7 finished ones came from the journal
    assert not set(again.calls) & set(fake_whole.calls[:7])
    assert [c.key for c in resumed.candidates] == [c.key for c in whole.candidates]
    assert resumed.best.key == whole.best.key and resumed.epochs == whole.epochs


def test_the_winner_lowers_its_bits_while_it_meets_the_target(tmp_path):
    """Bits as a knob: after the search, the smallest files are shared with one bit fewer per step
    (8/5, 7/4, 6/3, 5/2, then conv alone); the first miss ends the ladder and the smallest file that
    meets the target wins."""
    from slimzip.searcher.driver import bits_ladder

    assert bits_ladder(SearchConfig(min_bits=2)) == [(7, 4), (6, 3), (5, 2), (4, 2), (3, 2), (2, 2)]
    assert bits_ladder(SearchConfig(min_bits=0)) == []
    plain, _ = _search(tmp_path / "a", "heuristic", min_bits=0)
    laddered, fake = _search(tmp_path / "b", "heuristic", min_bits=2, target=plain.best.val_accuracy - 0.005)
    tried = [k for k in fake.calls if ":b" in k]
    assert laddered.best.file_bytes < plain.best.file_bytes and laddered.best.meets(laddered.target)
    parents = {k.split(":")[0] for k in tried}
    assert tried and f"p{laddered.best.parent}" in parents and len(parents) <= 3  # the few smallest files each
    for parent in parents:  # each ladder stops at its first miss (or its end)
        steps = [c for c in laddered.candidates if c.key.startswith(parent + ":") and ":b" in c.key]
        assert all(c.meets(laddered.target) for c in steps[:-1])


class FragileLinear(Landscape):
    """Codebook bits cost nothing on conv layers and a lot on linear ones below 4 bits."""

    def __call__(self, knobs, parent, *, bits=(8, 5), **kw):
        out = super().__call__(knobs, parent, bits=(8, 5), **kw)
        if bits != (8, 5):
            out = {**out, "file_bytes": int(out["file_bytes"] * sum(bits) / 13),
                   "val_accuracy": out["val_accuracy"] - 0.01 * max(0, 4 - bits[1])}
        return out


def test_split_ladder_lowers_each_kind_alone_after_the_joint_ladder(tmp_path):
    plain, _ = _search(tmp_path / "a", "heuristic", fake=FragileLinear())
    target = plain.best.val_accuracy - 0.005
    joint, _ = _search(tmp_path / "b", "heuristic", min_bits=2, target=target, fake=FragileLinear())
    split, fake = _search(tmp_path / "c", "heuristic", min_bits=2, target=target, fake=FragileLinear(),
                          bits_ladder="split")
    assert joint.best.key.endswith(":b7/4")  # 6/3 costs the linear layers a point: the joint ladder stops
    assert split.best.key.endswith(":b2/4") and split.best.file_bytes < joint.best.file_bytes
    assert split.best.meets(target) and any(k.endswith(":b2/3") for k in fake.calls)  # linear alone: missed
    with pytest.raises(SlimzipError, match="bits ladder"):
        SearchConfig(bits_ladder="diagonal").validate()


class NoConv(Landscape):
    """An MLP: conv codebook bits change nothing."""

    def __call__(self, knobs, parent, *, bits=(8, 5), **kw):
        out = super().__call__(knobs, parent, bits=(8, 5), **kw)
        if bits != (8, 5):
            out = {**out, "file_bytes": int(out["file_bytes"] * (8 + bits[1]) / 13),
                   "val_accuracy": out["val_accuracy"] - 0.01 * max(0, 3 - bits[1])}
        return out

    def layer_weights(self, c, bits):
        return {"fc.weight": (1000, bits[1])}


def test_split_ladder_skips_a_kind_that_has_no_layer(tmp_path):
    plain, _ = _search(tmp_path / "a", "heuristic", fake=NoConv())
    split, fake = _search(tmp_path / "b", "heuristic", min_bits=2, target=plain.best.val_accuracy - 0.005,
                          fake=NoConv(), bits_ladder="split")
    winner = f"p{split.best.parent}:"
    steps = [k.split(":b")[1] for k in fake.calls if k.startswith(winner) and ":b" in k]
    assert steps == ["7/4", "6/3", "5/2"]  # the joint ladder to its first miss; conv alone changes no layer,
    # and linear alone (6/2) gives the layers the bits of the 5/2 file that missed: neither is tried


class RateCosts(Landscape):
    """Entropy-constrained sharing: each doubling of the share rate saves a tenth of the bytes; rates up to
    0.01 cost no accuracy, larger ones a point."""

    def __call__(self, knobs, parent, *, share_rate=None, **kw):
        out = super().__call__(knobs, parent, **kw)
        if share_rate is not None:
            doublings = math.log2(share_rate / 0.005) + 1
            out = {**out, "file_bytes": int(out["file_bytes"] * 0.9 ** doublings),
                   "val_accuracy": out["val_accuracy"] - (0.01 if share_rate > 0.01 else 0.0)}
        return out


def test_rate_ladder_raises_the_winners_share_rate_while_it_meets_the_target(tmp_path):
    """``--max-share-rate``: after the bits ladders the smallest file is shared again at 0.005, 0.01, ...
    (its pruned model, its bits), and the ladder stops at the first rate that misses the target."""
    from slimzip.searcher.driver import candidate_share_rate, rate_ladder, stage

    target = 0.985
    off, quiet = _search(tmp_path / "b", "heuristic", target=target, fake=RateCosts())
    assert not any(":x" in k for k in quiet.calls)  # off by default
    laddered, fake = _search(tmp_path / "c", "heuristic", target=target, fake=RateCosts(), max_share_rate=0.08)
    rates = [float(k.split(":x")[1]) for k in fake.calls if ":x" in k]
    assert rates == [0.005, 0.01, 0.02]  # the first miss ends the ladder: 0.04 is never tried
    assert candidate_share_rate(laddered.best, laddered_cfg := SearchConfig(max_share_rate=0.08)) == 0.01
    assert candidate_share_rate(off.best, laddered_cfg) == 0.0
    assert stage(laddered.best) == "share rate 0.01" and laddered.best.meets(target)
    assert laddered.best.file_bytes < off.best.file_bytes
    assert laddered.best.knobs == off.best.knobs and laddered.best.parent in (off.best.id, off.best.parent)
    assert rate_ladder(SearchConfig(max_share_rate=0.04)) == [0.005, 0.01, 0.02, 0.04]
    assert rate_ladder(SearchConfig(share_rate=0.01, max_share_rate=0.05)) == [0.02, 0.04]
    assert rate_ladder(SearchConfig()) == [] == rate_ladder(SearchConfig(share_rate=0.02, max_share_rate=0.01))
    with pytest.raises(SlimzipError, match="max share rate"):
        SearchConfig(max_share_rate=2).validate()


def test_journal_refuses_a_different_search(tmp_path):
    Journal(tmp_path / "j.sqlite", {"a": 1}).close()
    with pytest.raises(SlimzipError, match="other settings"):
        Journal(tmp_path / "j.sqlite", {"a": 2})
    (tmp_path / "bad.sqlite").write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(SlimzipError, match="not a readable search journal"):
        Journal(tmp_path / "bad.sqlite", {"a": 1})


def test_sparsity_steps_shrink_the_kept_fraction_geometrically():
    assert sparsity_steps(0.0, 0.875, 3) == pytest.approx([0.5, 0.75, 0.875])
    assert sparsity_steps(0.5, 0.9, 1) == pytest.approx([0.9])


@pytest.mark.parametrize("kw, message", [({"strategy": "anneal"}, "unknown search strategy"),
                                         ({"step": 0.0}, "step must be"), ({"max_sparsity": 1.0}, "max sparsity"),
                                         ({"train_subset": 0}, "train subset")])
def test_bad_search_settings_are_named(kw, message):
    with pytest.raises(SlimzipError, match=message):
        SearchConfig(**kw).validate()


# --- the real pipeline, end to end --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir):
    """A one-epoch LeNet-300-100 (BN) checkpoint with slimming's sparsity, shared by this module's tests
    (none of them modifies it: that is one of the things they check)."""
    path = tmp_path_factory.mktemp("search") / "run"
    assert main(["train", "--model", "lenet-300-100-bn", "--epochs", "1", "--subset", "3000", "--sparsity", "1e-4",
                 "--out", str(path), "--quiet"]) == 0
    return path


def test_compress_search_writes_the_winner_and_resumes_from_the_journal(capsys, tiny, tmp_path):
    ckpt = tiny
    argv = ["compress", str(ckpt), "--max-drop", "3", "--search", "frontier", "--step", "0.4", "--refine", "1",
            "--train-subset", "1000", "--out", str(tmp_path / "m.slz"), "--quiet", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["val_accuracy"] >= first["target_accuracy"]
    assert first["file_bytes"] == (tmp_path / "m.slz").stat().st_size
    assert first["knobs"]["sparsity"] > 0 and first["search"]["candidates"] == len(first["candidates"])
    db = sqlite3.connect(tmp_path / "m.run" / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == first["search"]["candidates"]
    search = first["search"]  # 1,000 of the checkpoint's 3,000 training images: a third of a full-data epoch each
    assert search["full_data_epochs"] == pytest.approx(search["epochs"] / 3, rel=1e-3)
    # the file decodes in a fresh process to the accuracy the search reported
    out = subprocess.run([sys.executable, "-m", "slimzip", "eval", str(tmp_path / "m.slz"), "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["accuracy"] == first["test_accuracy"]
    # the same command again: every candidate comes from the journal, nothing is trained
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == first["search"]["candidates"]
    assert second["file_bytes"] == first["file_bytes"] and second["test_accuracy"] == first["test_accuracy"]


def test_infeasible_target_is_one_line_exit_2_with_the_closest_file(capsys, tiny, tmp_path):
    """Never fail closed: the target is missed, the message says by how much, and the closest file found is
    written apart (NAME.best-effort.slz, a file slimzip reads), never as the requested output."""
    ckpt = tiny
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    capsys.readouterr()
    code = main(["compress", str(ckpt), "--target-accuracy", "0.9999", "--out", str(tmp_path / "m.slz"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "infeasible" in err and "closest" in err and "Traceback" not in err
    assert not (tmp_path / "m.slz").exists() and "m.best-effort.slz" in err
    assert main(["eval", str(tmp_path / "m.best-effort.slz"), "--json"]) == 0
    assert before == {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}


def test_budgets_pick_the_smallest_file_within_them_and_say_what_no_file_met(capsys, tiny, tmp_path):
    """Budgets are constraints: the winner fits every one; a budget nothing fits ends in one line naming it
    (and the closest file written apart)."""
    ckpt = tiny
    capsys.readouterr()
    base = ["compress", str(ckpt), "--max-drop", "5", "--search", "heuristic", "--step", "0.5", "--refine", "0",
            "--train-subset", "1000", "--min-bits", "0", "--quiet", "--json"]
    assert main([*base, "--out", str(tmp_path / "free.slz"), "--run-dir", str(tmp_path / "free")]) == 0
    free = json.loads(capsys.readouterr().out)
    macs = free["macs"]
    assert main([*base, "--max-macs", str(macs - 1), "--out", str(tmp_path / "b.slz"),
                 "--run-dir", str(tmp_path / "b")]) in (0, 2)
    out, err = capsys.readouterr()
    if out:
        assert json.loads(out)["macs"] <= macs - 1
    else:
        assert "with the budgets" in err and "--max-macs" in err and len(err.strip().splitlines()) == 1
    code = main([*base, "--max-bytes", "1", "--out", str(tmp_path / "none.slz"), "--run-dir", str(tmp_path / "n")])
    err = capsys.readouterr().err
    assert code == 2 and "with the budgets was met by no candidate" in err and "over --max-bytes 1" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "none.slz").exists()
    # the report: the Pareto front, the budget drawn, the chosen file layer by layer, an infeasible run's closest
    assert main(["report", str(tmp_path / "b"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    titles = [sec["title"] for sec in r["sections"]]
    front = r["sections"][titles.index("candidates")]["plot"]
    assert "Pareto front" in [series["name"] for series in front["series"]]
    assert r["sections"][titles.index("accuracy against MACs per image")]["plot"]["vlines"] == [[macs - 1, "budget"]]
    if out:
        layers = r["sections"][titles.index("layers of b.slz")]["rows"]
        assert layers and all(len(row) == 7 for row in layers)
    assert main(["report", str(tmp_path / "n"), "--json"]) == 0
    notes = [n for sec in json.loads(capsys.readouterr().out)["sections"] for n in sec["notes"]]
    assert any("infeasible" in n and "none.best-effort.slz" in n for n in notes)
    _seen_in_a_browser(tmp_path / "b" / "report.html", plots=r["plots"], tmp=tmp_path)


def _seen_in_a_browser(page, plots: int, tmp) -> None:
    """The report as a person sees it: headless Chromium renders the page; the DOM it built holds the tables
    and every plot's SVG, and its screenshot is not blank (skipped where no Chromium is installed)."""
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None or plots == 0:
        return
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp / 'chrome'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<svg") == plots and "<table>" in dom and "Pareto front" in dom
    shot = tmp / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.resolve().as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    pixels = Image.open(shot).convert("L").getextrema()
    assert pixels[0] < 128 < pixels[1]  # dark text and plots on a light page


@pytest.mark.parametrize("extra, message", [
    (["--target-accuracy", "1.5"], "target accuracy must be in"),
    (["--target-accuracy", "0.9", "--max-drop", "1"], "exactly one of"),
    (["--max-drop", "1", "--search", "anneal"], "invalid choice: 'anneal'"),
    (["--max-drop", "1", "--sparsity", "0.9"], "chosen by the search"),
    (["--search", "grid"], "needs a target"),
    (["--max-drop", "1", "--channel-scope", "row"], "unknown channel scope"),
    (["--max-drop", "1", "--short-epochs", "2"], "short epochs must be in"),
    (["--max-drop", "1", "--max-epochs", "-1"], "max epochs must be in"),
])
def test_search_mistakes_exit_2(capsys, tiny, tmp_path, extra, message):
    ckpt = tiny
    capsys.readouterr()
    try:
        code = main(["compress", str(ckpt), "--out", str(tmp_path / "m.slz"), "--quiet", *extra])
    except SystemExit as e:  # argparse's own refusal (an unknown --search choice)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_frontier_climbs_the_budget_ladder_only_as_far_as_needed(tmp_path):
    result, fake = _search(tmp_path, "frontier")
    rung = {c.id: float(c.key.split(":e")[1].split(":")[0]) for c in result.candidates}
    assert sorted(set(rung.values())) == [0.0, 0.5, 1.0]
    by_id = {c.id: c for c in result.candidates}
    for c in result.candidates[:-1]:  # (the last is the winner's centroid fine-tune)
        if rung[c.id]:  # a fine-tune continues the same knobs from the rung below, which missed
            parent = by_id[c.parent]
            assert parent.knobs == c.knobs and rung[parent.id] == {0.5: 0.0, 1.0: 0.5}[rung[c.id]]
    assert sum(r == 0.0 for r in rung.values()) > sum(r > 0 for r in rung.values())  # most stop at the screen


class Narrowed(Landscape):
    """The landscape with MACs that fall with the channel ratio only, refused over ``max_macs`` before any
    training as the real pipeline refuses them."""

    def __init__(self, max_macs):
        super().__init__()
        self.max_macs = max_macs

    def __call__(self, knobs, parent, **kw):
        macs = int(1_000_000 * (1 - knobs.channel_ratio) ** 2)
        if macs > self.max_macs:
            e = OverBudgetError(f"over --max-macs {self.max_macs:,} ({macs:,} MACs) before any training")
            e.epochs = 0  # as the pipeline records it: nothing was trained
            raise e
        return {**super().__call__(knobs, parent, **kw), "macs": macs}


@pytest.mark.parametrize("strategy", ["heuristic", "grid", "frontier"])
@pytest.mark.parametrize("objective", ["bytes", "accuracy"])
def test_a_macs_budget_trains_nothing_over_it_and_every_walk_starts_where_it_fits(tmp_path, strategy, objective):
    budget = 400_000  # channel ratio >= 0.3675: 0.375 on the finest step (0.025)
    result, fake = _search(tmp_path, strategy, max_macs=budget, objective=objective, fake=Narrowed(budget))
    refused = [c for c in result.candidates if c.status == "failed"]
    assert refused and all(c.epochs == 0 and "--max-macs 400,000" in c.error for c in refused)
    assert all(c.knobs.channel_ratio < 0.3675 for c in refused)
    trained = [c for c in result.candidates if c.epochs > 0]
    assert trained and all(c.macs <= budget for c in trained)
    if strategy != "grid":  # a bisection finds the floor; the walks never go below it
        assert len(refused) <= 6 and min(c.knobs.channel_ratio for c in trained) == pytest.approx(0.375)
    assert result.best is not None and result.best.macs <= budget and result.best.meets(0.985)
    if objective == "accuracy":
        assert result.best.val_accuracy == max(c.val_accuracy for c in result.candidates
                                               if c.status == "ok" and c.macs <= budget)


def test_a_macs_budget_nothing_fits_ends_without_training(tmp_path):
    result, _ = _search(tmp_path, "frontier", max_macs=1, fake=Narrowed(1))
    assert result.best is None and sum(c.epochs for c in result.candidates) == 0


@pytest.mark.parametrize("strategy", ["heuristic", "grid", "frontier"])
def test_an_epoch_budget_stops_the_search_and_keeps_the_best_found(tmp_path, strategy):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, _ = _search(tmp_path / "a", strategy)
    budget = whole.epochs / 3
    capped, _ = _search(tmp_path / "b", strategy, max_epochs=budget)
    assert capped.epochs <= budget + 1e-9 and capped.epochs < whole.epochs
    assert capped.best is not None and capped.best.meets(0.985) and capped.best.file_bytes >= whole.best.file_bytes


def test_compare_search_budget_needs_the_heuristic(capsys, tiny, tmp_path):
    capsys.readouterr()
    code = main(["compare-search", str(tiny), "--max-drop", "1", "--strategies", "frontier", "--budget-ratio", "0.5",
                 "--out", str(tmp_path / "c"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "include heuristic" in err and len(err.strip().splitlines()) == 1


def test_compare_search_runs_each_strategy_and_reports(capsys, tiny, tmp_path):
    out = tmp_path / "cmp"
    capsys.readouterr()
    assert main(["compare-search", str(tiny), "--max-drop", "3", "--strategies", "heuristic,frontier", "--step", "0.4",
                 "--refine", "1", "--train-subset", "1000", "--ablation", "none", "--out", str(out), "--quiet",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["strategies"]) == {"heuristic", "frontier"} and "frontier/heuristic" in r["ratios"]
    for name, s in r["strategies"].items():
        assert s["val_accuracy"] >= r["target_accuracy"] and (out / f"{name}.slz").stat().st_size == s["file_bytes"]
    assert main(["report", str(out), "--json"]) == 0  # the comparison as tables and one plot
    rep = json.loads(capsys.readouterr().out)
    assert rep["kind"] == "compare-search" and len(rep["sections"][0]["rows"]) == 2 and rep["plots"] == 1
    assert main(["report", str(out / "frontier"), "--json"]) == 0  # one strategy's journal
    rep = json.loads(capsys.readouterr().out)
    rows = rep["sections"][1]["rows"]
    assert rep["kind"] == "search" and len(rows) == r["strategies"]["frontier"]["search"]["candidates"]
    assert [row[0] for row in rows if row[-1] == "winner"] == [r["strategies"]["frontier"]["knobs"]["candidate"]]


def test_a_speculating_search_counts_and_reports_what_ran_ahead(capsys, tiny, tmp_path):
    argv = ["compress", str(tiny), "--max-drop", "3", "--search", "frontier", "--step", "0.4", "--refine", "1",
            "--train-subset", "1000", "--speculate", "on", "--out", str(tmp_path / "m.slz"), "--quiet", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    ahead = r["search"]["speculative_candidates"]
    assert ahead > 0 and r["search"]["speculative_epochs"] >= 0
    assert r["search"]["epochs"] == pytest.approx(sum(c["epochs"] for c in r["candidates"])
                                                  + r["search"]["speculative_epochs"])
    db = sqlite3.connect(tmp_path / "m.run" / "journal.sqlite")
    assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == len(r["candidates"]) + ahead
    assert main(["report", str(tmp_path / "m.run"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["sections"][1]["rows"]
    assert sum(row[-1] == "speculative" for row in rows) == ahead
    assert [row[0] for row in rows if row[-1] == "winner"] == [r["knobs"]["candidate"]]


def test_a_search_run_made_before_folded_batchnorm_does_not_resume_into_it():
    from slimzip.api import search_defaults
    from slimzip.settings import same_settings

    now = {"search": dataclasses.asdict(SearchConfig())}
    before = {"search": {k: v for k, v in now["search"].items() if k != "fold_bn"}}
    assert not same_settings(before, now, search_defaults())
    assert same_settings(before, {"search": {**now["search"], "fold_bn": False}}, search_defaults())


def test_a_search_run_made_before_recovery_rungs_resumes_only_without_them():
    """A run made before ``--recover-step-epochs`` walked from a recovered model with proxy fine-tunes: it
    resumes with 0 (the walk it journaled), not into rungs it never ran; a resume may change its ladders."""
    from slimzip.api import search_defaults
    from slimzip.settings import same_settings

    now = {"search": dataclasses.asdict(SearchConfig(recover_epochs=3))}
    before = {"search": {k: v for k, v in now["search"].items() if k != "recover_step_epochs"}}
    assert not same_settings(before, now, search_defaults(), resuming=True)
    rungless = {"search": {**now["search"], "recover_step_epochs": 0}}
    assert same_settings(before, rungless, search_defaults())
    laddered = {"search": {**rungless["search"], "min_bits": 3, "bits_ladder": "layer", "max_share_rate": 0.04}}
    assert same_settings(before, laddered, search_defaults(), resuming=True)
    assert not same_settings(before, laddered, search_defaults())  # a finished run's summary is not reused


def _path(result):
    """What a search decided: the knobs, training and outcome of every candidate it asked for, in order."""
    return [(c.knobs, c.key.split(":", 1)[1], c.status, c.val_accuracy, c.file_bytes) for c in result.candidates]


def test_speculation_runs_alternatives_ahead_and_changes_no_decision(tmp_path):
    """Frontier with speculation: each move's alternative (a gallop step's bisection, the staircase's
    other knob) climbs its ladder beside it; on a landscape where an outcome depends on knobs and training
    only (the real pipeline's image offsets follow journal ids, so there the path can differ), the
    candidates asked for, their outcomes and the winner are the ones found without it, and what ran
    ahead for nothing is counted in the cost."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain, plain_fake = _search(tmp_path / "a", "frontier", speculate="off")
    spec, spec_fake = _search(tmp_path / "b", "frontier", speculate="on")
    assert _path(spec) == _path(plain) and spec.best.knobs == plain.best.knobs
    assert spec.best.file_bytes == plain.best.file_bytes
    assert spec.speculative and not plain.speculative
    assert len(spec_fake.calls) == len(plain_fake.calls) + len(spec.speculative)
    wasted = sum(c.epochs for c in spec.speculative)
    assert spec.epochs == pytest.approx(plain.epochs + wasted) and spec.cost()["speculative_epochs"] == \
        pytest.approx(wasted)
    asked = {c.key for c in spec.candidates}
    assert not asked & {c.key for c in spec.speculative}
    # some speculation paid off: a candidate the walk asked for had been run ahead (journal id before its turn)
    ids = [c.id for c in spec.candidates]
    assert ids != sorted(ids)


def test_speculation_spends_no_budget_it_does_not_have(tmp_path):
    (tmp_path / "a").mkdir()
    whole, _ = _search(tmp_path / "a", "frontier", speculate="on")
    budget = whole.epochs / 3
    (tmp_path / "b").mkdir()
    capped, _ = _search(tmp_path / "b", "frontier", speculate="on", max_epochs=budget)
    assert capped.epochs <= budget + 1e-9 and capped.best is not None and capped.best.meets(0.985)


def test_a_killed_speculating_search_resumes_exactly(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole, fake_whole = _search(tmp_path / "a", "frontier", speculate="on")
    with pytest.raises(KeyboardInterrupt):
        _search(tmp_path / "b", "frontier", fake=Landscape(stop_after=9), speculate="on")
    again = Landscape()
    resumed, _ = _search(tmp_path / "b", "frontier", fake=again, speculate="on")
    assert len(again.calls) == len(fake_whole.calls) - 9 and not set(again.calls) & set(fake_whole.calls[:9])
    assert [c.key for c in resumed.candidates] == [c.key for c in whole.candidates]
    assert [c.key for c in resumed.speculative] == [c.key for c in whole.speculative]
    assert resumed.best.key == whole.best.key and resumed.epochs == whole.epochs


@pytest.mark.parametrize("strategy, kw", [("grid", {"step": 0.25}), ("heuristic", {"step": 0.2}),
                                          ("frontier", {"step": 0.2}), ("frontier", {"step": 0.1, "refine": 3})])
def test_the_dry_run_bounds_hold_what_the_search_spends(tmp_path, strategy, kw):
    """``compress --dry-run``'s bounds: the grid's candidates and proxy epochs exactly, the walks' at most."""
    from slimzip.searcher.estimate import search_bounds

    cfg = SearchConfig(strategy=strategy, min_bits=0, centroid_epochs=0, **kw)
    result, _ = _search(tmp_path, strategy, centroid_epochs=0, **kw)
    bound = search_bounds(cfg)
    proxy = [c for c in result.candidates]
    assert len(proxy) <= bound["candidates"] and result.cost()["epochs"] <= bound["proxy_epochs"] + 1e-6
    if strategy == "grid":
        assert bound["exact"] and len(proxy) == bound["candidates"]
        assert result.cost()["epochs"] == pytest.approx(bound["proxy_epochs"])


def test_each_candidate_line_names_its_stage(tmp_path, capsys):
    """The progress lines say what each candidate is: screen, fine-tune, centroids, bits, recovery."""
    from slimzip.searcher.driver import stage

    result, _ = _search(tmp_path, "frontier", step=0.2, min_bits=3, centroid_epochs=1)
    stages = {stage(c) for c in result.candidates}
    assert {"screen", "fine-tune", "centroids"} <= stages and any(s.startswith("bits ") for s in stages)


def test_flash_ram_and_latency_budgets_are_measured_on_the_compiled_c_model(capsys, tiny, tmp_path):
    import shutil

    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    from slimzip.deploy.footprint import c_footprint

    ckpt = tiny
    capsys.readouterr()
    argv = ["compress", str(ckpt), "--max-drop", "5", "--search", "heuristic", "--step", "0.5", "--refine", "0",
            "--train-subset", "1000", "--min-bits", "0", "--max-flash", "200000", "--max-ram", "100000",
            "--max-latency-ms", "50", "--quiet",
            "--json", "--out", str(tmp_path / "m.slz"), "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 0
    capsys.readouterr()
    db = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    rows = db.execute("SELECT flash_bytes, ram_bytes, latency_ms FROM candidates WHERE status = 'ok'").fetchall()
    assert rows and all(f is not None and r is not None and 0 < t for f, r, t in rows)
    measured = c_footprint((tmp_path / "m.slz").read_bytes())
    assert measured["flash_bytes"] <= 200000 and measured["ram_bytes"] <= 100000


def test_objective_accuracy_picks_the_most_accurate_file_within_the_budget(capsys, tiny, tmp_path):
    ckpt = tiny
    capsys.readouterr()
    base = ["compress", str(ckpt), "--target-accuracy", "0", "--objective", "accuracy", "--search", "heuristic",
            "--step", "0.5", "--refine", "0", "--train-subset", "1000", "--min-bits", "0", "--quiet", "--json"]
    assert main([*base, "--out", str(tmp_path / "a.slz"), "--run-dir", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    sizes = sorted(b for (b,) in sqlite3.connect(tmp_path / "a" / "journal.sqlite").execute(
        "SELECT file_bytes FROM candidates WHERE status = 'ok'"))
    budget = sizes[len(sizes) // 2]  # the walk does not depend on the budget: half of its files fit
    assert main([*base, "--max-bytes", str(budget), "--out", str(tmp_path / "b.slz"), "--run-dir",
                 str(tmp_path / "b")]) == 0
    chosen = json.loads(capsys.readouterr().out)
    db = sqlite3.connect(tmp_path / "b" / "journal.sqlite")
    fits = db.execute("SELECT val_accuracy FROM candidates WHERE status = 'ok' AND file_bytes <= ?", (budget,))
    assert chosen["file_bytes"] <= budget
    assert chosen["val_accuracy"] == pytest.approx(max(a for (a,) in fits.fetchall()))


class Layered(Landscape):
    """Three layers: a big tolerant conv, a small fragile conv, a linear layer; a layer's bits below its
    floor cost a point; bytes scale with kept weights x bits."""

    KEPT = {"big.weight": (9000, True), "small.weight": (300, True), "fc.weight": (2000, False)}
    FLOOR = {"big.weight": 2, "small.weight": 6, "fc.weight": 3}

    def __call__(self, knobs, parent, *, bits=(8, 5), layer_bits=(), **kw):
        out = super().__call__(knobs, parent, bits=(8, 5), **kw)
        per = {n: dict(layer_bits).get(n, bits[0] if conv else bits[1]) for n, (_, conv) in self.KEPT.items()}
        if bits != (8, 5) or layer_bits:
            full = sum(kept * (8 if conv else 5) for kept, conv in self.KEPT.values())
            out = {**out, "file_bytes": out["file_bytes"] * sum(self.KEPT[n][0] * b for n, b in per.items()) // full,
                   "val_accuracy": out["val_accuracy"] - 0.01 * sum(b < self.FLOOR[n] for n, b in per.items())}
        return out

    def layer_weights(self, c, bits):
        return {name: (kept, bits[0] if conv else bits[1]) for name, (kept, conv) in self.KEPT.items()}


def test_layer_ladder_gives_each_layer_the_fewest_bits_it_tolerates(tmp_path):
    from slimzip.searcher.driver import candidate_layer_bits, stage

    plain, _ = _search(tmp_path / "a", "heuristic", fake=Layered())
    target = plain.best.val_accuracy - 0.005
    split, _ = _search(tmp_path / "b", "heuristic", min_bits=2, target=target, fake=Layered(), bits_ladder="split")
    layer, fake = _search(tmp_path / "c", "heuristic", min_bits=2, target=target, fake=Layered(),
                          bits_ladder="layer")
    assert split.best.key.endswith(":b6/3")  # the small conv layer holds every conv layer at 6 bits
    assert layer.best.meets(target) and layer.best.file_bytes < split.best.file_bytes
    assert candidate_layer_bits(layer.best) == {"big.weight": 2}  # the big one alone goes down to the floor
    assert stage(layer.best) == "bits 6/3, 1 layers apart"
    tried = [k for k in fake.calls if ":l" in k]
    assert tried[0].endswith(":lbig.weight=5") and any("small.weight=5" in k for k in tried)  # big first
    assert not any("fc.weight=2" in k and "big" not in k for k in tried[:4])


def test_layer_ladder_writes_each_layers_bits_into_the_file(capsys, tiny, tmp_path):
    """The real pipeline: the layer ladder's winner names the layers whose codebooks it lowered, and the
    file's codebooks are those sizes (the others at the kind's bits)."""
    from slimzip.api.files import inspect_file

    capsys.readouterr()
    assert main(["compress", str(tiny), "--max-drop", "1", "--search", "heuristic", "--step", "0.5", "--refine", "0",
                 "--train-subset", "1000", "--min-bits", "1", "--bits-ladder", "layer", "--bits-conv", "4",
                 "--bits-fc", "4", "--centroid-epochs", "0", "--out", str(tmp_path / "l.slz"),
                 "--run-dir", str(tmp_path / "run"), "--quiet", "--json"]) == 0
    knobs = json.loads(capsys.readouterr().out)["knobs"]
    shared = {t["name"]: t["bits"] for t in inspect_file(tmp_path / "l.slz")["tensors"] if t["encoding"] == "shared"}
    apart = knobs.get("layer_bits", {})
    assert shared and set(apart) <= set(shared)
    assert shared == {name: apart.get(name, knobs["bits_fc"]) for name in shared}  # an MLP: every layer linear
    tried = sqlite3.connect(tmp_path / "run" / "journal.sqlite").execute("SELECT key FROM candidates").fetchall()
    assert any(":l" in key for (key,) in tried)  # the ladder lowered single layers


def test_rate_ladder_runs_the_real_pipeline_and_reports_the_winners_rate(capsys, tiny, tmp_path):
    """The real pipeline: the rate ladder re-shares the winner's pruned model at 0.005 first; the summary's
    knobs name the share rate of the file that won, and that file reads back."""
    from slimzip.api.files import inspect_file

    capsys.readouterr()
    assert main(["compress", str(tiny), "--max-drop", "2", "--search", "heuristic", "--step", "0.5", "--refine", "0",
                 "--train-subset", "1000", "--min-bits", "0", "--centroid-epochs", "0", "--max-share-rate", "0.01",
                 "--out", str(tmp_path / "x.slz"), "--run-dir", str(tmp_path / "run"), "--quiet", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    db = sqlite3.connect(tmp_path / "run" / "journal.sqlite")
    keys = [k for (k,) in db.execute("SELECT key FROM candidates ORDER BY id")]
    assert any(k.endswith(":x0.005") for k in keys)
    won = out["knobs"].get("share_rate", 0.0)
    assert won in (0.0, 0.005, 0.01) and (won == 0.0) == (not keys[out["knobs"]["candidate"] - 1].count(":x"))
    assert inspect_file(tmp_path / "x.slz")["file_bytes"] == out["file_bytes"]


def test_a_finished_search_resumes_with_other_ladders_and_reuses_its_walk(capsys, tiny, tmp_path):
    """The ladders' settings (--min-bits, --bits-ladder, --max-share-rate) may change when a search is run
    again in its run directory: every candidate of the walk is read back from the journal, only the new
    ladder steps train; any other setting is still refused (exit 2)."""
    base = ["compress", str(tiny), "--max-drop", "2", "--search", "heuristic", "--step", "0.5", "--refine", "0",
            "--train-subset", "1000", "--centroid-epochs", "0", "--out", str(tmp_path / "x.slz"),
            "--run-dir", str(tmp_path / "run"), "--quiet", "--json"]
    db = tmp_path / "run" / "journal.sqlite"

    def keys() -> list[str]:
        return [k for (k,) in sqlite3.connect(db).execute("SELECT key FROM candidates ORDER BY id")]
    capsys.readouterr()
    assert main([*base, "--min-bits", "0"]) == 0
    first = json.loads(capsys.readouterr().out)["file_bytes"]
    walk = keys()
    assert not any(":b" in k or ":x" in k for k in walk)
    capsys.readouterr()
    assert main([*base, "--min-bits", "4", "--max-share-rate", "0.01"]) == 0
    after = keys()
    assert after[:len(walk)] == walk and all(":b" in k or ":x" in k for k in after[len(walk):])
    assert any(":b" in k for k in after) and any(":x" in k for k in after)
    assert json.loads(capsys.readouterr().out)["file_bytes"] <= first
    assert main([*base, "--min-bits", "4", "--max-share-rate", "0.01", "--bits-conv", "4"]) == 2
    assert "different run" in capsys.readouterr().err and keys() == after


def test_a_teacher_of_another_architecture_is_what_the_search_distills_from(capsys, tiny, tmp_path):
    """``--teacher``: every fine-tune learns from another checkpoint's outputs (a CNN teaching an MLP here),
    so the same search's candidates differ from those distilled from the input model; the journal records
    the teacher (a resume with another is refused); a teacher that cannot teach is one line, exit 2."""
    teacher = tmp_path / "lenet-5"
    assert main(["train", "--model", "lenet-5", "--epochs", "1", "--subset", "2000", "--out", str(teacher),
                 "--quiet"]) == 0
    base = ["compress", str(tiny), "--max-drop", "5", "--search", "heuristic", "--step", "0.5", "--refine", "0",
            "--train-subset", "1000", "--min-bits", "0", "--distill", "1", "--quiet", "--json"]
    capsys.readouterr()
    runs = {}
    for name, extra in (("self", []), ("cnn", ["--teacher", str(teacher)])):
        assert main([*base, *extra, "--out", str(tmp_path / f"{name}.slz"), "--run-dir", str(tmp_path / name)]) == 0
        capsys.readouterr()
        db = sqlite3.connect(tmp_path / name / "journal.sqlite")
        runs[name] = db.execute("SELECT key, val_accuracy FROM candidates WHERE epochs >= 1 ORDER BY id").fetchall()
        config = json.loads(db.execute("SELECT value FROM meta WHERE name = 'config'").fetchone()[0])
        assert ("teacher_sha256" in config) == (name == "cnn")
    same = [(a, b) for (k, a), (k2, b) in zip(runs["self"], runs["cnn"]) if k == k2]
    assert same and any(a != b for a, b in same)  # the same fine-tunes, another teacher: other accuracies
    code = main([*base, "--teacher", str(tiny), "--out", str(tmp_path / "cnn.slz"), "--run-dir", str(tmp_path / "cnn")])
    assert code == 2 and "holds a different run" in capsys.readouterr().err
    cifar = tmp_path / "cifar"
    assert main(["train", "--model", "resnet20", "--epochs", "1", "--subset", "64", "--batch-size", "64",
                 "--out", str(cifar), "--quiet"]) == 0
    capsys.readouterr()
    for extra, message in ((["--teacher", str(cifar)], "trained on cifar10, not mnist"),
                           (["--teacher", str(tmp_path / "nothere")], "nothere"),
                           (["--teacher", str(teacher), "--distill", "0"], "--distill")):
        code = main([*base, *extra, "--out", str(tmp_path / "x.slz"), "--run-dir", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.slz").exists()


def test_a_teacher_must_take_the_images_and_give_the_models_outputs(mnist_loaders):
    """The Python API's ``teacher=``: checked on a validation batch before anything trains."""
    import torch
    from torch import nn

    from slimzip.core import _teacher
    from slimzip.models import create_model

    model = create_model("lenet-300-100")
    for teacher, message in ((nn.Sequential(nn.Flatten(), nn.Linear(784, 100)), "same classes"),
                             (nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), "does not take this data's images")):
        with pytest.raises(SlimzipError, match=message):
            _teacher(teacher, SearchConfig(distill=1.0), model, mnist_loaders, torch.device("cpu"))
    fine = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert _teacher(fine, SearchConfig(distill=1.0), model, mnist_loaders, torch.device("cpu")) is fine
    assert model.training  # the shape check leaves the student as it found it
