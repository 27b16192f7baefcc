"""Receptive fields through normalizations and attention: ConvNeXt-style blocks (LayerNorm over the channels of a
channels-last map, Linear, GELU), hand-written and GroupNorm variants, Swin's window attention, and the curated
ConvNeXt-T. A normalization (or softmax) maps an all-ones gradient to zero, so the substituted-weight probe used
to see no footprint at all and reported every unit as seeing the whole image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Permute

from deepvis_app.receptive_field import rf_box, rf_geometry, rf_is_local


class LayerNorm2d(nn.LayerNorm):
    """torchvision's: LayerNorm over the channels of a channels-first map (through channels-last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class HandLayerNorm2d(nn.Module):
    """The original ConvNeXt's channels-first LayerNorm, written out: (x - mean) / std over the channels."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Block(nn.Module):
    """ConvNeXt block: depthwise 7x7 (pad 3), Permute, LayerNorm, Linear, GELU, Linear, Permute, scaled residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
                                   Permute([0, 3, 1, 2]))
        self.gamma = nn.Parameter(torch.full((dim, 1, 1), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.block(x)


class TinyConvNeXt(nn.Module):
    """stem conv k4 s4 + norm, a block, downsampling (norm + conv k2 s2), a block, global pooling, head."""

    def __init__(self, norm: str = "layer") -> None:
        super().__init__()
        norms = {"layer": lambda d: LayerNorm2d(d), "hand": HandLayerNorm2d, "group": lambda d: nn.GroupNorm(2, d)}
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), norms[norm](8))
        self.stage1 = Block(8)
        self.down = nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 16, 2, stride=2))
        self.stage2 = Block(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _tiny(norm: str = "layer") -> nn.Module:
    torch.manual_seed(0)
    net = TinyConvNeXt(norm)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    return net.eval()


# By hand: stem k4 s4 p0 -> unit y sees [4y, 4y + 4). Depthwise k7 p3 at stride 4: 4 + 6 * 4 = 28 px from
# 4y - 12; Permute, LayerNorm, Linear, GELU, Linear act per position, so the block's inner layers keep it. Down k2 s2
# at stride 4: 28 + 4 = 32 px, stride 8, top 8y - 12. Depthwise k7 p3 at stride 8: 32 + 6 * 8 = 80 px, top 8y - 36.
HAND = {  # layer: (stride, offset, size)
    "stem": (4, 0, 4),
    "stage1.block.0": (4, -12, 28),
    "stage1.block.2": (4, -12, 28),
    "stage1.block.4": (4, -12, 28),
    "stage1": (4, -12, 28),
    "down": (8, -12, 32),
    "stage2.block.4": (8, -36, 80),
    "stage2": (8, -36, 80),
}


@pytest.mark.parametrize("norm", ["layer", "hand", "group"])
def test_convnext_like_block_has_its_conv_footprint(norm: str) -> None:
    net = _tiny(norm)
    for size in (64, 32):  # at 32 px the stage-2 field (80 px) is clipped for every unit: the probe must grow
        for layer, (stride, offset, extent) in HAND.items():
            g = rf_geometry(net, layer, size)
            assert not g.full, (norm, size, layer, g.reason)
            assert (g.stride_y, g.offset_y, g.size_y, g.stride_x, g.offset_x, g.size_x) == \
                (stride, offset, extent) * 2, (norm, size, layer)
        assert rf_box(net, "stage1.block.4", 5, 2, size) == (8, -4, 36, 24)
        assert rf_box(net, "stage2", 3, 1, size) == (-12, -28, 68, 52)
    head = rf_geometry(net, "head", 64)
    assert head.full and "no positions" in head.reason


def test_locality_through_normalizations() -> None:
    """LayerNorm over the channels at each position is no image context: ConvNeXt's units are local. GroupNorm's
    statistics span the image: the footprint stays the conv's, but a unit's value depends on every pixel."""
    for norm in ("layer", "hand"):
        net = _tiny(norm)
        assert all(rf_is_local(net, layer, 64) for layer in ("stem", "stage1.block.4", "stage2"))
    net = _tiny("group")
    assert not rf_is_local(net, "stem", 64) and not rf_is_local(net, "stage1.block.4", 64)


class MeanSE(nn.Module):
    """timm's squeeze-excitation: the gate from a mean (or max) over the positions, no adaptive pooling module."""

    def __init__(self, dim: int, reduce: str) -> None:
        super().__init__()
        self.fc = nn.Conv2d(dim, dim, 1)
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3), keepdim=True) if self.reduce == "mean" else x.amax(dim=(-2, -1), keepdim=True)
        return x * self.fc(pooled).sigmoid()


@pytest.mark.parametrize("reduce", ["mean", "amax"])
def test_squeeze_excitation_by_reduction_is_cut(reduce: str) -> None:
    """conv k3 p1, SE, conv k3 p1: the footprint is the convs' (5 px); the unit still depends on every pixel."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), MeanSE(4, reduce), nn.Conv2d(4, 4, 3, padding=1)).eval()
    assert rf_box(net, "1", 4, 6, 32) == (3, 5, 6, 8)
    assert rf_box(net, "2", 4, 6, 32) == (2, 4, 7, 9)
    assert rf_is_local(net, "0", 32) and not rf_is_local(net, "1", 32) and not rf_is_local(net, "2", 32)


def _tiny_swin() -> nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    # 4x4 patches of a 32 px image: 8x8 tokens, windows of 4x4 tokens (16 px), shifted by 2 in the second block
    return SwinTransformer(patch_size=[4, 4], embed_dim=12, depths=[2], num_heads=[2], window_size=[4, 4],
                           num_classes=5).eval()


def test_swin_patches_and_window_attention() -> None:
    """The patch embedding (conv k4 s4, Permute, LayerNorm) has the patch as its field; a unit after window
    attention sees its window (units 0 and 1 the same 16 px, the last two the last window), a field that does not
    slide with the unit: reported as the whole image, with the reason."""
    net = _tiny_swin()
    g = rf_geometry(net, "features.0", 32)
    assert not g.full and (g.stride_y, g.offset_y, g.size_y) == (4, 0, 4)
    assert rf_box(net, "features.0", 3, 6, 32) == (12, 24, 16, 28)
    for layer in ("features.1.0.attn", "features.1.0", "features.1.1.mlp.1", "features.1"):
        g = rf_geometry(net, layer, 32)
        assert g.full and "do not slide" in g.reason and "window" in g.reason, (layer, g.reason)
        assert rf_box(net, layer, 1, 1, 32) == (0, 0, 32, 32)
        assert not rf_is_local(net, layer, 32)


def test_curated_convnext_tiny() -> None:
    """ConvNeXt-T, stage 1 block 1 GELU: stem k4 s4 then the 7x7 depthwise conv, 4 + 6 * 4 = 28 px, stride 4."""
    from deepvis_app.zoo.load import load_model

    vm = load_model("convnext_tiny", weights="random", device="cpu")
    layer = "features.1.0.block.4"
    g = rf_geometry(vm.net, layer, 224, vm.info(layer))
    assert not g.full and (g.stride_y, g.offset_y, g.size_y, g.stride_x, g.offset_x, g.size_x) == (4, -12, 28) * 2
    assert rf_box(vm.net, layer, 10, 20, 224, vm.info(layer)) == (28, 68, 56, 96)
