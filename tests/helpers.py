"""Shared test plumbing, imported by test modules (`from helpers import ...`) and by conftest's fixtures: image
files on disk and the tiny nets several test modules build."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def write_rgb(path, rgb: np.ndarray) -> str:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


def tiny_conv_net(hidden: int = 4, out: int = 6) -> torch.nn.Module:
    """conv(3->hidden, 3x3) -> ReLU -> conv(hidden->out, 3x3, stride 2), seeded: the tiny net of the
    image-optimization tests (named modules conv1, relu, conv2)."""
    from torch import nn

    class TinyConvNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, hidden, 3, padding=1)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(hidden, out, 3, stride=2, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv2(self.relu(self.conv1(x)))

    torch.manual_seed(0)
    return TinyConvNet().eval()


def hooks_left(net: torch.nn.Module) -> list[str]:
    """Modules of `net` that still carry a forward, pre-forward or backward hook (torch's own registries, read in
    this one place): every capture, rule and intervention must leave the model exactly as it was."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [name or "<net>" for name, m in net.named_modules() if any(getattr(m, k, None) for k in kinds)]


def random_bn(c: int, seed: int) -> torch.nn.BatchNorm2d:
    """An inference BatchNorm2d with seeded random statistics and affine terms (the fused-backward tests' nets)."""
    g = torch.Generator().manual_seed(seed)
    bn = torch.nn.BatchNorm2d(c)
    bn.running_mean.copy_(torch.randn(c, generator=g))
    bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    bn.weight.data.copy_(torch.randn(c, generator=g))
    bn.bias.data.copy_(torch.randn(c, generator=g))
    return bn
