"""Every registered model: it builds, runs, and (where the literature gives them) its size and cost match."""

import pytest
import torch
from torch import nn

from slimzip.data import get_dataset_spec
from slimzip.measure import measure
from slimzip.models import MODELS, create_model
from slimzip.errors import SlimzipError

# REFERENCE.md section 5 as printed: (params, MACs), with the number of significant digits printed.
# A count passes if within 1% of the printed figure, or if it rounds to the printed figure
# (ResNet-20's 40.55M MACs is "41M" in the table, 1.1% off the rounded figure).
TABLE = {
    "vgg19": ("20.04M", "398M"),
    "vgg16-li": ("14.99M", "313M"),
    "preresnet164": ("1.70M", "248M"),
    "resnet56": ("0.85M", "125M"),
    "resnet20": ("0.27M", "41M"),
    "densenet40": ("1.06M", "283M"),
    "lenet-5": ("431K", "2.3M"),
    "lenet-300-100": ("266K", "0.27M"),
}


def _close(value: int, printed: str) -> bool:
    scale = {"K": 1e3, "M": 1e6}[printed[-1]]
    number = float(printed[:-1])
    decimals = len(printed[:-1].split(".")[1]) if "." in printed else 0
    return abs(value - number * scale) <= 0.01 * number * scale or round(value / scale, decimals) == number


@pytest.mark.parametrize("name", sorted(TABLE))
def test_params_and_macs_match_the_literature(name):
    cost = measure(create_model(name), get_dataset_spec(MODELS[name].dataset).image_shape)
    params, macs = TABLE[name]
    assert _close(cost.params, params), (cost.params, params)
    assert _close(cost.macs, macs), (cost.macs, macs)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_runs_and_trains_a_step(name):
    spec = get_dataset_spec(MODELS[name].dataset)
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, *spec.image_shape)
    out = model(x)
    assert out.shape == (2, spec.num_classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    cost = measure(model, spec.image_shape)
    assert cost.params == _params_by_hand(model)
    assert cost.macs == cost.nonzero_macs > 0


@pytest.mark.parametrize("name", ["vgg11", "resnet20", "densenet40", "lenet-5-bn"])
def test_bn_init_sets_every_scale(name):
    model = create_model(name, bn_init=0.5)
    scales = [m.weight for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert scales and all(torch.all(s == 0.5) for s in scales)


def test_num_classes_and_unknown_names():
    assert create_model("vgg11", num_classes=100)(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(SlimzipError, match="unknown model"):
        create_model("vgg99")
    with pytest.raises(SlimzipError, match="num_classes"):
        create_model("vgg11", num_classes=1)


def test_nonzero_macs_count_only_nonzero_weights():
    model = create_model("lenet-300-100")
    with torch.no_grad():
        model.classifier.weight.zero_()
    cost = measure(model, (1, 28, 28))
    assert cost.macs - cost.nonzero_macs == 100 * 10


def _params_by_hand(model: nn.Module) -> int:
    """Parameters from the layers' shapes alone (not by walking ``parameters()``, as ``measure`` does)."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            total += m.out_channels * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            total += m.out_channels if m.bias is not None else 0
        elif isinstance(m, nn.Linear):
            total += m.out_features * m.in_features + (m.out_features if m.bias is not None else 0)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            total += 2 * m.num_features
        else:
            assert not list(m.parameters(recurse=False)), f"a layer type this count does not know: {type(m)}"
    return total
