import json

import pytest

from slimzip.api import dropnet
from slimzip.errors import SlimzipError


def _run(tmp_path, name="run", **kw):
    args = dict(metric="min_layer", fraction=0.25, stop_remaining=0.5, subset=1000,
                overrides={"epochs": 2, "batch_size": 100}, verbose=False)
    return dropnet("dropnet-a", None, tmp_path / name, **{**args, **kw})


def test_cycles_shrink_by_the_fraction_and_resume_exactly(data_dir, tmp_path):
    rows = _run(tmp_path)["cycles"]
    remaining = [r["remaining"] for r in rows]
    assert remaining[0] == 1.0 and remaining[-1] <= 0.5 < remaining[-2]
    assert all(b < a for a, b in zip(remaining, remaining[1:]))
    assert all(b["params"] < a["params"] for a, b in zip(rows, rows[1:]))
    journal = tmp_path / "run" / "cycles.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-1]) + "\n")  # as if killed during the last cycle
    again = _run(tmp_path)["cycles"]
    assert again == rows  # the same cycle, retrained from the same start, gives the same numbers
    assert len(journal.read_text().splitlines()) == len(lines)


@pytest.mark.parametrize("bad, message", [(dict(metric="median"), "unknown DropNet metric"),
                                          (dict(fraction=1.0), "fraction"), (dict(reset="warm"), "unknown reset")])
def test_bad_settings(data_dir, tmp_path, bad, message):
    with pytest.raises(SlimzipError, match=message):
        _run(tmp_path, **bad)


@pytest.mark.parametrize("reset", ["none", "random"])
def test_other_resets_run(data_dir, tmp_path, reset):
    rows = _run(tmp_path, reset=reset, metric="random")["cycles"]
    assert len(rows) >= 2 and json.loads(json.dumps(rows)) == rows
    assert all(b["remaining"] < a["remaining"] for a, b in zip(rows, rows[1:]))  # each cycle drops units


def test_oracle_drops_the_unit_whose_removal_costs_least():
    import copy

    import torch
    import torch.nn.functional as F
    from torch import nn

    from slimzip.structured.dropnet import oracle_plan
    from slimzip.structured import apply_plan, channel_groups

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    x, y = torch.randn(64, 1, 4, 4), torch.randint(0, 3, (64,))
    groups, _ = channel_groups(model, (1, 4, 4))
    full = {"1": list(range(8)), "3": list(range(6))}

    def loss_narrowed(root, unit):  # the unit physically removed
        plan = {**full, root: [k for k in full[root] if k != unit]}
        return F.cross_entropy(apply_plan(copy.deepcopy(model), plan, (1, 4, 4))(x), y).item()

    losses = {(r, u): loss_narrowed(r, u) for r, units in full.items() for u in units}
    root, unit = min(losses, key=losses.get)
    plan = oracle_plan(model, groups, (1, 4, 4), [(x[:32], y[:32]), (x[32:], y[32:])], count=1)
    assert plan == {**full, root: [k for k in full[root] if k != unit]}
    assert all(len(kept) == 1 for kept in oracle_plan(model, groups, (1, 4, 4), [(x, y)], count=20).values())


def test_oracle_metric_runs_in_the_loop(data_dir, tmp_path):
    rows = _run(tmp_path, metric="oracle", oracle_images=200)["cycles"]
    assert rows[-1]["remaining"] <= 0.5 and all(b["params"] < a["params"] for a, b in zip(rows, rows[1:]))


def test_glorot_init_is_keras_s_default(data_dir, tmp_path):
    from safetensors.torch import load_file

    _run(tmp_path, metric="random", init="glorot")
    theta0 = load_file(tmp_path / "run" / "theta0.safetensors")
    w = theta0["features.1.weight"]
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert all(v.abs().sum() == 0 for k, v in theta0.items() if k.endswith("bias"))
    with pytest.raises(SlimzipError, match="unknown init"):
        _run(tmp_path, name="bad", init="he")


@pytest.mark.parametrize("kappa", [0.0, 0.999])
def test_the_run_directory_is_a_checkpoint_of_the_chosen_cycle(capsys, data_dir, tmp_path, kappa):
    """Without kappa the last cycle, with it the last one above kappa x the first: `eval`, `compress`,
    `export` and `prune-channels` take the directory like any checkpoint."""
    from slimzip.cli import main

    r = _run(tmp_path, kappa=kappa, stop_remaining=0.5 if not kappa else 0.1)
    rows, chosen = r["cycles"], r["checkpoint"]
    bound = kappa * rows[0]["val_accuracy"]
    want = len(rows) - 1 if not kappa else max(i for i, c in enumerate(rows) if i == 0 or c["val_accuracy"] >= bound)
    assert chosen["cycle"] == want
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0  # pixels in [0, 1], as DropNet trained
    assert json.loads(capsys.readouterr().out)["accuracy"] == chosen["test_accuracy"]
