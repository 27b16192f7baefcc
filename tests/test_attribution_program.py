"""The rules' backward as one compiled program (`attribution.program`): equal to autograd's backward through the
Python rule nodes on every graph shape it takes (conv chains of every kind, residual sums in place, max-pooling,
plain convs with a bias, channels-last, a batch of two, one rule or three stacked), equal to Captum, run without
calling a Python rule node, and declined (autograd runs) where the graph holds another kind of node."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_bn
from test_attribution_fused import ChainNet
from test_attribution_stacked import ResidualNet
from torch import nn

from deepvis_app.attribution import RULES, AttributionContext, fused, program, rules
from deepvis_app.probe import Probe
from deepvis_app.values import Unit


def _vgg() -> nn.Module:
    """Plain convs with a bias and in-place ReLUs between max-pools (VGG's pattern: the conv's own node)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
                        nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(inplace=True)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class _PadNet(nn.Module):
    """Uneven zero pads the chains do not fold (the conv after them pads too) and a residual sum, on maps large
    enough to be cropped: the program moves a gradient's box through each pad and joins two boxes at the sum."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.c1, self.b1 = nn.Conv2d(3, 6, 3, padding=1, bias=False), random_bn(6, 3)
        self.c2, self.b2 = nn.Conv2d(6, 6, 3, padding=1, bias=False), random_bn(6, 4)
        self.c3 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        a = F.relu(self.b1(self.c1(x)))
        # a residual sum whose two sides pad `a` differently: their gradients meet at `a` with boxes apart
        b = F.relu(self.b2(self.c2(F.pad(a, (2, 1, 3, 0))))) + F.pad(a, (0, 3, 0, 3))
        return F.relu(self.c3(F.pad(b, (0, 3, 1, 2))))


def _explain(net, x, layer, unit, methods, *, compiled: bool):
    xin = x.clone().requires_grad_(True)
    ac = AttributionContext(net, compile_backward=compiled, stack_views=False)
    with ac, Probe(net, [layer]) as probe:
        net(xin)
    return ac, ac.explain(xin, probe[layer], unit, methods)


class _FireNet(nn.Module):
    """SqueezeNet's Fire module after a max-pool: a 1x1 squeeze, then 1x1 and 3x3 expands concatenated along the
    channels (one node sending each branch its own channels), then a conv-BN-ReLU6; maps large enough to crop."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(9)
        self.stem, self.pool = nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2, ceil_mode=True)
        self.squeeze, self.e1, self.e3 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 6, 1), nn.Conv2d(4, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.out, self.bn = nn.Conv2d(12, 5, 3, padding=1, bias=False), random_bn(5, 14)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        s = self.relu(self.squeeze(self.pool(self.relu(self.stem(x)))))
        return F.relu6(self.bn(self.out(torch.cat([self.relu(self.e1(s)), self.relu(self.e3(s))], 1))))


NETS = {"chain": (ChainNet, (2, 3, 21, 19), ["b6", "c5", "b4", "b7", "b2"]),
        "residual": (ResidualNet, (1, 3, 40, 40), ["relu@2", "b4", "relu@1"]),
        "vgg": (_vgg, (1, 3, 30, 30), ["7", "4", "1"]),
        "pads": (_PadNet, (1, 3, 40, 36), ["c3", "b2"]),
        "fire": (_FireNet, (2, 3, 64, 62), ["bn", "e3"])}


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", list(NETS))
def test_the_compiled_backward_equals_autograds_through_the_rule_nodes(name: str, layout: str) -> None:
    make, shape, layers = NETS[name]
    net = make()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(11))
    if layout == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    for layer in layers:
        with torch.no_grad(), Probe(net, [layer]) as probe:
            net(x)
        h, w = probe[layer].shape[-2:]
        for (y, xx), methods in (((h // 2, w // 3), RULES), ((0, w - 1), ("guided",)), ((h - 1, 0), ("deconv",)),
                                 ((h // 2, w // 2), ("gradient", "guided"))):
            unit = Unit(layer, 1, y, xx)
            ac, got = _explain(net, x, layer, unit, methods, compiled=True)
            assert ac.compiled_walks == 1, (layer, methods)
            _, want = _explain(net, x, layer, unit, methods, compiled=False)
            if "deconv" in methods and y == h // 2:  # a centre unit always reaches the image (a corner may not)
                assert want["deconv"].abs().max() > 0, layer
            for m in methods:
                scale = float(want[m].abs().max())
                assert got[m].shape == want[m].shape
                torch.testing.assert_close(got[m], want[m], rtol=1e-5, atol=1e-6 * max(scale, 1e-12),
                                           msg=f"{name} {layer} {unit} {m}")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_compiled_backward_equals_captum() -> None:
    from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop

    net = _vgg()
    plain = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.ReLU) else m for m in net])  # Captum's hooks: no inplace
    x = torch.randn(1, 3, 30, 30, generator=torch.Generator().manual_seed(4))
    unit = (2, 3, 4)
    for method, cls in (("guided", NeuronGuidedBackprop), ("deconv", NeuronDeconvolution)):
        ac, ours = _explain(net, x, "7", Unit("7", *unit), (method,), compiled=True)
        assert ac.compiled_walks == 1
        theirs = cls(plain, plain[7]).attribute(x.clone(), neuron_selector=unit)
        assert theirs.abs().max() > 0
        torch.testing.assert_close(ours[method], theirs, rtol=1e-5, atol=1e-6)  # float summation order only


def test_no_python_rule_node_runs_in_a_compiled_backward(monkeypatch) -> None:
    """Autograd would call the Python nodes (each op inside hands the GIL back); the program never does."""
    net = ChainNet()
    x = torch.randn(1, 3, 21, 19, generator=torch.Generator().manual_seed(5))
    called = []

    def refuse(ctx, *grads):
        called.append(type(ctx).__name__)
        raise AssertionError("a Python rule node ran")

    for node in (rules._Rectifier, rules._ChainRectifier, fused._ChainBatchNorm, fused._EvalBatchNorm):
        monkeypatch.setattr(node, "backward", staticmethod(refuse))
    ac, exp = _explain(net, x, "b6", Unit("b6", 2, 1, 1), RULES, compiled=True)
    assert ac.compiled_walks == 1 and not called and all(exp[m].abs().max() > 0 for m in ("deconv", "guided"))
    with pytest.raises(AssertionError, match="Python rule node"):  # the same explain through autograd calls them
        _explain(net, x, "b6", Unit("b6", 2, 1, 1), RULES, compiled=False)


class _Gated(nn.Module):
    """A squeeze-excitation gate (sigmoid, a product of two activations): nodes the program does not run."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Conv2d(8, 8, 1)
        self.out = nn.Conv2d(8, 4, 3, padding=1, bias=False)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        a = F.relu(self.conv(x))
        a = a * torch.sigmoid(self.fc(a.mean((2, 3), keepdim=True)))
        return F.relu(self.out(a))


def test_a_graph_with_other_nodes_is_declined_and_explained_by_autograd() -> None:
    net = _Gated()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(8))
    ac, got = _explain(net, x, "out", Unit("out", 1, 5, 6), RULES, compiled=True)
    assert ac.compiled_walks == 0  # declined: autograd ran
    _, want = _explain(net, x, "out", Unit("out", 1, 5, 6), RULES, compiled=False)
    for m in RULES:
        torch.testing.assert_close(got[m], want[m])
    xin = x.clone().requires_grad_(True)
    with AttributionContext(net), Probe(net, ["out"]) as probe:
        net(xin)
    act = probe["out"]
    assert program.grads(act[0, 1, 5, 6], act, xin, ["guided"]) is None


def test_an_input_outside_the_graph_is_declined() -> None:
    net = _vgg()
    xin = torch.randn(1, 3, 30, 30, generator=torch.Generator().manual_seed(9)).requires_grad_(True)
    with AttributionContext(net), Probe(net, ["7"]) as probe:
        net(xin)
    act = probe["7"]
    assert program.grads(act[0, 1, 2, 2], act, xin, ["guided"]) is not None
    other = torch.zeros_like(xin, requires_grad=True)
    assert program.grads(act[0, 1, 2, 2], act, other, ["guided"]) is None


@pytest.mark.parametrize("views", [("guided",), ("gradient", "deconv", "guided")])
def test_the_live_pipeline_explains_through_the_program(lite0, photos, monkeypatch, views) -> None:
    """EfficientNet-Lite0's frames (the default model, its channels-last copy) run the compiled program, with the
    ERF too, and show the same images as autograd's backward would (the brightness scale may round a level)."""
    import time

    import numpy as np

    from deepvis_app.pipeline import Frame, FrameProcessor
    from deepvis_app.values import ViewRequest

    req = ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5), attribution=views, erf=True)
    shown = {}
    for compiled in ("1", "0"):
        monkeypatch.setenv("DEEPVIS_COMPILED_BACKWARD", compiled)
        proc = FrameProcessor(lite0)
        begun = proc.begin(Frame(0, photos["coffee"], time.perf_counter()), req)
        result = proc.finish(begun)
        assert begun.ctx.compiled_walks == (2 if compiled == "1" else 0)  # the views and the ERF
        shown[compiled] = result
    for m in views:
        a, b = (shown[c].attributions[m].astype(int) for c in ("1", "0"))
        assert a.shape == (224, 224, 3) and np.abs(a - b).max() <= 1, m
        assert a.std() > 5, m  # an image, not a blank pane
    assert np.abs(shown["1"].erf_map.astype(int) - shown["0"].erf_map.astype(int)).max() <= 1


