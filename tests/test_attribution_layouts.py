"""Attribution of units on channels-last (ConvNeXt-like) and token (ViT-like) layers: the unit is read through the
layer's layout, so it equals the same unit of a channels-first formulation and autograd by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import Permute

from deepvis_app.attribution import RULES, AttributionContext, attribute, explain_unit
from deepvis_app.errors import DeepVisError
from deepvis_app.probe import Capture, layer_table
from deepvis_app.values import Layout, Unit


class ChannelsLast(nn.Module):
    """conv -> ReLU -> Permute to N x H x W x C -> Linear -> ReLU -> Linear ("lin2": channels-last) -> ReLU ->
    Permute back -> conv: a ConvNeXt block's layout changes, with rectifiers so the rules matter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.act0 = nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()
        self.to_last, self.lin1, self.act1 = Permute([0, 2, 3, 1]), nn.Linear(8, 6), nn.ReLU()
        self.lin2, self.act2, self.to_first = nn.Linear(6, 5), nn.ReLU(), Permute([0, 3, 1, 2])
        self.head = nn.Conv2d(5, 4, 3)

    def forward(self, x):
        x = self.to_last(self.act0(self.stem(x)))
        x = self.act2(self.lin2(self.act1(self.lin1(x))))
        return self.head(self.to_first(x))


class ChannelsFirst(nn.Module):
    """The same function with 1x1 convs in place of the Linears, all maps channels-first ("lin2" is a conv)."""

    def __init__(self, cl: ChannelsLast) -> None:
        super().__init__()
        self.stem, self.act0, self.act1, self.act2, self.head = cl.stem, cl.act0, cl.act1, cl.act2, cl.head
        self.lin1, self.lin2 = nn.Conv2d(8, 6, 1), nn.Conv2d(6, 5, 1)
        for conv, lin in ((self.lin1, cl.lin1), (self.lin2, cl.lin2)):
            conv.weight.data = lin.weight.data[:, :, None, None].clone()
            conv.bias.data = lin.bias.data.clone()

    def forward(self, x):
        x = self.act2(self.lin2(self.act1(self.lin1(self.act0(self.stem(x))))))
        return self.head(x)


