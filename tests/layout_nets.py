"""Tiny seeded nets whose layers are not channels-first, as the models of today have them.

`channels_last`: conv (k3 p1) -> Permute(0, 2, 3, 1) -> Linear -> GELU, the shape of ConvNeXt's inner block layers
(`lin` and `act` are H x W x 6 maps). `tokens`: a 4x4-patch embedding, a class token in front, a Linear and GELU
per token and a global mixing step, the shape of a ViT's encoder layers (`mix`, `act`, `attn` are 65 tokens x 8
features: 1 class token + an 8x8 patch grid at 32 px). Both load as spec models (`write_spec`) for the scan.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.ops import Permute

SIZE = 32


def _seed(net: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.eval()


class ChannelsLastNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.perm = Permute([0, 2, 3, 1])
        self.lin = nn.Linear(4, 6)
        self.act = nn.GELU()
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.lin(self.perm(self.conv(x))))
        return self.head(h.mean(dim=(1, 2)))


class Attend(nn.Module):
    """Every token gets the mean of all tokens added: the global mixing attention does."""

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t + t.mean(dim=1, keepdim=True)


class TokenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.mix = nn.Linear(8, 8)
        self.act = nn.GELU()
        self.attn = Attend()
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        t = self.attn(self.act(self.mix(t)))
        return self.head(t[:, 0])


def channels_last(*, pretrained: bool = True) -> nn.Module:
    return _seed(ChannelsLastNet(), 11)


def tokens(*, pretrained: bool = True) -> nn.Module:
    return _seed(TokenNet(), 12)


def channels_last_by_hand(act: torch.Tensor) -> torch.Tensor:
    """N x H x W x C -> N x C x H x W, written out (not through `layouts`)."""
    return act.permute(0, 3, 1, 2)


def tokens_by_hand(act: torch.Tensor) -> torch.Tensor:
    """N x 65 x C -> N x C x 8 x 8: the class token dropped, patch tokens row by row on the grid."""
    n, _t, c = act.shape
    grid = SIZE // 4
    return act[:, 1:, :].reshape(n, grid, grid, c).permute(0, 3, 1, 2)


def write_spec(folder: Path, builder: str) -> Path:
    """A spec file for `layout_nets:<builder>` at SIZE px (the module must be importable: tests/ is on sys.path)."""
    spec = folder / f"{builder}.toml"
    spec.write_text(f'name = "{builder}"\ntitle = "{builder}"\nbuilder = "layout_nets:{builder}"\n'
                    f'input_size = {SIZE}\nlabels = "none"\n')
    return spec
