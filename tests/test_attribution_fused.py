"""The fused conv -> BN -> rectifier backward and the deconvnet cache: exact against the unfused path and autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_bn
from torch import nn

from deepvis_app.attribution import RULES, AttributionContext, DeconvCache, fused, kernels
from deepvis_app.probe import Probe
from deepvis_app.values import Unit


class ChainNet(nn.Module):
    """Every chain shape the fusion meets: a 3-channel stem after an uneven zero pad (its backward is a matrix
    product folded back), strided grouped dilated conv-BN-ReLU6, conv-ReLU without BN, a dilated depthwise
    conv-BN-ReLU6 (backward: the flipped kernel's conv), a symmetric zero pad before a conv (folded into it) and
    asymmetric ones (TF "same", kept), and a residual added in place to a BN output before its ReLU (ResNet's
    `out += identity`)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.p1, self.c1, self.b1 = nn.ZeroPad2d((1, 1, 0, 2)), nn.Conv2d(3, 8, 3, bias=False), random_bn(8, 1)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=4, bias=False), random_bn(8, 2)
        self.c3 = nn.Conv2d(8, 8, 1, bias=True)
        self.c7, self.b7 = nn.Conv2d(8, 8, 5, padding=4, dilation=2, groups=8, bias=False), random_bn(8, 7)
        self.p4, self.c4, self.b4 = nn.ZeroPad2d(1), nn.Conv2d(8, 8, 3, bias=False), random_bn(8, 4)
        self.p5, self.c5 = nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(8, 6, 3, stride=2, padding=(1, 0), bias=False)
        self.p6, self.c6 = nn.ZeroPad2d((1, 2, 0, 1)), nn.Conv2d(6, 6, 3, stride=2, bias=False)
        self.b6 = random_bn(6, 6)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        a = F.relu(self.b1(self.c1(self.p1(x))))
        b = F.relu6(self.b2(self.c2(a)))
        c = F.relu6(self.b7(self.c7(torch.relu(self.c3(b)))))
        d = self.b4(self.c4(self.p4(c)))
        d += b  # in place: the chain of d no longer describes it
        e = F.relu(self.c5(self.p5(F.relu(d))))
        return self.b6(self.c6(self.p6(e)))


