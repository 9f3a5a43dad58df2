"""Per-layer channel ratios from a sensitivity profile (``--channel-scope sensitivity``): the allocation
spends the ratio on the least sensitive layers, removes what was asked, and the search and the fixed-knob
pipeline both use it (the profile made once, counted in the cost, read back on resume)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import slimzip
from slimzip.errors import SlimzipError
from slimzip.models import create_model
from slimzip.searcher import SearchConfig
from slimzip.structured import LEVELS, ChannelPruner, Sensitivity, allocate, layer_profile, sensitivity_pruner, widths

from test_any_model import _data

BASE = 0.99
WIDTHS = {"robust": 500, "fragile": 50}
PROFILE = {"robust": [0.99] * 8 + [0.98, 0.95], "fragile": [0.99, 0.97, 0.9] + [0.5] * 7}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 0.8, 0.86, 0.9])
def test_allocation_removes_the_ratio_from_the_least_sensitive_layer_first(ratio):
    shares = allocate(BASE, PROFILE, WIDTHS, ratio)
    removed = sum(shares[g] * WIDTHS[g] for g in WIDTHS)
    assert removed == pytest.approx(ratio * sum(WIDTHS.values()), abs=1.0)
    assert all(0.0 <= s <= LEVELS[-1] for s in shares.values())
    if ratio <= 0.7:  # the robust layer alone loses up to 80% (400 channels) at no cost: the fragile one waits
        assert shares["fragile"] <= 0.1 + 1e-9 and shares["robust"] == pytest.approx(ratio * 550 / 500, abs=0.01)
    assert allocate(BASE, PROFILE, WIDTHS, min(ratio + 0.05, 0.9))["fragile"] >= shares["fragile"]  # monotone


def test_a_ratio_beyond_the_last_level_leaves_every_layer_there():
    assert allocate(BASE, PROFILE, WIDTHS, 0.99) == {"robust": LEVELS[-1], "fragile": LEVELS[-1]}


def test_a_score_that_rises_with_pruning_does_not_undo_the_order():
    noisy = {"a": [0.9, 0.95, 0.7] + [0.6] * 7, "b": [0.9] * 10}
    shares = allocate(0.9, noisy, {"a": 10, "b": 10}, 0.3)
    assert shares["b"] > shares["a"]


def test_layer_ratios_prune_each_group_by_its_own_share():
    model = create_model("lenet-5-bn").eval()
    pruner = ChannelPruner(scope="layer", layer_ratios={"features.0": 0.5, "features.4": 0.2, "features.9": 0.9})
    narrowed = pruner.fit_transform(model, (1, 28, 28))
    got = widths(narrowed)
    assert (got["features.0"], got["features.4"], got["features.9"]) == (10, 40, 50)


def test_profile_scores_every_group_at_every_level_and_leaves_the_model_alone():
    model, shape = create_model("lenet-5-bn").eval(), (1, 28, 28)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def score(m):
        seen.append(sum(widths(m).values()))
        return 1.0 - 1e-4 * (sum(widths(m).values()) == 580)  # any function of the model
    s = layer_profile(model, shape, score, ChannelPruner(scope="layer"))
    assert s.widths == {"features.0": 20, "features.4": 50, "features.9": 500}
    assert {k: len(v) for k, v in s.profile.items()} == {k: len(LEVELS) for k in s.widths}
    assert len(seen) == 1 + 3 * len(LEVELS) and seen[0] == 580 and min(seen[1:]) < 580
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = Sensitivity.from_json(json.loads(json.dumps(s.__dict__)))
    assert again == s
    pruner = sensitivity_pruner(ChannelPruner(scope="layer"), s, 0.5).fit(model, shape)
    assert set(pruner.layer_ratios) == set(s.widths) and pruner.base_widths == s.widths


def test_search_with_sensitivity_profiles_once_counts_it_and_resumes(tmp_path):
    from foreign import FOREIGN

    torch.manual_seed(0)
    model = FOREIGN["resnet18ish"](num_classes=4)  # a residual model slimzip does not ship, with BatchNorm
    cfg = SearchConfig(strategy="grid", step=0.5, max_channel_ratio=0.5, max_sparsity=0.5, prune_steps=1,
                       finetune_epochs=0, centroid_epochs=0, channel_scope="sensitivity", calibration_images=64,
                       min_bits=0)
    run = dict(target_accuracy=0.0, config=cfg, run_dir=tmp_path / "run", verbose=False)
    result = slimzip.search(model, _data(256), _data(128, seed=1), **run)
    saved = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    assert saved["epochs"] > 0 and set(saved["profile"]) == set(saved["widths"])
    assert result.search["setup_epochs"] == pytest.approx(saved["epochs"], abs=1e-6)
    assert result.search["epochs"] >= result.search["setup_epochs"]
    (tmp_path / "run" / "sensitivity.json").write_text(json.dumps({**saved, "epochs": 123.0}))
    again = slimzip.search(model, _data(256), _data(128, seed=1), **run)  # resumed: the profile read back
    assert again.data == result.data and again.search["setup_epochs"] == 123.0
    (tmp_path / "run" / "sensitivity.json").write_text('{"base": 0.5}')
    with pytest.raises(SlimzipError, match="not a layer profile"):
        slimzip.search(model, _data(256), _data(128, seed=1), **run)
