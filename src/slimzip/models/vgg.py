"""VGG for CIFAR in network slimming's layout (Liu et al., ICCV 2017; Simonyan and Zisserman 2015),
and the VGG-16 of Li et al. ("Pruning Filters for Efficient ConvNets", ICLR 2017) with its FC-512 head.

Slimming layout: conv3x3 (no bias) + BN + ReLU per width, 2x2 max pool at each 'M', then a 2x2 average
pool and a single Linear. Li et al.: the same VGG-16 trunk with a final max pool, then
Linear(512, 512) + BN + ReLU + Linear(512, classes).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

M = "M"  # a 2x2 max pool in a layer list
CFGS: dict[int, list[int | str]] = {
    11: [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512],
    13: [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512],
    16: [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512],
    19: [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512],
}


def make_features(cfg: list[int | str], in_channels: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == M:
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(in_channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """A VGG trunk, a pool, and a classifier head (one Linear, or Li et al.'s FC-512 head)."""

    def __init__(self, cfg: list[int | str], num_classes: int = 10, head: str = "slimming"):
        super().__init__()
        self.features = make_features(cfg)
        width = [v for v in cfg if v != M][-1]
        if head == "slimming":
            self.pool = nn.AvgPool2d(2)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width, num_classes))
        else:  # "li": the trunk ends at 2x2, one more max pool leaves 1x1
            self.pool = nn.MaxPool2d(2)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width, 512), nn.BatchNorm1d(512),
                                            nn.ReLU(inplace=True), nn.Linear(512, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def _register(depth: int) -> None:
    @register_model(f"vgg{depth}", "cifar10", f"VGG-{depth}, network slimming's CIFAR layout (Liu et al. 2017)")
    def factory(num_classes: int = 10) -> VGG:
        return VGG(CFGS[depth], num_classes)


for _depth in CFGS:
    _register(_depth)


@register_model("vgg16-li", "cifar10", "Li et al. ICLR 2017 (VGG-16 with BN and an FC-512 head)")
def vgg16_li(num_classes: int = 10) -> VGG:
    return VGG(CFGS[16], num_classes, head="li")
