"""Patterns from the model zoos people bring (timm, torchvision), each written in a few layers so no zoo is
needed here: graphs holding timm's shape assertions, torchvision's stochastic depth and module names with a
'-'; a weight-standardised conv with a per-channel gain; a block that splits its channels by a stored
size; a layer whose state-dict loading insists on a version; a model whose channels cannot be traced."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

import slimzip
from slimzip.errors import SlimzipError
from slimzip.errors import NarrowingError, SlimzipError
from slimzip.searcher import SearchConfig
from slimzip.structured import ChannelPruner, apply_plan

SHAPE = (3, 16, 16)


def _data(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, *SHAPE, generator=g) * 0.5
    x[torch.arange(n), y % 3] += 0.5
    return x, y


def stochastic_depth(input, p, mode, training=True):  # torchvision.ops.stochastic_depth, as fx sees it
    return input if not training or p == 0 else input * (torch.rand(input.shape[0], 1, 1, 1) > p) / (1 - p)


stochastic_depth.__module__ = "torchvision.ops.stochastic_depth"
torch.fx.wrap("stochastic_depth")


class ZooNet(nn.Module):
    """timm's ``torch._assert``, torchvision's stochastic depth, a module named with a '-'."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.add_module("stem-conv", nn.Conv2d(3, 16, 3, padding=1, bias=False))
        self.bn = nn.BatchNorm2d(16)
        self.conv, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        torch._assert(x.shape[1] == 3, "want RGB")
        y = F.relu(self.bn(getattr(self, "stem-conv")(x)))
        y = y + stochastic_depth(F.relu(self.bn2(self.conv(y))), 0.1, "row", self.training)
        return self.fc(y.mean((2, 3)))


class StdConv(nn.Conv2d):
    """A weight-standardised convolution with a per-output-channel gain (NFNet style)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0)
        return F.conv2d(x, self.gain * w.reshape_as(self.weight), self.bias, self.stride, self.padding)


class GainNet(nn.Module):
    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.a, self.bn = StdConv(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.b, self.bn2 = nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(F.relu(self.bn2(self.b(F.relu(self.bn(self.a(x)))))).mean((2, 3)))


class CrossStage(nn.Module):
    """A cross-stage-partial block: splits its input by a channel count kept in an attribute."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.split_at = 8
        self.part, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        y = F.relu(self.bn(self.stem(x)))
        a, b = y[:, :self.split_at], y[:, self.split_at:]
        return self.fc(torch.cat([a, F.relu(self.bn2(self.part(b)))], 1).mean((2, 3)))


class Versioned(nn.Module):
    """A layer whose state-dict loading insists on its version (MNASNet's does)."""

    _version = 2

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, num_classes)

    def _load_from_state_dict(self, state, prefix, metadata, *args):
        if metadata.get("version") not in (1, 2):
            raise ValueError(f"version should be set to 1 or 2 instead of {metadata.get('version')}")
        super()._load_from_state_dict(state, prefix, metadata, *args)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).mean((2, 3)))


def _compress(model, tmp_path, **kw):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return slimzip.compress(model, _data(128), _data(64, 1), epochs=0.25, prune_steps=1, verbose=False,
                                out=tmp_path / "m.slz", **{"channel_ratio": 0.25, "sparsity": 0.5, **kw})


def test_zoo_idioms_keep_their_graph_and_reload_identically_in_a_fresh_process(tmp_path):
    result = _compress(ZooNet(), tmp_path)
    x = torch.rand(2, *SHAPE)
    torch.save(x, tmp_path / "x.pt")
    want = result.model.eval()(x)
    code = (f"import torch, slimzip; m = slimzip.load({str(tmp_path / 'm.slz')!r}); "
            f"print(repr((m(torch.load({str(tmp_path / 'x.pt')!r})) ).flatten().tolist()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    from slimzip.container import read_container

    assert "graph" in read_container(tmp_path / "m.slz").manifest["model"]  # loads without this module's code
    assert torch.tensor(eval(out)).allclose(want.flatten().detach(), atol=1e-5)


def test_a_layer_with_its_own_per_channel_parameter_is_left_whole_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="per-channel tensors of its own"):
        pruner = ChannelPruner(channel_ratio=0.5).fit(GainNet(), SHAPE)
    assert "a" not in pruner.plan_ and "b" in pruner.plan_
    assert _compress(GainNet(), tmp_path).model(torch.rand(1, *SHAPE)).shape == (1, 4)


def test_narrowing_that_breaks_a_stored_split_size_is_one_line_and_a_failed_candidate(tmp_path):
    model = CrossStage()
    pruner = ChannelPruner(channel_ratio=0.5, scope="layer").fit(model, SHAPE)
    with pytest.raises(NarrowingError, match="removing channels broke the model"):
        apply_plan(model, pruner.plan_, SHAPE)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = slimzip.search(CrossStage(), _data(128), _data(64, 1), max_drop=30.0, verbose=False,
                                config=SearchConfig(strategy="frontier", step=0.5, refine=0, short_epochs=0.0,
                                                    min_bits=0, centroid_epochs=0))
    failed = [c for c in result.candidates if c["status"] == "failed"]
    assert failed and all("broke the model" in c["error"] for c in failed)
    assert result.knobs["channel_ratio"] == 0 and result.knobs["sparsity"] > 0


def test_unstructured_compression_needs_no_channel_tracing(tmp_path, monkeypatch):
    import slimzip.structured.groups as groups

    def untraceable(*_a, **_k):
        raise SlimzipError("cannot trace the model for channel pruning (ZeroDivisionError)")
    monkeypatch.setattr(groups, "dependency_graph", untraceable)
    result = _compress(GainNet(), tmp_path, channel_ratio=0.0)
    assert result.sparsity > 0.3 and (tmp_path / "m.slz").is_file()


def test_loading_into_a_class_whose_layers_want_their_version(tmp_path):
    model = Versioned()
    _compress(model, tmp_path, channel_ratio=0.0)
    loaded = slimzip.load(tmp_path / "m.slz", model=Versioned())
    assert loaded(torch.rand(1, *SHAPE)).shape == (1, 4)


def test_the_tracing_time_limit_holds_where_one_group_is_tolerated(monkeypatch):
    """Grouping tolerates one group Torch-Pruning cannot form (``except Exception``) but not the time
    limit: a grouping search that runs long is stopped and refused in one line, not run group after
    group for ever (timm's ReXNet took over 10 minutes)."""
    import time

    import slimzip.structured.groups as groups

    def slow(self, *args, **kwargs):
        time.sleep(0.3)
        raise RuntimeError("a group Torch-Pruning cannot form")

    monkeypatch.setattr(groups.tp.DependencyGraph, "get_pruning_group", slow)
    model = torch.nn.Sequential(*[torch.nn.Conv2d(4, 4, 3, padding=1) for _ in range(12)], torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 3))
    t0 = time.perf_counter()
    graph = groups.dependency_graph(model, torch.zeros(1, 4, 8, 8))
    names = {m: n for n, m in model.named_modules()}
    with pytest.raises(SlimzipError, match="took over 0.5 s"):
        groups._traced(lambda: groups._all_groups(graph, [], {}, names), 0.5)
    assert time.perf_counter() - t0 < 2.0
