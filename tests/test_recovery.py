"""Recovery, the search's stage after the proxy: on a synthetic landscape (the stage's logic, its cost,
resume) and on the real pipeline (a recovered candidate is trained on the whole training split, and the
file it ships decodes to the accuracy the search reported)."""

import json
import sqlite3

import pytest
import torch

from slimzip.cli import main
from slimzip.errors import SlimzipError
from slimzip.searcher import Journal, Knobs, SearchConfig, run_search
from slimzip.searcher.driver import OverBudgetError, is_recovery
from slimzip.sharing import sharing_penalty

from test_search import BASELINE, Landscape


class Recovering(Landscape):
    """Recovery (``recover=True``) makes a lineage ``gain`` points more accurate, so that knobs the proxy
    could not reach from the input model hold the target from a recovered parent."""

    def __init__(self, gain=0.01, **kw):
        super().__init__(**kw)
        self.gain, self.bonus, self.recovered = gain, {}, []

    def __call__(self, knobs, parent, *, key, epochs, rounds, centroid_epochs, bits=(8, 5), recover=False):
        out = super().__call__(knobs, parent, key=key, epochs=epochs, rounds=rounds, centroid_epochs=centroid_epochs,
                               bits=bits)
        bonus = self.bonus.get(parent.key, 0.0) if parent else 0.0
        if recover:
            assert parent is not None and parent.knobs == knobs and epochs > 0
            self.recovered.append(key)
            bonus += self.gain
        self.bonus[key] = bonus
        return {**out, "val_accuracy": min(out["val_accuracy"] + bonus, BASELINE)}


def _run(tmp_path, strategy, fake, target=0.985, **kw):
    cfg = SearchConfig(strategy=strategy, **{"min_bits": 0, **kw})
    journal = Journal(tmp_path / "journal.sqlite", {"cfg": strategy, "target": target})
    try:
        return run_search(cfg, target, BASELINE, journal, fake, verbose=False, proxy_share=0.25), fake
    finally:
        journal.close()


@pytest.mark.parametrize("strategy", ["heuristic", "frontier", "grid"])
def test_recovery_goes_on_from_the_recovered_model_to_a_smaller_file(tmp_path, strategy):
    plain, _ = _run(tmp_path / "plain", strategy, Recovering(), step=0.2)
    recovered, fake = _run(tmp_path / "rec", strategy, Recovering(), step=0.2, recover_epochs=3, recover_rounds=2)
    assert recovered.best.meets(recovered.target) and recovered.best.file_bytes < plain.best.file_bytes
    recoveries = [c for c in recovered.candidates if is_recovery(c)]
    full = [c for c in recoveries if c.epochs == 3]  # the rounds' recoveries (the others: a walk's step rungs)
    assert 2 <= len(full) <= 3 and len(fake.recovered) == len(recoveries)  # the rounds, and one last
    assert all(c.epochs == 1 for c in recoveries if c not in full)
    # every step after the first recovery descends from a recovered model
    by_id = {c.id: c for c in recovered.candidates}
    first = recoveries[0].id
    for c in recovered.candidates:
        if c.id > first and not is_recovery(c):
            lineage = c
            while lineage.parent is not None and not is_recovery(lineage):
                lineage = by_id[lineage.parent]
            assert is_recovery(lineage)
    # cost: proxy epochs and recovery epochs apart, both also in full-data epochs
    cost = recovered.cost()
    assert cost["recovery_epochs"] == sum(c.epochs for c in recoveries) and cost["recoveries"] == len(recoveries)
    proxy = sum(c.epochs for c in recovered.candidates if not is_recovery(c))
    assert cost["epochs"] == pytest.approx(proxy)
    assert cost["full_data_epochs"] == pytest.approx(0.25 * proxy + cost["recovery_epochs"])
    assert "recovery_epochs" not in plain.cost()


@pytest.mark.parametrize("strategy", ["heuristic", "frontier"])
def test_a_close_step_after_recovery_climbs_a_recovery_rung(tmp_path, strategy):
    """Walking on from a recovered model, a step that its proxy fine-tunes leave just short of the target
    is retrained on the whole split (a rung) and kept when that makes it meet the target; without rungs
    the same walk stops earlier."""
    kw = dict(step=0.2, recover_epochs=3, recover_rounds=1)
    plain, _ = _run(tmp_path / "plain", strategy, Recovering(gain=0.004), recover_step_epochs=0, **kw)
    rungs, fake = _run(tmp_path / "rungs", strategy, Recovering(gain=0.004), recover_step_epochs=2, **kw)
    steps = [c for c in rungs.candidates if is_recovery(c) and c.epochs == 2]
    assert steps and all(c.knobs == {x.id: x for x in rungs.candidates}[c.parent].knobs for c in steps)
    assert not any(is_recovery(c) and c.epochs == 2 for c in plain.candidates)
    assert rungs.best.file_bytes <= plain.best.file_bytes and rungs.best.meets(rungs.target)
    first = min(c.id for c in rungs.candidates if is_recovery(c))
    assert all(c.id > first for c in steps)  # never before the first recovery: the proxy search has none


