import json

import pytest
import torch

from slimzip.checkpoint import load_checkpoint, save_checkpoint
from slimzip.errors import SlimzipError
from slimzip.models import create_model


@pytest.mark.parametrize("name", ["lenet-5-bn", "resnet20", "densenet40"])
def test_round_trip_is_bit_identical(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name)
    model(torch.randn(4, *((1, 28, 28) if "lenet" in name else (3, 32, 32))))  # move BN running stats
    save_checkpoint(tmp_path, model, {"name": name, "kwargs": {}}, dataset="x")
    loaded, meta = load_checkpoint(tmp_path)
    assert meta["dataset"] == "x"
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_corrupt_or_foreign_checkpoints_are_user_errors(tmp_path):
    save_checkpoint(tmp_path, create_model("lenet-300-100"), {"name": "lenet-300-100", "kwargs": {}})
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(SlimzipError, match="safetensors"):
        load_checkpoint(tmp_path)
    weights.write_bytes(good)
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "model": {"name": "lenet-5", "kwargs": {}}}))
    with pytest.raises(SlimzipError, match="do not fit"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(SlimzipError, match="version"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(SlimzipError, match="corrupt"):
        load_checkpoint(tmp_path)


def test_settings_added_later_match_only_at_their_default():
    from slimzip.settings import same_settings

    saved = {"model": "m", "search": {"step": 0.1}}  # written before 'short_epochs' existed
    defaults = {"search": {"step": 0.1, "short_epochs": 0.5}}
    assert same_settings(saved, {"model": "m", "search": {"step": 0.1, "short_epochs": 0.5}}, defaults)
    assert not same_settings(saved, {"model": "m", "search": {"step": 0.1, "short_epochs": 0.25}}, defaults)
    assert not same_settings(saved, {"model": "m", "search": {"step": 0.2, "short_epochs": 0.5}}, defaults)
    assert not same_settings(saved, {"model": "m", "search": {"step": 0.1, "new": 1}}, defaults)
    assert not same_settings({**saved, "gone": 1}, {"model": "m", "search": {"step": 0.1}}, defaults)
    assert not same_settings(None, {"model": "m"}, defaults)