def _frozen(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def pair():
    cl = _frozen(ChannelsLast())
    return cl, _frozen(ChannelsFirst(cl)), torch.randn(1, 3, 10, 9, generator=torch.Generator().manual_seed(2))


def test_channels_last_unit_equals_the_channels_first_formulation(pair) -> None:
    cl, cf, x = pair
    table = {i.name: i for i in layer_table(cl, x)}
    info = table["lin2"]
    assert info.layout is Layout.CHANNELS_LAST and info.channels == 5 and info.grid == (10, 9)
    assert table["act1"].layout is Layout.CHANNELS_LAST  # the Grad-CAM layer below
    for unit in ((4, 4, 7), (1, 0, 0), 4):  # a position, a corner, the argmax default
        ours = explain_unit(cl, x, "lin2", unit, (*RULES, "gradcam"), cam_layer="act1")
        ref = explain_unit(cf, x, "lin2", unit, (*RULES, "gradcam"), cam_layer="act1")
        assert ours.unit == ref.unit and ours.unit.position is not None
        for method in (*RULES, "gradcam"):
            assert ref[method].abs().max() > 0
            torch.testing.assert_close(ours[method], ref[method], rtol=1e-5, atol=1e-6)
    # the argmax default is the channel's argmax on the H x W grid, not along a raw dimension
    with torch.no_grad(), Capture(cl, ["lin2"]) as cap:
        cap.run(x)
    chan = cap["lin2"][0, :, :, 1]
    flat = int(chan.flatten().argmax())
    assert explain_unit(cl, x, "lin2", 1, ("gradient",)).unit == Unit("lin2", 1, flat // 9, flat % 9)


def test_channels_last_context_with_info_equals_autograd_by_hand(pair) -> None:
    cl, _cf, x = pair
    info = {i.name: i for i in layer_table(cl, x)}["lin2"]
    xin = x.clone().requires_grad_(True)
    with AttributionContext(cl) as ac, Capture(cl, ["lin2"], no_grad_after="lin2", example=xin) as cap:
        assert cap.run(xin).grad_fn is None  # nothing recorded after the unit's layer
    act = cap["lin2"]
    for objective in ("neuron", "channel", "seed"):
        exp = ac.explain(xin, act, Unit("lin2", 3, 6, 2), ("gradient", "saliency"), objective=objective, info=info,
                         retain_graph=True)
        chan = act[:, :, :, 3]  # N x H x W: channel 3 of a channels-last map
        scalar = {"neuron": chan[:, 6, 2].sum(), "channel": chan.sum(), "seed": (chan * chan.detach()).sum()}
        (ref,) = torch.autograd.grad(scalar[objective], xin, retain_graph=True)
        assert ref.abs().max() > 0 and exp.objective == objective
        torch.testing.assert_close(exp["gradient"], ref)
        torch.testing.assert_close(exp["saliency"], ref.abs().amax(dim=1, keepdim=True))
    # the layer's 5 channels are its last dimension: channel 5 is out of range, a position beyond 10 x 9 too
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.4"):
        ac.explain(xin, act, Unit("lin2", 5), ("gradient",), info=info, retain_graph=True)
    with pytest.raises(DeepVisError, match=r"y in 0\.\.9, x in 0\.\.8"):
        ac.explain(xin, act, Unit("lin2", 0, 3, 9), ("gradient",), info=info, retain_graph=True)


class Tokens(nn.Module):
    """Patch embedding (4x4 patches of 16x16 -> 4 x 4 grid) with a ReLU, a class token in front, Linear -> ReLU
    per token ("act": 17 tokens x 6 features), mean over tokens, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.patch, self.act0 = nn.Conv2d(3, 6, 4, stride=4), nn.ReLU()
        self.cls = nn.Parameter(torch.randn(1, 1, 6))
        self.mix, self.act = nn.Linear(6, 6), nn.ReLU()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        t = self.act0(self.patch(x)).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)
        return self.fc(self.act(self.mix(t)).mean(dim=1))


def test_a_token_layer_unit_is_read_on_its_patch_grid() -> None:
    net = _frozen(Tokens())
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    info = {i.name: i for i in layer_table(net, x)}["act"]
    assert info.layout is Layout.TOKENS and info.prefix_tokens == 1 and info.grid == (4, 4) and info.channels == 6
    xin = x.clone().requires_grad_(True)
    with Capture(net, ["act"]) as cap:
        cap.run(xin)
    act = cap["act"]  # 1 x 17 x 6
    (ref,) = torch.autograd.grad(act[0, 1 + 2 * 4 + 3, 4], xin)  # feature 4 of the patch at (2, 3)
    got = attribute(net, x, "act", (4, 2, 3), "gradient")
    assert ref.abs().max() > 0
    torch.testing.assert_close(got, ref)
    guided = attribute(net, x, "act", (4, 2, 3), "guided")
    assert guided.abs().max() > 0 and not torch.allclose(guided, ref)  # the patch ReLU's rule applies
    # the default position: the feature's argmax over the 16 patch tokens (the class token is not a position)
    grid = act[0, 1:, 4].detach().view(4, 4)
    flat = int(grid.flatten().argmax())
    exp = explain_unit(net, x, "act", 4, ("gradient",))
    assert exp.unit == Unit("act", 4, flat // 4, flat % 4)
    # features are the units (6), not tokens (17); positions lie on the 4 x 4 grid
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.5"):
        attribute(net, x, "act", 6, "gradient")
    with pytest.raises(DeepVisError, match=r"y in 0\.\.3, x in 0\.\.3"):
        attribute(net, x, "act", (0, 4, 0), "gradient")