def test_recovery_is_off_by_default_and_a_walk_that_moves_nothing_ends_it(tmp_path):
    result, fake = _run(tmp_path / "off", "frontier", Recovering())
    assert fake.recovered == [] and not any(is_recovery(c) for c in result.candidates)
    # no gain from recovery: the walk from the recovered model moves no knob, so one recovery is all
    result, fake = _run(tmp_path / "flat", "frontier", Recovering(gain=0.0), recover_epochs=2, recover_rounds=5)
    assert len([key for key in fake.recovered if ":e2:" in key]) == 1  # besides step rungs that gained nothing


def test_a_killed_recovering_search_resumes_exactly(tmp_path):
    whole, fake = _run(tmp_path / "whole", "frontier", Recovering(), recover_epochs=2)
    for stop in (len(fake.calls) // 2, len(fake.calls) - 2):
        path = tmp_path / f"killed{stop}"
        with pytest.raises(KeyboardInterrupt):
            _run(path, "frontier", Recovering(stop_after=stop), recover_epochs=2)
        fresh = Recovering()
        # a resumed fake has no memory: its bonuses come back from the journal's keys as it replays
        resumed, _ = _run(path, "frontier", _Replaying(fresh, path / "journal.sqlite"), recover_epochs=2)
        assert [c.key for c in resumed.candidates] == [c.key for c in whole.candidates]
        assert resumed.best.key == whole.best.key and resumed.cost()["epochs"] == whole.cost()["epochs"]


class _Replaying:
    """A fresh fake that first learns the bonuses of the journaled candidates (a real pipeline reads them
    from the trunks the killed run saved)."""

    def __init__(self, fake: Recovering, journal):
        self.fake = fake
        rows = sqlite3.connect(journal).execute("SELECT key, parent FROM candidates ORDER BY id").fetchall()
        keys = {i + 1: key for i, (key, _parent) in enumerate(rows)}
        for key, parent in rows:
            base = fake.bonus.get(keys.get(parent), 0.0) if parent else 0.0
            fake.bonus[key] = base + (fake.gain if key.endswith(":r") else 0.0)

    def __call__(self, *args, **kw):
        return self.fake(*args, **kw)

    def layer_weights(self, c, bits):
        return self.fake.layer_weights(c, bits)


@pytest.mark.parametrize("kw, message", [({"recover_epochs": -1}, "recover epochs"),
                                         ({"recover_rounds": 101}, "recover rounds"),
                                         ({"recover_step_epochs": -1}, "recover step epochs"),
                                         ({"recover_lr": 0.0}, "recovery learning rate"),
                                         ({"compress_penalty": -1.0}, "compression penalty")])
def test_bad_recovery_settings_are_named(kw, message):
    with pytest.raises(SlimzipError, match=message):
        SearchConfig(**kw).validate()


def test_sharing_penalty_pulls_kept_weights_towards_shared_values_and_leaves_zeros():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[0].weight[:, :32] = 0  # pruned
    term = sharing_penalty(1.0, bits=2, refresh=1000)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    first = None
    for _ in range(50):
        loss = term(model, None, None, None)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert term(model, None, None, None).item() < 0.5 * first  # the distance to the codebook shrinks
    assert (model[0].weight[:, :32] == 0).all()  # zeros get no gradient from it


@pytest.fixture(scope="module")
def small(tmp_path_factory, data_dir):
    path = tmp_path_factory.mktemp("recovery") / "run"
    assert main(["train", "--model", "lenet-300-100-bn", "--epochs", "1", "--subset", "3000", "--sparsity", "1e-4",
                 "--out", str(path), "--quiet"]) == 0
    return path


def test_real_search_recovers_on_the_whole_training_split_and_ships_the_decoded_accuracy(capsys, small, tmp_path):
    argv = ["compress", str(small), "--max-drop", "3", "--search", "frontier", "--step", "0.4", "--refine", "1",
            "--train-subset", "1000", "--recover-epochs", "1", "--recover-rounds", "1", "--compress-penalty", "0.1",
            "--out", str(tmp_path / "m.slz"), "--quiet", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    cost = first["search"]
    assert cost["recoveries"] >= 1 and cost["recovery_epochs"] == cost["recoveries"]
    assert cost["full_data_epochs"] == pytest.approx(cost["epochs"] * 1000 / 3000 + cost["recovery_epochs"], rel=1e-4)
    assert first["val_accuracy"] >= first["target_accuracy"]
    assert any(c["key"].endswith(":r") for c in first["candidates"])
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "m.slz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == first["test_accuracy"]
    # resumed: nothing trained again, the same file
    db = sqlite3.connect(tmp_path / "m.run" / "journal.sqlite")
    count = db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0] == count
    assert second["file_bytes"] == first["file_bytes"]
    # more rounds in the same run directory: the rounds run are replayed from the journal, the walk goes on
    keys = [k for (k,) in db.execute("SELECT key FROM candidates ORDER BY id")]
    more = [*argv[:argv.index("--recover-rounds") + 1], "2", *argv[argv.index("--recover-rounds") + 2:]]
    assert main(more) == 0
    third = json.loads(capsys.readouterr().out)
    assert [k for (k,) in db.execute("SELECT key FROM candidates ORDER BY id")][:len(keys)] == keys
    assert third["file_bytes"] <= first["file_bytes"] and third["search"]["recoveries"] >= cost["recoveries"]
    longer = [*argv[:argv.index("--recover-epochs") + 1], "2", *argv[argv.index("--recover-epochs") + 2:]]
    assert main(longer) == 2 and "different run" in capsys.readouterr().err  # what a candidate was: refused


class Forced(Recovering):
    """A MACs budget that forces channels out (refused over ``max_macs`` before training), where the
    forced start misses the target until recovery has gained twice."""

    def __init__(self, max_macs, **kw):
        super().__init__(**kw)
        self.max_macs = max_macs

    def accuracy(self, k):
        return BASELINE - 0.03 * k.channel_ratio - 0.02 * max(k.sparsity - 0.8, 0)

    def __call__(self, knobs, parent, **kw):
        if (macs := int(1_000_000 * (1 - knobs.channel_ratio) ** 2)) > self.max_macs:
            e = OverBudgetError(f"over --max-macs {self.max_macs:,} ({macs:,} MACs) before any training")
            e.epochs = 0
            raise e
        return {**super().__call__(knobs, parent, **kw), "macs": macs}


def test_a_forced_start_that_misses_is_recovered_again_while_it_gains(tmp_path):
    result, fake = _run(tmp_path, "frontier", Forced(400_000, gain=0.004), max_macs=400_000, recover_epochs=2,
                        recover_rounds=2)
    chain = [c for c in result.candidates if is_recovery(c)]
    assert len(chain) >= 2 and chain[0].knobs == chain[1].knobs == Knobs(0.375, 0.0)
    assert not chain[0].meets(0.985) and chain[1].meets(0.985) and chain[1].val_accuracy > chain[0].val_accuracy
    assert result.best is not None and result.best.meets(0.985) and result.best.macs <= 400_000


def test_a_recovery_that_gains_nothing_ends_the_stage(tmp_path):
    result, _ = _run(tmp_path, "frontier", Forced(400_000, gain=0.0), max_macs=400_000, recover_epochs=2,
                     recover_rounds=3)
    assert sum(is_recovery(c) for c in result.candidates) == 1 and result.best is None


class LargerRecovered(Recovering):
    """Recovered files are a fifth larger than the proxy's at the same knobs (retrained weights share less
    well), as measured on ResNet-20."""

    def __call__(self, knobs, parent, *, recover=False, **kw):
        out = super().__call__(knobs, parent, recover=recover, **kw)
        return {**out, "file_bytes": int(out["file_bytes"] * 1.2)} if recover else out


def test_the_bits_ladder_also_starts_from_the_smallest_recovered_file(tmp_path):
    """A recovered model is larger than the proxy's files at its knobs but has accuracy to spare: the
    ladder tries it besides the three smallest files."""
    from slimzip.searcher.driver import BITS_CANDIDATES, _smallest_few

    result, fake = _run(tmp_path, "frontier", LargerRecovered(gain=0.004), step=0.2, recover_epochs=3,
                        recover_rounds=0, min_bits=2)
    recovered = sorted((c for c in result.candidates if is_recovery(c) and c.meets(result.target)),
                       key=lambda c: (c.file_bytes, -(c.val_accuracy or 0.0), c.id))
    few = _smallest_few(result.candidates, result.target, BITS_CANDIDATES)
    bases = {int(k.split(":")[0][1:]) for k in fake.calls if ":b" in k}
    assert recovered and recovered[0] not in few  # the three smallest would not have tried it
    assert recovered[0].id in bases and len(bases) == BITS_CANDIDATES + 1
