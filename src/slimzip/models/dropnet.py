"""DropNet's models A, B and C (Tan and Motani, "DropNet: Reducing Neural Network Complexity via
Iterative Pruning", ICML 2020).

A: MLP 784-40-40-10 (MNIST). B: conv64, pool, conv64, pool, dense10 (MNIST). C: conv64, conv64,
conv128, conv128, each followed by a 2x2 max pool, then dense256, dense10 (CIFAR-10). Convolutions are
3x3 with 'same' padding; the papers' exact kernel size is our assumption.
"""

from __future__ import annotations

import torch
from torch import nn

from .lenet import MLP
from .registry import register_model


class ConvNet(nn.Module):
    """3x3 conv + ReLU + 2x2 max pool per width, flatten, optional hidden dense layers, classifier."""

    def __init__(self, widths: tuple[int, ...], dense: tuple[int, ...], in_channels: int, image_size: int,
                 num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            in_channels, image_size = width, image_size // 2
        layers.append(nn.Flatten())
        in_features = in_channels * image_size * image_size
        for width in dense:
            layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
            in_features = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("dropnet-a", "mnist", "Tan and Motani, ICML 2020 (model A)")
def dropnet_a(num_classes: int = 10) -> MLP:
    return MLP((40, 40), num_classes=num_classes)


@register_model("dropnet-b", "mnist", "Tan and Motani, ICML 2020 (model B)")
def dropnet_b(num_classes: int = 10) -> ConvNet:
    return ConvNet((64, 64), (), in_channels=1, image_size=28, num_classes=num_classes)


@register_model("dropnet-c", "cifar10", "Tan and Motani, ICML 2020 (model C)")
def dropnet_c(num_classes: int = 10) -> ConvNet:
    return ConvNet((64, 64, 128, 128), (256,), in_channels=3, image_size=32, num_classes=num_classes)
