"""Models slimzip's registry does not have (tests/foreign.py): prune, compress, write, decode in a fresh
process that never imports their code, and search; and the graph reader's refusals."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings

import pytest
import torch

import slimzip
from slimzip.deep_compression import CompressConfig
from slimzip.container import decode_container, encode_container
from slimzip.errors import SlimzipError
from slimzip.graph import GraphError, build, describe
from slimzip.searcher import SearchConfig
from slimzip.structured import ChannelPruner, apply_plan, plan_cost, zero_channels_hooks
from slimzip.measure import measure

from foreign import FOREIGN, Untraceable

SHAPE = (3, 32, 32)
TOLERANCE = 1e-5  # max |fresh-process output - in-process output|, relative to the largest logit


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is readable from their mean colour, so a few steps of training learn something."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, *SHAPE, generator=g) * 0.5
    x[torch.arange(n), y % 3] += 0.5
    return x, y


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_structured_pruning_equals_zeroing_the_removed_channels(name):
    torch.manual_seed(0)
    model = FOREIGN[name](num_classes=4).eval()
    for m in model.modules():  # distinct BN scales, so slimming's threshold is not a tie
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.1, 1.0)
    pruner = ChannelPruner(importance="bn_scale", channel_ratio=0.4).fit(model, SHAPE)
    assert pruner.plan_, f"{name}: no group could be pruned"
    x = torch.randn(4, *SHAPE)
    reference = copy.deepcopy(model)
    zero_channels_hooks(reference, pruner.plan_, SHAPE)
    want = reference(x)
    narrowed = apply_plan(copy.deepcopy(model), pruner.plan_, SHAPE).eval()
    assert (narrowed(x) - want).abs().max() <= 1e-5 * (1 + want.abs().max())
    cost = measure(narrowed, SHAPE)
    assert plan_cost(model, pruner.plan_, SHAPE) == (cost.params, cost.macs)


def test_groups_without_batchnorm_fall_back_and_shuffles_are_skipped():
    pruner = ChannelPruner(importance="bn_scale", channel_ratio=0.5).fit(FOREIGN["senet"](), SHAPE)
    assert set(pruner.criteria_.values()) == {"bn_scale", "l1"}  # the SE MLP has no BatchNorm
    with pytest.warns(UserWarning, match="channel shuffle"):
        ChannelPruner(channel_ratio=0.5).fit(FOREIGN["shufflenetish"](), SHAPE)
    with pytest.warns(UserWarning, match="LayerNorm"):
        ChannelPruner(channel_ratio=0.5).fit(FOREIGN["convnextish"](), SHAPE)


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_compressed_file_decodes_in_a_fresh_process_without_the_model_code(name, tmp_path):
    torch.manual_seed(0)
    model = FOREIGN[name](num_classes=4)
    train, val = _data(256), _data(128, seed=1)
    out = tmp_path / f"{name}.slz"
    result = slimzip.compress(model, train, val, channel_ratio=0.25, sparsity=0.7, epochs=0.25, prune_steps=1,
                              out=out, verbose=False)
    assert out.read_bytes() == result.data and result.file_bytes == out.stat().st_size
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(5))
    want = result.model(x)
    torch.save(x, tmp_path / "x.pt")
    script = ("import sys, torch, slimzip; m = slimzip.load(sys.argv[1]); "
              "x = torch.load(sys.argv[2]); assert 'foreign' not in sys.modules; "
              "print(m(x).tolist())")
    run = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "x.pt")], capture_output=True,
                         text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stderr
    got = torch.tensor(json.loads(run.stdout))
    assert (got - want).abs().max() <= TOLERANCE * (1 + want.abs().max())
    again = slimzip.load(out, model=FOREIGN[name](num_classes=4))  # the user's own class, narrowed
    assert type(again) is FOREIGN[name]
    assert (again(x) - want).abs().max() <= TOLERANCE * (1 + want.abs().max())


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_two_candidate_search_on_a_user_model(name, tmp_path):
    torch.manual_seed(0)
    model = FOREIGN[name](num_classes=4)
    cfg = SearchConfig(strategy="grid", step=0.5, max_channel_ratio=0.5, max_sparsity=0.5, prune_steps=1,
                       finetune_epochs=0, centroid_epochs=0)
    result = slimzip.search(model, _data(256), _data(128, seed=1), _data(128, seed=2), target_accuracy=0.0,
                            config=cfg, run_dir=tmp_path / "run", out=tmp_path / "w.slz", verbose=False)
    assert result.search["candidates"] >= 2
    assert result.path.read_bytes() == result.data
    assert result.test_accuracy is not None and 0.0 <= result.test_accuracy <= 1.0
    again = slimzip.search(model, _data(256), _data(128, seed=1), _data(128, seed=2), target_accuracy=0.0,
                           config=cfg, run_dir=tmp_path / "run", verbose=False)  # resumed: nothing run again
    assert again.data == result.data and again.search["candidates"] == result.search["candidates"]


def test_untraceable_model_still_compresses_and_loads_into_its_class(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(GraphError, match="trace"):
        describe(Untraceable(), SHAPE)
    model = Untraceable()
    out = tmp_path / "u.slz"
    slimzip.compress(model, _data(64), _data(64, seed=1), sparsity=0.5, epochs=0, prune_steps=1, out=out,
                     verbose=False)
    with pytest.raises(SlimzipError, match="model=YourModel"):
        slimzip.load(out)
    assert isinstance(slimzip.load(out, model=Untraceable()), Untraceable)


def _with_graph(path, edit) -> bytes:
    container = decode_container(path.read_bytes())
    manifest = dict(container.manifest)
    edit(manifest["model"]["graph"])
    return encode_container(manifest, container.sections)


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["nodes"][1].update(target="os.system", op="call_function"), "not one a .slz graph allows"),
    (lambda g: g["nodes"][1].update(target="__class__", op="call_method"), "not one a .slz graph allows"),
    (lambda g: g["layers"].update({"stem": {"type": "Conv2d", "args": {"bad": 1}}}), "arguments"),
    (lambda g: g["layers"].update({"__init__": {"type": "ReLU", "args": {}}}), "bad attribute path"),
    (lambda g: g["layers"].update({"huge": {"type": "Linear", "args": {"in_features": 1 << 24,
                                                                        "out_features": 1 << 24, "bias": True}}}),
     "elements"),
    (lambda g: g["layers"].update({"x": {"type": "subprocess.Popen", "args": {}}}), "not one a .slz graph allows"),
])
def test_a_graph_naming_what_the_reader_does_not_allow_is_refused(tmp_path, edit, message):
    torch.manual_seed(0)
    out = tmp_path / "m.slz"
    slimzip.compress(FOREIGN["senet"](num_classes=4), _data(64), _data(64, seed=1), sparsity=0.5, epochs=0,
                     prune_steps=1, out=out, verbose=False)
    bad = tmp_path / "bad.slz"
    bad.write_bytes(_with_graph(out, edit))
    with pytest.raises(SlimzipError, match=message):
        slimzip.load(bad)
    cli = subprocess.run([sys.executable, "-m", "slimzip", "inspect", str(bad)], capture_output=True, text=True,
                         timeout=120)
    if cli.returncode != 0:  # inspect reads the tensor table only; eval rebuilds the model
        assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1


def test_graph_round_trip_keeps_state_names():
    model = FOREIGN["convnextish"]()
    rebuilt = build(describe(model, SHAPE))
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    assert CompressConfig().validate()


def test_datasets_dataloaders_and_tensors_are_the_same_data():
    from torch.utils.data import DataLoader, TensorDataset

    from slimzip.core import as_loader

    x, y = _data(50)
    for data in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=7), (x, y)):
        loader = as_loader(data, train=False)
        assert torch.equal(loader.x, x) and torch.equal(loader.y, y)
    with pytest.raises(SlimzipError, match="Dataset"):
        as_loader([1, 2, 3], train=True)
    with pytest.raises(SlimzipError, match="labels"):
        as_loader((x, -y - 1), train=True)


def test_python_train_then_search_from_a_dataloader(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = slimzip.train(FOREIGN["senet"](num_classes=4), DataLoader(TensorDataset(*_data(256)), batch_size=64),
                          _data(128, seed=1), epochs=2, lr=0.05, verbose=False)
    cfg = SearchConfig(strategy="heuristic", step=0.5, refine=0, finetune_epochs=0, centroid_epochs=0)
    result = slimzip.search(model, _data(256), _data(128, seed=1), max_drop=100.0, config=cfg, verbose=False)
    assert result.path is None and result.file_bytes == len(result.data) > 0
    assert result.val_accuracy >= result.target_accuracy


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimzip", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def _png_folder(root, sizes=((8, 8),), classes=2, per_class=6, mode="RGB"):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                w, h = sizes[i % len(sizes)]
                pixels = (torch.rand(h, w, 3, generator=g) * 100 + 120 * c).clamp(0, 255).byte().numpy()
                Image.fromarray(pixels if mode == "RGB" else pixels[:, :, 0]).save(d / f"{i}.png")
    return root


FACTORY = '''
from torch import nn
def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
def not_a_model(num_classes=10):
    return 42
'''


def test_cli_user_model_on_an_image_folder_end_to_end(tmp_path):
    folder = _png_folder(tmp_path / "png")
    (tmp_path / "user_net.py").write_text(FACTORY)
    run = _cli("train", "--model", "user_net.py:tiny", "--dataset", f"imagefolder:{folder}", "--epochs", "2",
               "--out", "ck", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    run = _cli("compress", "ck", "--target-accuracy", "0", "--search", "heuristic", "--step", "0.5", "--refine", "0",
               "--out", "m.slz", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    manifest = decode_container((tmp_path / "m.slz").read_bytes()).manifest
    assert "graph" in manifest["model"] and len(manifest["data"]["stats"]["mean"]) == 3  # normalisation recorded
    (tmp_path / "user_net.py").unlink()  # the file must not be needed any more
    run = _cli("eval", "m.slz", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["accuracy"] == pytest.approx(result["test_accuracy"])


@pytest.mark.parametrize("model, layout, message", [
    ("missing.py:tiny", "ok", "no such file"),
    ("user_net.py:nope", "ok", "no callable"),
    ("user_net.py:not_a_model", "ok", "not a torch nn.Module"),
    ("no_such_package_xyz:f", "ok", "cannot import"),
    ("user_net.py:tiny", "empty", "no images"),
    ("user_net.py:tiny", "mixed", "mixed image sizes"),
    ("user_net.py:tiny", "unreadable", "not a readable image"),
])
def test_cli_bad_user_models_and_folders_are_one_line_errors(tmp_path, model, layout, message):
    (tmp_path / "user_net.py").write_text(FACTORY)
    folder = tmp_path / "png"
    if layout == "ok":
        _png_folder(folder)
    elif layout == "mixed":
        _png_folder(folder, sizes=((8, 8), (9, 8)))
    elif layout == "unreadable":
        _png_folder(folder)
        (folder / "train" / "class0" / "0.png").write_bytes(b"not a png")
    else:
        (folder / "a").mkdir(parents=True)
        (folder / "b").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    run = _cli("train", "--model", model, "--dataset", f"imagefolder:{folder}", "--out", "ck", cwd=tmp_path)
    assert run.returncode == 2 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "__pycache__" not in str(p)) == \
        [p for p in before if "__pycache__" not in str(p)]


def test_fit_takes_a_torch_dataloader_directly():
    from torch.utils.data import DataLoader, TensorDataset

    from slimzip.trainer import TrainConfig, fit

    torch.manual_seed(0)
    model = FOREIGN["senet"](num_classes=4)
    state = fit(model, DataLoader(TensorDataset(*_data(64)), batch_size=16), _data(32, seed=1),
                TrainConfig(epochs=2, batch_size=16, lr=0.05), verbose=False)
    assert len(state.history) == 2 and all(0.0 <= row["val_acc"] <= 1.0 for row in state.history)
