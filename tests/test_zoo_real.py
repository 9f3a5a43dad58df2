"""The real model zoos, where they import (skipped otherwise: CI needs neither timm nor torchvision).
A few families that carry the patterns slimzip had to learn (a stochastic-depth block, a channel
shuffle, a versioned state dict, SE gates, timm's tied inner BN scales) go through the public API at
random init on a few 32x32 images: the file compresses, holds its graph, and reloads to the same outputs
without the family's code."""

from __future__ import annotations

import pytest
import torch

import slimzip

FAMILIES = {"tv:mobilenet_v3_small": ("torchvision", "mobilenet_v3_small"),
            "tv:efficientnet_b0": ("torchvision", "efficientnet_b0"),
            "tv:shufflenet_v2_x0_5": ("torchvision", "shufflenet_v2_x0_5"),
            "tv:mnasnet0_5": ("torchvision", "mnasnet0_5"),
            "timm:resnet18d": ("timm", "resnet18d"), "timm:seresnet18": ("timm", "seresnet18")}


def _torchvision():
    """torchvision, or None (not installed, or a build that does not import beside this torch)."""
    from slimzip.models.user import import_torchvision

    try:
        return import_torchvision()
    except Exception:
        return None


def _build(library: str, name: str) -> torch.nn.Module:
    torchvision = _torchvision()  # first: timm imports it too, and needs slimzip's fallback to
    if library == "timm":
        timm = pytest.importorskip("timm")
        return timm.create_model(name, pretrained=False, num_classes=4)
    if torchvision is None:
        pytest.skip("torchvision does not import here")
    return getattr(torchvision.models, name)(num_classes=4)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_real_family_compresses_into_a_file_that_reloads_without_its_code(family, tmp_path):
    model = _build(*FAMILIES[family]).eval()
    out = tmp_path / "m.slz"
    result = slimzip.compress(model, _data(64, 0), _data(32, 1), sparsity=0.5, epochs=0, prune_steps=1, out=out,
                              verbose=False)
    loaded = slimzip.load(out)  # no family code: the file holds the graph
    x = _data(4, 2)[0]
    with torch.no_grad():
        want, got = result.model.eval()(x), loaded.eval()(x)
    assert torch.allclose(want, got, rtol=1e-4, atol=1e-5 * max(1.0, want.abs().max().item()))
    assert result.file_bytes == out.stat().st_size
