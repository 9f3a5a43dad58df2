"""LeNet-300-100 and LeNet-5 (LeCun et al. 1998, as used by Han et al. "Deep Compression", ICLR 2016),
plus the MLP 784-500-300-10 that network slimming prunes on MNIST (Liu et al., ICCV 2017).

The ``-bn`` variants put BatchNorm after every hidden layer, so network slimming has scales to prune.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model


class MLP(nn.Module):
    """Flatten, then Linear(+BN)+ReLU per hidden width, then a Linear classifier."""

    def __init__(self, hidden: tuple[int, ...], in_features: int = 784, num_classes: int = 10, bn: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            norm = [nn.BatchNorm1d(width)] if bn else []
            layers += [nn.Linear(in_features, width), *norm, nn.ReLU(inplace=True)]
            in_features = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """Caffe's LeNet-5: conv5x5(20), pool, conv5x5(50), pool, fc500, fc10."""

    def __init__(self, num_classes: int = 10, bn: bool = False):
        super().__init__()

        def conv(cin: int, cout: int) -> list[nn.Module]:
            norm = [nn.BatchNorm2d(cout)] if bn else []
            return [nn.Conv2d(cin, cout, 5), *norm, nn.ReLU(inplace=True), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*conv(1, 20), *conv(20, 50), nn.Flatten(),
                                      nn.Linear(50 * 4 * 4, 500), *([nn.BatchNorm1d(500)] if bn else []),
                                      nn.ReLU(inplace=True))
        self.classifier = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("lenet-300-100", "mnist", "LeCun et al. 1998; Han et al. ICLR 2016")
def lenet_300_100(num_classes: int = 10) -> MLP:
    return MLP((300, 100), num_classes=num_classes)


@register_model("lenet-300-100-bn", "mnist", "LeNet-300-100 with BatchNorm, for slimming")
def lenet_300_100_bn(num_classes: int = 10) -> MLP:
    return MLP((300, 100), num_classes=num_classes, bn=True)


@register_model("mlp-500-300-bn", "mnist", "Liu et al. ICCV 2017 (network slimming's MNIST MLP)")
def mlp_500_300_bn(num_classes: int = 10) -> MLP:
    return MLP((500, 300), num_classes=num_classes, bn=True)


@register_model("lenet-5", "mnist", "LeCun et al. 1998; Han et al. ICLR 2016 (Caffe 20-50-500)")
def lenet_5(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes)


@register_model("lenet-5-bn", "mnist", "LeNet-5 with BatchNorm, for slimming")
def lenet_5_bn(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes, bn=True)
