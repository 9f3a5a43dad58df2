"""CIFAR ResNets: ResNet-20/56/110 (He et al., "Deep Residual Learning", CVPR 2016, option A shortcuts)
and the pre-activation bottleneck ResNet-164 (He et al., "Identity Mappings", ECCV 2016) in network
slimming's layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from .registry import register_model


class _Place(torch.autograd.Function):
    """out[:, dst] = x[:, src, ::stride, ::stride], zeros elsewhere. One autograd node, so a dependency
    graph sees the shortcut as one layer from its input to its output."""

    @staticmethod
    def forward(ctx, x, src, dst, out_channels: int, stride: int):  # type: ignore[override]
        ctx.save_for_backward(src, dst)
        ctx.x_shape, ctx.stride = x.shape, stride
        x = x[:, :, ::stride, ::stride]
        out = x.new_zeros(x.shape[0], out_channels, *x.shape[2:])
        out[:, dst] = x[:, src]
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        src, dst = ctx.saved_tensors
        s = ctx.stride
        grad_x = grad.new_zeros(ctx.x_shape)
        grad_x[:, src, ::s, ::s] = grad[:, dst]
        return grad_x, None, None, None, None


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by the stride and place the input channels among zero channels (no
    parameters). Which input channel lands where is an index map (``src`` -> ``dst``), so channel
    pruning can remove channels of the residual stream on both sides (``PadShortcutPruner``)."""

    def __init__(self, stride: int, cin: int, cout: int):
        super().__init__()
        self.stride, self.in_channels, self.out_channels = stride, cin, cout
        first = (cout - cin) // 2
        self.register_buffer("src", torch.arange(cin), persistent=False)
        self.register_buffer("dst", torch.arange(cin) + first, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():  # an exporter cannot see into an autograd Function
            return F.conv2d(x[:, :, ::self.stride, ::self.stride], self.placement(x.dtype)[:, :, None, None])
        return _Place.apply(x, self.src, self.dst, self.out_channels, self.stride)

    def placement(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The map as an (out, in) 0/1 matrix: a 1x1 convolution with it computes the same output."""
        matrix = torch.zeros(self.out_channels, self.in_channels, dtype=dtype, device=self.src.device)
        matrix[self.dst, self.src] = 1.0
        return matrix

    def drop(self, idxs: list[int], side: str) -> None:
        """Remove input (``side='in'``) or output channels, renumbering the map."""
        gone = torch.tensor(sorted(set(idxs)), dtype=torch.long, device=self.src.device)
        ends = self.src if side == "in" else self.dst
        keep = ~torch.isin(ends, gone)
        self.src, self.dst = self.src[keep], self.dst[keep]
        ends = self.src if side == "in" else self.dst
        ends -= torch.searchsorted(gone, ends)
        if side == "in":
            self.in_channels -= len(gone)
        else:
            self.out_channels -= len(gone)


class PadShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's handler for ``PadShortcut``: its inputs and outputs are separate channel sets."""

    TARGET_MODULES = (PadShortcut,)

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        layer.drop(list(idxs), "out")
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs) -> nn.Module:
        layer.drop(list(idxs), "in")
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels


PadShortcut.channel_pruner = PadShortcutPruner()  # how a dependency graph removes its channels


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = PadShortcut(stride, cin, cout) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """conv3x3(16), three stages of ``n`` basic blocks (16, 32, 64 wide), global pool, fc."""

    def __init__(self, n: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(BasicBlock(cin, width, 2 if stage > 0 and i == 0 else 1))
                cin = width
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1 (x4 wide), plus the input or a 1x1 projection."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.downsample = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + (self.downsample(x) if self.downsample is not None else x)


class PreActResNet(nn.Module):
    """conv3x3(16), three stages of ``n`` bottlenecks (planes 16, 32, 64), BN-ReLU, global pool, fc."""

    def __init__(self, n: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        blocks, cin = [], 16
        for stage, planes in enumerate((16, 32, 64)):
            for i in range(n):
                blocks.append(PreActBottleneck(cin, planes, 2 if stage > 0 and i == 0 else 1))
                cin = planes * PreActBottleneck.expansion
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _kaiming_init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _register(depth: int) -> None:
    @register_model(f"resnet{depth}", "cifar10", f"ResNet-{depth}, He et al. CVPR 2016 (option A)")
    def factory(num_classes: int = 10) -> ResNet:
        return ResNet((depth - 2) // 6, num_classes)


for _depth in (20, 56, 110):
    _register(_depth)


@register_model("preresnet164", "cifar10", "pre-activation ResNet-164, He et al. ECCV 2016; Liu et al. 2017")
def preresnet164(num_classes: int = 10) -> PreActResNet:
    return PreActResNet((164 - 2) // 9, num_classes)
