"""Receptive fields measured from the network: hand-built net, AlexNet's known geometry, ERF accumulator."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import hooks_left
from torch import nn

from deepvis_app.errors import DeepVisError
from deepvis_app.receptive_field import EffectiveRF, rf_box, rf_geometry


def _hand_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Conv2d(4, 4, 3, 1, 1),
                        nn.ReLU())
    return net.eval()


def test_hand_built_net() -> None:
    net = _hand_net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    # conv k3 s1 p1: rows y-1 .. y+1
    assert rf_box(net, "0", 0, 0, 16) == (-1, -1, 2, 2)
    assert rf_box(net, "0", 5, 7, 16) == (4, 6, 7, 9)
    # maxpool k2 s2 over it: stride 2, rows 2y-1 .. 2y+2 (size 4)
    assert rf_box(net, "2", 3, 1, 16) == (5, 1, 9, 5)
    # conv k3 p1 on top: size 4 + 2 * 2 = 8, top 2y - 3
    for y, x in [(0, 0), (3, 5), (7, 7)]:
        assert rf_box(net, "3", y, x, 16) == (2 * y - 3, 2 * x - 3, 2 * y + 5, 2 * x + 5)
    assert rf_box(net, "4", 2, 2, 16) == (1, 1, 9, 9)
    # the model is untouched, and no hooks are left
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert hooks_left(net) == []


def test_rf_larger_than_the_image() -> None:
    # 8x8 input: the conv2 unit's 8-px field is clipped for every unit; the probe must grow the image.
    net = _hand_net()
    assert rf_box(net, "3", 1, 2, 8) == (-1, 1, 7, 9)
    g = rf_geometry(net, "3", 8)
    assert (g.stride_y, g.offset_y, g.size_y) == (2, -3, 8)


ALEXNET = {  # (stride, offset, size): conv1 k11 s4 p2, pool k3 s2, conv k5 p2, pool, 3x conv k3 p1, pool
    "features.0": (4, -2, 11),
    "features.2": (8, -2, 19),
    "features.3": (8, -18, 51),
    "features.5": (16, -18, 67),
    "features.6": (16, -34, 99),
    "features.10": (16, -66, 163),
    "features.12": (32, -66, 195),
}


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    return torchvision.models.alexnet().eval()  # random weights: the geometry does not depend on them


@pytest.mark.parametrize("layer", list(ALEXNET))
def test_alexnet_features(alexnet: nn.Module, layer: str) -> None:
    net = alexnet
    stride, offset, size = ALEXNET[layer]
    for y, x in [(0, 0), (1, 2), (3, 1)]:
        assert rf_box(net, layer, y, x, 128) == (y * stride + offset, x * stride + offset,
                                                 y * stride + offset + size, x * stride + offset + size)


def test_reused_module_and_whole_image_units() -> None:
    net = torchvision.models.resnet18().eval()
    # relu@0 is the stem ReLU: conv 7x7 s2 p3
    assert rf_box(net, "relu@0", 2, 3, 64) == (1, 3, 8, 10)
    # layer1 (stem + maxpool k3 s2 p1 + four 3x3 convs): stride 4, size 43, offset -21 (known for ResNet)
    assert rf_box(net, "layer1", 5, 6, 64) == (-1, 3, 42, 46)
    # after global pooling: the whole image
    assert rf_box(net, "fc", 0, 0, 64) == (0, 0, 64, 64)


def test_cached_per_net_layer_size() -> None:
    net = _hand_net()
    assert rf_geometry(net, "3", 16) is rf_geometry(net, "3", 16)


def test_bad_layer() -> None:
    with pytest.raises(DeepVisError, match="valid layers"):
        rf_box(_hand_net(), "nope", 0, 0, 16)


def test_effective_rf_accumulates() -> None:
    net = _hand_net()
    erf = EffectiveRF(net, "3")
    torch.manual_seed(0)
    for _ in range(3):
        erf.update(torch.randn(2, 3, 16, 16))
    heat = erf.map
    assert erf.count == 6 and heat.shape == (16, 16)
    # support within the theoretical RF of the centre unit (8, 8) -> rows/cols 13 .. 20 clipped to 13 .. 15
    top, left, bottom, right = rf_box(net, "3", 4, 4, 16)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[max(top, 0):bottom, max(left, 0):right] = True
    assert heat[~inside].abs().max() == 0 and heat[inside].max() > 0
    erf.reset()
    with pytest.raises(DeepVisError):
        _ = erf.map


def test_token_layer_sees_the_whole_image_and_channels_last_maps_are_measured() -> None:
    """A token layer's unit sees the whole image (said in `reason`); a channels-last map after a 3x3 conv has
    the conv's field, read through the layout (its rows are not channels)."""
    from layout_nets import channels_last, tokens

    tk = tokens()
    for layer in ("mix", "attn"):
        g = rf_geometry(tk, layer, 32)
        assert g.full and "token layer" in g.reason and "whole image" in g.reason
        assert rf_box(tk, layer, 3, 5, 32) == (0, 0, 32, 32)
    assert not rf_geometry(tk, "patch", 32).full and rf_box(tk, "patch", 1, 2, 32) == (4, 8, 8, 12)
    cl = channels_last()
    for layer in ("lin", "act"):
        assert rf_box(cl, layer, 5, 7, 32) == (4, 6, 7, 9)
        assert rf_box(cl, layer, 0, 31, 32) == (-1, 30, 2, 33)
    assert rf_geometry(cl, "head", 32).full and "no positions" in rf_geometry(cl, "head", 32).reason
    erf = EffectiveRF(cl, "act", channel=2)
    torch.manual_seed(0)
    erf.update(torch.randn(2, 3, 16, 16))
    heat = erf.map  # the centre unit (8, 8) of the 16x16 map sees rows and columns 7..9
    assert heat[7:10, 7:10].min() > 0 and heat.sum() == heat[7:10, 7:10].sum()