def _explain(net, x, layer, unit, rules=RULES, *, fuse=True, monkeypatch=None):
    if not fuse:
        monkeypatch.setattr(fused, "conv_chain", lambda args, kwargs, state=None: None)
    xin = x.clone().requires_grad_(True)
    with AttributionContext(net) as ac, Probe(net, [layer]) as probe:
        net(xin)
    exp = ac.explain(xin, probe[layer], unit, rules)
    if not fuse:
        monkeypatch.undo()
    return exp


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])  # the live pipeline runs a channels-last copy
@pytest.mark.parametrize("layer", ["b6", "c5", "c4", "b4", "b7", "c3", "b2"])
def test_fused_backward_equals_the_unfused_one(layer: str, layout: str, monkeypatch) -> None:
    net = ChainNet()
    x = torch.randn(2, 3, 21, 19, generator=torch.Generator().manual_seed(7))
    if layout == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), Probe(net, [layer]) as probe:
        net(x)
    h, w = probe[layer].shape[-2:]
    for y, xx in ((0, 0), (h // 2, w // 2), (h - 1, w - 1), (1, w - 2)):  # corners, centre, near an edge
        unit = Unit(layer, 2, y, xx)
        got = _explain(net, x, layer, unit)
        plain = _explain(net, x, layer, unit, fuse=False, monkeypatch=monkeypatch)
        for rule in RULES:
            assert got[rule].abs().max() > 0
            torch.testing.assert_close(got[rule], plain[rule], rtol=1e-5,
                                       atol=1e-6 * float(plain[rule].abs().max()))
        # and the gradient is autograd's own, with no context at all
        xin = x.clone().requires_grad_(True)
        with Probe(net, [layer]) as probe:
            net(xin)
        (ref,) = torch.autograd.grad(probe[layer][:, 2, y, xx].sum(), xin)
        torch.testing.assert_close(got["gradient"], ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 1, 1), (2, 0, 2), (3, 2, 1)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_small_fan_in_stems_equal_the_unfused_backward(stride, padding, dilation, layout, monkeypatch) -> None:
    """A conv with a tiny fan-in (3 x 3 x 3) backpropagates as a matrix product folded back tap by tap."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation, bias=False),
                        random_bn(5, 3), nn.ReLU(), nn.Conv2d(5, 4, 3, padding=1, bias=False), nn.ReLU()).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 23, 20)
    if layout == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        h, w = net(x).shape[-2:]
    unit = Unit("4", 1, h // 2, w // 3)
    got = _explain(net, x, "4", unit)
    plain = _explain(net, x, "4", unit, fuse=False, monkeypatch=monkeypatch)
    for rule in RULES:
        assert got[rule].abs().max() > 0
        torch.testing.assert_close(got[rule], plain[rule], rtol=1e-5, atol=1e-6 * float(plain[rule].abs().max()))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "autograd"])
def test_a_neurons_backward_is_cropped_to_its_nonzero_box_until_it_spreads(compiled: bool) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), random_bn(4, 1), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1, bias=False), random_bn(4, 2), nn.ReLU()).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 32, 32, requires_grad=True)
    with AttributionContext(net, compile_backward=compiled) as ac, Probe(net, ["5"]) as probe:
        net(x)
    got = ac.explain(x, probe["5"], Unit("5", 1, 16, 16), ("guided",), retain_graph=True)["guided"]
    assert ac.compiled_walks == int(compiled)
    # the unit's one-pixel gradient is searched for its box, then the crop's 3x3 output carries its box on
    assert ac.chain_steps == [kernels.SEARCHED, kernels.CROPPED]
    assert got[0].abs().sum(dim=0).nonzero().min() >= 14 and got[0].abs().sum(dim=0).nonzero().max() <= 18
    whole = ac.explain(x, probe["5"], Unit("5", 1), ("guided",), objective="channel")["guided"]
    assert ac.chain_steps == [kernels.SPREAD, kernels.DENSE]  # a whole channel: no crop from the first chain on
    assert whole.abs().amax() > 0


def test_the_fused_nodes_are_the_ones_in_the_graph() -> None:
    net = ChainNet()
    outs: dict[str, str] = {}
    ins: dict[str, str] = {}

    chain_nodes: dict[str, tuple] = {}

    def hook(m, i, o, n):
        outs[n], ins[n] = type(o.grad_fn).__name__, type(i[0].grad_fn).__name__
        chain_nodes[n] = tuple(f for f in o.grad_fn.next_functions if f[0] is not None or n == "c5")

    hooks = [m.register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n)) for n, m in net.named_children()]
    try:
        with AttributionContext(net):
            net(torch.randn(1, 3, 16, 16, requires_grad=True))
    finally:
        for h in hooks:
            h.remove()
    assert outs["b1"] == outs["b2"] == outs["b4"] == "_ChainBatchNormBackward"  # BN folded into its conv
    assert outs["c1"] == "ConvolutionBackward0"  # the conv output keeps its own node for other uses
    assert ins["c2"] == ins["c3"] == ins["c7"] == "_ChainRectifierBackward"  # relu(BN(conv)) as one node
    assert ins["p1"] == "NoneType" and [type(f[0]).__name__ for f in chain_nodes["b1"]] == ["AccumulateGrad"]
    assert ins["p4"] == "_ChainRectifierBackward"  # relu(conv + bias), no BN
    assert ins["c4"] == "ConstantPadNdBackward0"
    # the symmetric pad is the conv's padding in the backward: the chain skips the pad's node
    assert [type(f[0]).__name__ for f in chain_nodes["b4"]] == ["_ChainRectifierBackward"]
    assert ins["p5"] == "_RectifierBackward"  # after the in-place residual the chain is not used
    assert [type(f[0]).__name__ for f in chain_nodes["c5"]] == ["ConstantPadNdBackward0", "NoneType", "NoneType"]
    assert [type(f[0]).__name__ for f in chain_nodes["b6"]] == ["_ChainRectifierBackward"]  # uneven pad folded


def _static(fn, shape=(1, 2, 6, 6)) -> bool:
    x = torch.randn(*shape, requires_grad=True)
    with AttributionContext() as ac:
        fn(x)
    return ac.deconv_static


def test_deconv_static_is_told_from_the_ops_recorded() -> None:
    conv = nn.Conv2d(2, 2, 3, padding=1)
    assert _static(lambda x: F.relu(conv(x)) * 2 + 1)
    assert _static(lambda x: F.dropout(F.relu(x), 0.5, False).mean())
    assert _static(lambda x: F.adaptive_avg_pool2d(F.relu6(x), 1).flatten(1))
    assert not _static(lambda x: F.max_pool2d(F.relu(x), 2))  # switches depend on the image
    assert not _static(lambda x: F.relu(x) * torch.sigmoid(x.mean()))  # gating (squeeze-excitation)
    assert not _static(lambda x: F.relu(x) * F.relu(x).mean())  # a product of two image-dependent factors
    assert not _static(lambda x: F.dropout(F.relu(x), 0.5, True))  # training dropout: a random mask
    assert not _static(lambda x: F.hardtanh(x, -1, 1))  # not a rectifier: plain derivative, image-dependent
    assert not _static(lambda x: F.silu(x))
    assert not _static(lambda x: F.relu(x) / (x.abs() + 1))


def test_deconv_maps_of_a_static_net_are_the_same_for_every_image_and_cached() -> None:
    from deepvis_app.zoo import load_model

    net = load_model("efficientnet_lite0", weights="random", device="cpu").net
    layer = "_blocks.4"
    cache = DeconvCache()
    maps = []
    for seed in (1, 2):
        x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        with AttributionContext(net) as ac, Probe(net, [layer]) as probe:
            net(x)
        assert ac.deconv_static
        exp = ac.explain(x, probe[layer], Unit(layer, 5, 3, 2), ("deconv", "guided"), deconv_cache=cache,
                         retain_graph=True)
        fresh = ac.explain(x, probe[layer], Unit(layer, 5, 3, 2), ("deconv",))
        torch.testing.assert_close(exp["deconv"], fresh["deconv"], rtol=1e-5, atol=1e-7)
        maps.append((exp["deconv"], exp["guided"]))
    assert (cache.misses, cache.hits) == (1, 1)
    assert maps[0][0].abs().max() > 0
    assert not torch.allclose(maps[0][1], maps[1][1])  # guided backprop does see the image


def test_deconv_cache_is_not_used_where_the_image_matters() -> None:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    cache = DeconvCache()
    maps = []
    for seed in (1, 2):
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed), requires_grad=True)
        with AttributionContext(net) as ac, Probe(net, ["layer2"]) as probe:
            net(x)
        assert not ac.deconv_static  # max-pooling after the stem
        maps.append(ac.explain(x, probe["layer2"], Unit("layer2", 3, 2, 2), ("deconv",),
                               deconv_cache=cache)["deconv"])
    assert (cache.misses, cache.hits) == (0, 0)
    assert not torch.allclose(maps[0], maps[1])


def test_deconv_cache_keeps_the_nonzero_box_and_evicts_by_bytes() -> None:
    cache = DeconvCache(max_bytes=3 * 3 * 4 * 4 + 3 * 4)  # one 3x3x4 box and one 3x1x1 box of float32
    a = torch.zeros(1, 3, 20, 30)
    a[0, :, 5:8, 10:14] = torch.arange(36.0).view(3, 3, 4) - 10
    cache.put(("a",), a)
    assert cache.bytes == 3 * 3 * 4 * 4  # only the box is stored
    assert torch.equal(cache.get(("a",)), a)
    b = torch.zeros(1, 3, 20, 30)
    b[0, 1, 19, 29] = 2.0
    cache.put(("b",), b)  # one pixel: both fit
    assert len(cache) == 2 and torch.equal(cache.get(("b",)), b)
    c = torch.zeros(1, 3, 20, 30)
    c[0, 0, 0:3, 0:4] = 1.0
    cache.put(("c",), c)  # over the budget: the least recently used ("a") goes
    assert cache.get(("a",)) is None and torch.equal(cache.get(("c",)), c) and torch.equal(cache.get(("b",)), b)
    empty = torch.zeros(1, 3, 20, 30)
    cache.put(("z",), empty)
    assert torch.equal(cache.get(("z",)), empty)


def test_folded_weights_are_reused_across_frames_and_remade_when_the_model_changes(monkeypatch) -> None:
    """BN's scale folded into the conv weight is made once, not per forward; new statistics (an in-place
    change, as load_state_dict makes) give new folded weights, so the backward stays exact."""
    net = ChainNet()
    x = torch.randn(1, 3, 21, 19, generator=torch.Generator().manual_seed(5))
    unit = Unit("b6", 2, 1, 1)
    first = _explain(net, x, "b6", unit)
    calls: list[int] = []
    real = torch.rsqrt

    def counting(t, *a, **k):
        calls.append(1)
        return real(t, *a, **k)

    monkeypatch.setattr(torch, "rsqrt", counting)
    again = _explain(net, x, "b6", unit)
    assert calls == []  # every scale and folded weight came from the first frame
    for rule in RULES:
        torch.testing.assert_close(again[rule], first[rule], rtol=0, atol=0)
    with torch.no_grad():
        net.b4.running_var.mul_(3.0)
        net.b2.weight.neg_()
    changed = _explain(net, x, "b6", unit)
    assert calls  # remade
    monkeypatch.undo()
    plain = _explain(net, x, "b6", unit, fuse=False, monkeypatch=monkeypatch)
    for rule in RULES:
        torch.testing.assert_close(changed[rule], plain[rule], rtol=1e-5, atol=1e-6 * float(plain[rule].abs().max()))
        assert not torch.allclose(changed[rule], first[rule])
