"""DenseNet-40 (k=12, no compression, as network slimming prunes it) and DenseNet-BC-100 (k=12)
(Huang et al., "Densely Connected Convolutional Networks", CVPR 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` channels (with ``bottleneck``: BN-ReLU-conv1x1 to 4k first),
    concatenated to the input."""

    def __init__(self, cin: int, growth: int, bottleneck: bool):
        super().__init__()
        mid = 4 * growth if bottleneck else cin
        self.bottleneck = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                                        nn.Conv2d(cin, mid, 1, bias=False)) if bottleneck else nn.Identity()
        self.bn = nn.BatchNorm2d(mid)
        self.conv = nn.Conv2d(mid, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.bn(self.bottleneck(x))))], 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 then a 2x2 average pool."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """conv3x3(2k), three dense blocks with transitions between them, BN-ReLU, global pool, fc."""

    def __init__(self, depth: int, growth: int = 12, bottleneck: bool = False, reduction: float = 1.0,
                 num_classes: int = 10):
        super().__init__()
        n = (depth - 4) // (6 if bottleneck else 3)
        cin = 2 * growth
        self.conv1 = nn.Conv2d(3, cin, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for block in range(3):
            for _ in range(n):
                stages.append(DenseLayer(cin, growth, bottleneck))
                cin += growth
            if block < 2:
                cout = int(cin * reduction)
                stages.append(Transition(cin, cout))
                cin = cout
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model("densenet40", "cifar10", "DenseNet-40 (k=12), Huang et al. CVPR 2017; Liu et al. 2017")
def densenet40(num_classes: int = 10) -> DenseNet:
    return DenseNet(40, 12, num_classes=num_classes)


@register_model("densenet-bc-100", "cifar10", "DenseNet-BC-100 (k=12), Huang et al. CVPR 2017")
def densenet_bc_100(num_classes: int = 10) -> DenseNet:
    return DenseNet(100, 12, bottleneck=True, reduction=0.5, num_classes=num_classes)