def test_without_torchscript_the_same_code_runs_as_python(monkeypatch) -> None:
    """Where TorchScript cannot compile, the kernels and the program run as plain Python: same maps."""
    from deepvis_app.attribution import kernels

    net = _PadNet()
    x = torch.randn(1, 3, 40, 36, generator=torch.Generator().manual_seed(12))
    _, want = _explain(net, x, "c3", Unit("c3", 2, 20, 12), RULES, compiled=True)

    def refuse(fn):
        raise RuntimeError("TorchScript is not available here")

    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "SCRIPT_ERRORS", {})
    monkeypatch.setattr(torch.jit, "script", refuse)
    ac, got = _explain(net, x, "c3", Unit("c3", 2, 20, 12), RULES, compiled=True)
    assert ac.compiled_walks == 1 and kernels.compiled(program._run) is program._run
    assert "RuntimeError: TorchScript is not available here" in kernels.SCRIPT_ERRORS.values()
    for m in RULES:
        assert want[m].abs().max() > 0
        torch.testing.assert_close(got[m], want[m], rtol=1e-6, atol=1e-7 * float(want[m].abs().max()))


class _PartsNet(nn.Module):
    """Maps large enough to be cropped, where a neuron's gradient meets itself as a part (a 1x1 chain) and as a
    whole map (a conv with a trainable weight: autograd's own node, whose backward makes whole maps) at the stem's
    output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(8)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), random_bn(8, 11)
        self.c2, self.b2 = nn.Conv2d(8, 8, 1, bias=False), random_bn(8, 12)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.c4, self.b4 = nn.Conv2d(8, 6, 3, padding=1, bias=False), random_bn(6, 13)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        self.c3.weight.requires_grad_(True)  # not a chain: its own node

    def forward(self, x):
        a = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b4(self.c4(F.relu6(self.b2(self.c2(a))) + self.c3(a))))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("name", ["residual", "parts"])
def test_parts_of_a_neurons_gradient_on_large_maps_equal_autograd(name: str, layout: str) -> None:
    """On maps the program crops (32x32 and over), with a batch of two and three stacked rules: the gradient kept
    as its nonzero part through chains, rules and BN, two parts summed (ResNet's identity and its block), a part
    summed with a whole map, equal to autograd's backward; and the chains did crop (a regression to whole maps
    would still be equal)."""
    net, shape, layer = ((ResidualNet(), (2, 3, 256, 256), "b4") if name == "residual"
                         else (_PartsNet(), (2, 3, 64, 64), "b4"))
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(12))
    if layout == "channels_last":
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), Probe(net, [layer]) as probe:
        net(x)
    h, w = probe[layer].shape[-2:]
    unit = Unit(layer, 3, h // 2, w // 3)
    ac, got = _explain(net, x, layer, unit, RULES, compiled=True)
    assert ac.compiled_walks == 1
    assert {1, 2} & set(ac.chain_steps), ac.chain_steps  # cropped to a known or searched box
    _, want = _explain(net, x, layer, unit, RULES, compiled=False)
    for m in RULES:
        scale = float(want[m].abs().max())
        assert scale > 0
        torch.testing.assert_close(got[m], want[m], rtol=1e-5, atol=1e-6 * scale, msg=f"{name} {m}")
