"""A user's own model, as a user would write it: MobileNet-V2 for 32x32 inputs (inverted residuals,
depthwise convolutions). slimzip names it as `--model examples/mobilenet_cifar.py:mobilenet_v2`."""

from __future__ import annotations

from torch import nn


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [*conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
                   *conv_bn(hidden, cout, 1)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetV2(nn.Module):
    """Widths scaled by ``width`` (1.0: 32-16-24-32-64-96-160-320-1280); strides for 32x32 images."""

    def __init__(self, num_classes: int = 10, width: float = 0.5):
        super().__init__()
        c = lambda n: max(8, int(n * width + 4) // 8 * 8)  # noqa: E731 - channel rounding, as MobileNet
        settings = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1)]  # expand, channels, repeats, first stride
        layers: list[nn.Module] = [*conv_bn(3, c(32)), nn.ReLU6(inplace=True)]
        cin = c(32)
        for t, ch, n, s in settings:
            for i in range(n):
                layers.append(InvertedResidual(cin, c(ch), s if i == 0 else 1, t))
                cin = c(ch)
        layers += [*conv_bn(cin, c(1280), 1), nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c(1280), num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def mobilenet_v2(num_classes: int = 10) -> nn.Module:
    return MobileNetV2(num_classes, width=0.5)
