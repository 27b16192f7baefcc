"""Attribution rules: hand-computed numbers on tiny nets, agreement with independent references, model untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import hooks_left
from torch import nn

from deepvis_app.attribution import RULES, AttributionContext, attribute, explain_unit, render_view
from deepvis_app.errors import DeepVisError, ParamError
from deepvis_app.probe import Capture, Probe
from deepvis_app.values import ClassTarget, Unit

# ------------------------------------------------------------------------------------------------------------
# conv -> relu -> maxpool -> conv on a 1-channel 4x4 image

X = torch.tensor([[1.0, -2.0, 3.0, 0.5],
                  [-1.0, 4.0, -3.0, 2.0],
                  [0.5, -0.5, -2.0, -1.0],
                  [2.0, 1.0, -4.0, -3.0]]).view(1, 1, 4, 4)
W2 = torch.tensor([[0.5, -1.0], [-3.0, 2.0]])


class TinyNet(nn.Module):
    """conv1 (1x1, weight 1) -> rectifier -> maxpool 2x2 -> conv2 (2x2 -> one output)."""

    def __init__(self, act: str = "module", kernel: torch.Tensor | None = None) -> None:
        super().__init__()
        k = torch.tensor([[1.0]]) if kernel is None else kernel
        self.conv1 = nn.Conv2d(1, 1, k.shape[-1], padding=k.shape[-1] // 2, bias=False)
        self.conv1.weight.data = k.view(1, 1, *k.shape)
        self.relu = nn.ReLU6() if act == "relu6" else nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(1, 1, 2, bias=False)
        self.conv2.weight.data = W2.view(1, 1, 2, 2).clone()
        self.act = act
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        a = self.conv1(x)
        if self.act == "functional":
            r = F.relu(a)
        elif self.act == "torch.relu":
            r = torch.relu(a)
        elif self.act == "method_":
            r = a.clone()
            r.relu_()
        elif self.act == "hardtanh":
            r = F.hardtanh(a, 0.0, 6.0)
        else:
            r = self.relu(a)
        return self.conv2(self.pool(r))


# Hand computation for conv1 = identity: relu(X) pooled in 2x2 windows ->
#   TL {1,0,0,4}: switch (1,1); TR {3,.5,0,2}: switch (0,2); BL {.5,0,2,1}: switch (3,0);
#   BR all 0 (X = -2,-1,-4,-3): tie -> first element (2,2), where X < 0.
# Upstream gradient at the switches = W2: (1,1) 0.5, (0,2) -1, (3,0) -3, (2,2) 2.
#   gradient: g * [x > 0]       -> 0.5, -1, -3, 0
#   deconv:   relu(g)           -> 0.5,  0,  0, 2   (mask ignored: BR switch passes)
#   guided:   relu(g) * [x > 0] -> 0.5,  0,  0, 0
def _at(values: dict[tuple[int, int], float]) -> torch.Tensor:
    out = torch.zeros(1, 1, 4, 4)
    for (i, j), v in values.items():
        out[0, 0, i, j] = v
    return out


EXPECTED = {
    "gradient": _at({(1, 1): 0.5, (0, 2): -1.0, (3, 0): -3.0}),
    "deconv": _at({(1, 1): 0.5, (2, 2): 2.0}),
    "guided": _at({(1, 1): 0.5}),
}


@pytest.mark.parametrize("act", ["module", "functional", "torch.relu", "method_", "hardtanh"])
@pytest.mark.parametrize("method", ["gradient", "deconv", "guided"])
def test_hand_computed_rules(act: str, method: str) -> None:
    net = TinyNet(act).eval()
    got = attribute(net, X, layer="conv2", unit=(0, 0, 0), method=method)
    assert got.shape == X.shape
    torch.testing.assert_close(got, EXPECTED[method])


def test_plain_gradient_matches_autograd() -> None:
    net = TinyNet().eval()
    x = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x).sum(), x)
    torch.testing.assert_close(g, EXPECTED["gradient"])


def test_relu6_rules_by_hand() -> None:
    # X(1,1) = 7 saturates ReLU6 (-> 6, still the TL switch): the gradient passes nothing there; deconv
    # passes relu(0.5); guided keeps only the [x > 0] mask, so it passes 0.5 at the saturated switch too.
    x = X.clone()
    x[0, 0, 1, 1] = 7.0
    net = TinyNet("relu6").eval()
    maps = explain_unit(net, x, "conv2", (0, 0, 0), ("gradient", "deconv", "guided")).maps
    torch.testing.assert_close(maps["gradient"], _at({(0, 2): -1.0, (3, 0): -3.0}))
    torch.testing.assert_close(maps["deconv"], _at({(1, 1): 0.5, (2, 2): 2.0}))
    torch.testing.assert_close(maps["guided"], _at({(1, 1): 0.5}))


def _reference_tiny(x: torch.Tensor, k: torch.Tensor, rule: str) -> torch.Tensor:
    """Explicit loops: 3x3 conv (pad 1) -> relu -> 2x2 maxpool -> 2x2 conv, backward by hand."""
    xs = np.pad(x[0, 0].numpy().astype(np.float64), 1)
    kk = k.numpy().astype(np.float64)
    a = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            a[i, j] = (xs[i:i + 3, j:j + 3] * kk).sum()
    r = np.maximum(a, 0)
    g_a = np.zeros((4, 4))
    for pi in range(2):
        for pj in range(2):
            win = r[2 * pi:2 * pi + 2, 2 * pj:2 * pj + 2]
            si, sj = divmod(int(np.argmax(win)), 2)  # first maximum, like torch
            i, j = 2 * pi + si, 2 * pj + sj
            g = float(W2[pi, pj])
            if rule == "gradient":
                g_a[i, j] = g * (a[i, j] > 0)
            elif rule == "deconv":
                g_a[i, j] = max(g, 0.0)
            else:
                g_a[i, j] = max(g, 0.0) * (a[i, j] > 0)
    g_x = np.zeros((6, 6))  # transposed convolution = scatter each g_a through the kernel
    for i in range(4):
        for j in range(4):
            g_x[i:i + 3, j:j + 3] += g_a[i, j] * kk
    return torch.from_numpy(g_x[1:5, 1:5]).float().view(1, 1, 4, 4)


@pytest.mark.parametrize("method", ["gradient", "deconv", "guided"])
def test_tiny_net_with_3x3_kernel_matches_loops(method: str) -> None:
    k = torch.tensor([[0.0, -0.5, 0.0], [0.25, 1.0, 0.5], [0.0, 0.0, -1.0]])
    net = TinyNet(kernel=k).eval()
    got = attribute(net, X, layer="conv2", unit=(0, 0, 0), method=method)
    torch.testing.assert_close(got, _reference_tiny(X, k, method))


def test_the_three_rules_differ_on_the_tiny_net() -> None:
    maps = {m: EXPECTED[m] for m in ("gradient", "deconv", "guided")}
    assert not torch.equal(maps["gradient"], maps["deconv"])
    assert not torch.equal(maps["gradient"], maps["guided"])
    assert not torch.equal(maps["deconv"], maps["guided"])


# ------------------------------------------------------------------------------------------------------------
# Reference implementation on torchvision models: swap every rectifier module for one with an explicit rule


class _RefFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rule, upper):
        ctx.save_for_backward(x)
        ctx.rule, ctx.upper = rule, upper
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        mask = (x > 0) if ctx.upper is None else (x > 0) & (x < ctx.upper)
        if ctx.rule == "gradient":
            out = g * mask
        elif ctx.rule == "deconv":
            out = g.clamp(min=0)
        else:
            out = g.clamp(min=0) * (x > 0)  # guided ignores the ReLU6 ceiling (see docs/attribution.md)
        return out, None, None


class RefRect(nn.Module):
    def __init__(self, rule: str, upper: float | None = None) -> None:
        super().__init__()
        self.rule, self.upper = rule, upper

    def forward(self, x):
        return _RefFn.apply(x, self.rule, self.upper)


class RefBasicConv(nn.Module):
    """GoogLeNet's BasicConv2d (conv, bn, functional relu) with the reference rectifier."""

    def __init__(self, block: nn.Module, rule: str) -> None:
        super().__init__()
        self.conv, self.bn, self.act = block.conv, block.bn, RefRect(rule)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def _reference_copy(net: nn.Module, rule: str) -> nn.Module:
    ref = copy.deepcopy(net)
    for parent in list(ref.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "BasicConv2d":
                setattr(parent, name, RefBasicConv(child, rule))
            elif isinstance(child, nn.ReLU):
                setattr(parent, name, RefRect(rule))
            elif isinstance(child, nn.ReLU6):
                setattr(parent, name, RefRect(rule, 6.0))
    return ref


def _reference_attr(net: nn.Module, x: torch.Tensor, layer: str, unit: tuple[int, int, int], rule: str):
    ref = _reference_copy(net, rule)
    xin = x.clone().requires_grad_(True)
    with Probe(ref, [layer]) as probe:
        ref(xin)
    c, y, xx = unit
    (g,) = torch.autograd.grad(probe[layer][0, c, y, xx], xin)
    return g


def _snapshot(net: nn.Module):
    return {k: v.clone() for k, v in net.state_dict().items()}


def _assert_untouched(net: nn.Module, state: dict, x: torch.Tensor, before: torch.Tensor) -> None:
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert hooks_left(net) == []
    with torch.no_grad():
        assert torch.equal(net(x), before)


def _count_rectifier_calls(net: nn.Module, x: torch.Tensor) -> int:
    """Independent count: forward hooks on ReLU modules plus one per BasicConv2d call (its F.relu)."""
    count = [0]
    handles = [m.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
               for m in net.modules() if isinstance(m, nn.ReLU | nn.ReLU6) or type(m).__name__ == "BasicConv2d"]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return count[0]


MODELS = {
    # ReLU modules used inplace and reused within each block
    "resnet18": (lambda: torchvision.models.resnet18(), "layer3", 64),
    # ReLUs called functionally (F.relu inside BasicConv2d)
    "googlenet": (lambda: torchvision.models.googlenet(aux_logits=False, init_weights=True), "inception4a", 96),
    # inplace ReLU modules in every dense layer
    "densenet121": (lambda: torchvision.models.densenet121(), "features.denseblock2", 64),
}


@pytest.mark.parametrize("arch", list(MODELS))
def test_agrees_with_reference_on_torchvision(arch: str) -> None:
    build, layer, size = MODELS[arch]
    torch.manual_seed(0)
    net = build().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, size, size)
    state = _snapshot(net)
    with torch.no_grad():
        before = net(x)
    exp = explain_unit(net, x, layer, 3, ("gradient", "deconv", "guided"))
    unit = (exp.unit.channel, exp.unit.y, exp.unit.x)
    for rule in ("gradient", "deconv", "guided"):
        ref = _reference_attr(net, x, layer, unit, rule)
        got = exp[rule]
        assert got.abs().max() > 0
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    assert not torch.allclose(exp["guided"], exp["gradient"])
    _assert_untouched(net, state, x, before)
    # every rectifier call of the forward got the rule: module calls (ResNet's reused ReLUs count once per
    # call) and GoogLeNet's functional F.relu inside each BasicConv2d
    with AttributionContext(net) as ac:
        net(x.clone().requires_grad_(True))
    functional_head = 1 if arch == "densenet121" else 0  # DenseNet.forward: F.relu(features, inplace=True)
    assert ac.rectifier_calls == _count_rectifier_calls(net, x) + functional_head


def test_efficientnet_lite0_relu6_reused_module() -> None:
    from deepvis_app.zoo import load_model

    vm = load_model("efficientnet_lite0", weights="random", device="cpu")
    net = vm.net
    x = torch.randn(1, 3, 96, 96)
    state = _snapshot(net)
    with torch.no_grad():
        before = net(x)
    exp = explain_unit(net, x, "_blocks.3", 5, ("gradient", "deconv", "guided"))
    unit = (exp.unit.channel, exp.unit.y, exp.unit.x)
    for rule in ("gradient", "deconv", "guided"):
        ref = _reference_attr(net, x, "_blocks.3", unit, rule)
        torch.testing.assert_close(exp[rule], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    _assert_untouched(net, state, x, before)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_agrees_with_captum_on_plain_relu_modules() -> None:
    from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 16, 16)
    unit = (2, 3, 2)
    for method, cls in (("guided", NeuronGuidedBackprop), ("deconv", NeuronDeconvolution)):
        ours = attribute(net, x, layer="5", unit=unit, method=method)
        theirs = cls(net, net[5]).attribute(x.clone(), neuron_selector=unit)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Objectives, saliency, Grad-CAM, live-pipeline API


def test_objectives() -> None:
    net = TinyNet().eval()
    # argmax default: conv2 has one position, so the neuron is (0, 0, 0)
    default = attribute(net, X, layer="conv2", unit=0, method="gradient")
    torch.testing.assert_close(default, EXPECTED["gradient"])
    # channel objective on conv1 (identity conv) = all-ones gradient
    chan = attribute(net, X, layer="conv1", unit=0, method="gradient", objective="channel")
    torch.testing.assert_close(chan, torch.ones_like(X))
    # seed: upstream = the activation itself -> gradient = x on conv1
    seed = attribute(net, X, layer="conv1", unit=0, method="gradient", objective="seed")
    torch.testing.assert_close(seed, X)
    # neuron default on conv1 = argmax of X: (1, 1)
    exp = explain_unit(net, X, "conv1", 0, ("gradient",))
    assert (exp.unit.y, exp.unit.x) == (1, 1)


def test_class_objectives_and_saliency() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 5)).eval()
    x = torch.randn(1, 3, 8, 8)
    xin = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xin)[0, 2], xin)
    logit = attribute(net, x, None, 2, "gradient", objective="logit")
    torch.testing.assert_close(logit, g)
    sal = attribute(net, x, None, 2, "saliency", objective="logit")
    torch.testing.assert_close(sal, g.abs().amax(dim=1, keepdim=True))
    ixg = attribute(net, x, None, 2, "input_x_gradient", objective="logit")
    torch.testing.assert_close(ixg, g * x)
    xin = x.clone().requires_grad_(True)
    (gp,) = torch.autograd.grad(net(xin).softmax(1)[0, 2], xin)
    torch.testing.assert_close(attribute(net, x, None, 2, "gradient", objective="prob"), gp)


def test_gradcam_by_hand() -> None:
    # Grad-CAM at conv1 for the neuron conv2(0,0,0): d out / d conv1 output is the gradient map above
    # (W2 at the switches where relu passes: 0.5, -1, -3; the BR switch is masked), so the channel weight is
    # its spatial mean (0.5 - 1 - 3) / 16 = -3.5 / 16, and cam = relu(w * A) with A = conv1 output = X.
    net = TinyNet().eval()
    exp = explain_unit(net, X, "conv2", (0, 0, 0), ("gradcam", "guided_gradcam"), cam_layer="conv1")
    expected = (-3.5 / 16 * X).clamp(min=0)
    torch.testing.assert_close(exp["gradcam"], expected)
    torch.testing.assert_close(exp["guided_gradcam"], EXPECTED["guided"] * expected)


def test_live_pipeline_reuses_one_forward() -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 64, 64).requires_grad_(True)
    with AttributionContext(net) as ac, Probe(net, ["layer2"]) as probe:
        logits = net(x)
    with torch.no_grad():
        assert torch.equal(logits, net(x))  # the frame's forward is not changed by the context
    first = ac.explain(x, probe["layer2"], Unit("layer2", 4), ("gradient", "deconv", "guided"), retain_graph=True)
    second = ac.explain(x, probe["layer2"], Unit("layer2", 9), ("guided", "saliency"), objective="channel")
    for m in ("gradient", "deconv", "guided"):
        torch.testing.assert_close(first[m], attribute(net, x.detach(), "layer2", 4, m))
    torch.testing.assert_close(second["guided"],
                               attribute(net, x.detach(), "layer2", 9, "guided", objective="channel"))


@pytest.mark.parametrize("layer", ["layer2", "layer1.0.relu", "layer1.0.relu@0"])
def test_graph_cut_records_only_up_to_the_layer(layer: str) -> None:
    """Capture(no_grad_after=layer): the layer keeps its graph (same maps, bit for bit), everything after it has
    none, the logits are unchanged, grad mode is restored; a bare name of a reused module (ResNet's relu) cuts
    after its last call."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = net(x)
    xg = x.clone().requires_grad_(True)
    with AttributionContext(net) as ac, Capture(net, [layer, "layer3"], no_grad_after=layer, example=xg) as probe:
        logits = probe.run(xg)
    assert torch.is_grad_enabled()
    assert torch.equal(logits, plain) and logits.grad_fn is None and probe["layer3"].grad_fn is None
    assert probe[layer].grad_fn is not None
    cut = ac.explain(xg, probe[layer], Unit(layer, 3), RULES)
    xf = x.clone().requires_grad_(True)
    with AttributionContext(net) as af, Probe(net, [layer]) as full:
        net(xf)
    ref = af.explain(xf, full[layer], Unit(layer, 3), RULES)
    assert cut.unit == ref.unit
    for rule in RULES:
        assert torch.equal(cut[rule], ref[rule])
    assert hooks_left(net) == []


def test_graph_cut_restores_grad_mode_after_an_error() -> None:
    net = TinyNet().eval()
    cut = Capture(net, no_grad_after="conv1", example=X)
    with pytest.raises(RuntimeError, match="boom"), cut:
        net(X.clone().requires_grad_(True))
        assert not torch.is_grad_enabled()
        raise RuntimeError("boom")
    assert torch.is_grad_enabled()
    with torch.no_grad():
        with Capture(net, no_grad_after="conv1", example=X):
            net(X)
        assert not torch.is_grad_enabled()  # restored to the mode it found, not switched on
    assert torch.is_grad_enabled()
    with pytest.raises(DeepVisError, match="unknown layer"):
        Capture(net, no_grad_after="nope", example=X)


def test_errors_are_user_errors() -> None:
    net = TinyNet().eval()
    with pytest.raises(DeepVisError, match="valid layers"):
        attribute(net, X, layer="nope", unit=0)
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.0"):
        attribute(net, X, layer="conv2", unit=3)
    with pytest.raises(DeepVisError, match=r"\(y=9, x=0\) is outside layer 'conv1': y in 0\.\.3"):
        attribute(net, X, layer="conv1", unit=(0, 9, 0))
    with pytest.raises(DeepVisError, match=r"class 5 is out of range: valid classes are 0\.\.0"):
        attribute(net, X, None, 5, objective="logit")
    with pytest.raises(ParamError, match="objective must be one of"):
        attribute(net, X, layer="conv1", unit=0, objective="magic")
    xg = X.clone().requires_grad_(True)
    with AttributionContext(net) as ac, Probe(net, ["conv1"]) as probe:
        out = net(xg)
    with pytest.raises(ParamError, match="objective is set by the class target's score"):
        ac.explain(xg, out, ClassTarget(0), ("gradient",), objective="channel", retain_graph=True)
    with pytest.raises(TypeError, match="values.Unit or values.ClassTarget"):
        ac.explain(xg, probe["conv1"], 0, ("gradient",), retain_graph=True)
    with pytest.raises(DeepVisError, match="unknown method"):
        attribute(net, X, layer="conv1", unit=0, method="magic")


def test_render_views() -> None:
    a = torch.zeros(1, 3, 4, 4)
    a[0, 0, 0, 0] = 2.0
    a[0, 1, 0, 0] = -1.0
    a[0, 2, 1, 1] = 1.0
    raw = render_view(a, "raw")
    assert raw.shape == (4, 4, 3) and raw.dtype == np.uint8
    assert tuple(raw[0, 0]) == (255, 64, 128)  # 0.5 + x/4 -> 1.0, 0.25, 0.5
    assert tuple(raw[3, 3]) == (128, 128, 128)
    gray = render_view(a, "gray")  # channel mean: (0,0) 1/3, (1,1) 1/3 -> max 1/3 -> 1.0
    assert tuple(gray[0, 0]) == (255, 255, 255) and tuple(gray[2, 2]) == (128, 128, 128)
    norm = render_view(a, "norm")  # |x| summed: (0,0) 3, (1,1) 1
    assert norm[0, 0, 0] == 255 and norm[1, 1, 0] == 85 and norm[2, 2, 0] == 0
    blur = render_view(a, "normblur", blur_sigma=1.0)
    assert blur.max() == 255 and blur[0, 1, 0] > 0 and blur[3, 3, 0] < blur[0, 0, 0]
    with pytest.raises(DeepVisError):
        render_view(a, "sepia")


def test_render_view_percentile_keeps_faint_detail_visible() -> None:
    a = torch.full((1, 3, 10, 10), 0.01)
    a[0, :, 0, 0] = 100.0  # one hot pixel
    by_max = render_view(a, "norm")
    robust = render_view(a, "norm", percentile=98.0)
    assert by_max[5, 5, 0] == 0  # 0.03 / 300 rounds to black
    assert robust[5, 5, 0] == 255 and robust[0, 0, 0] == 255  # 98th pct = 0.03: faint pixels full, hot one clipped


def test_render_view_percentile_is_over_the_pixels_the_signal_reaches() -> None:
    """A small receptive field: zero almost everywhere. The percentile ignores the zeros, so the patch keeps
    its shades (a percentile over the whole image would be 0 and saturate the patch to a white block)."""
    a = torch.zeros((1, 3, 100, 100))
    patch = torch.linspace(0.1, 1.0, 25).view(5, 5)
    a[0, :, 10:15, 20:25] = patch
    img = render_view(a, "norm", percentile=99.5)[..., 0]
    assert img[:10].max() == 0 and img[15:].max() == 0  # outside the field: black
    inside = img[10:15, 20:25].astype(int)
    assert inside.min() < 60 and inside.max() == 255 and len(np.unique(inside)) > 20  # shades, not a block


# ------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_attribute(tmp_path, capsys) -> None:
    import cv2
    import skimage.data

    from deepvis_app.cli import main

    img = tmp_path / "cat.png"
    cv2.imwrite(str(img), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    common = ["--weights", "random", "--device", "cpu"]
    out = tmp_path / "a.npy"
    assert main(["attribute", str(img), "--layer", "_blocks.1", "--unit", "3", "--method", "deconv",
                 "--out", str(out), *common]) == 0
    arr = np.load(out)
    assert arr.shape == (3, 224, 224) and np.abs(arr).max() > 0
    png = tmp_path / "a.png"
    assert main(["attribute", str(img), "--layer", "_blocks.1", "--unit", "3", "--y", "5", "--x", "6",
                 "--method", "guided", "--view", "normblur", "--out", str(png), *common]) == 0
    view = cv2.imread(str(png))
    assert view.shape == (224, 224, 3) and view.max() == 255
    capsys.readouterr()
    assert main(["attribute", str(img), "--layer", "nope", "--unit", "3", "--out", str(png), *common]) == 2
    err = capsys.readouterr().err
    assert "valid layers: _conv_stem" in err and len(err.strip().splitlines()) == 1
    assert main(["attribute", str(img), "--layer", "_blocks.1", "--unit", "99", "--out", str(png), *common]) == 2
    assert "valid units are 0..23" in capsys.readouterr().err
    assert main(["attribute", str(bad), "--layer", "_blocks.1", "--unit", "3", "--out", str(png), *common]) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_rule_note_names_activations_without_rules() -> None:
    from deepvis_app.attribution import rule_note, unruled_activations

    relu_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU6())
    mixed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardswish(), nn.Conv2d(4, 4, 3), nn.SiLU(), nn.ReLU())
    assert unruled_activations(relu_net) == [] and "apply everywhere" in rule_note(relu_net)
    assert unruled_activations(mixed) == ["Hardswish", "SiLU"]
    assert rule_note(mixed).startswith("Hardswish, SiLU get no ReLU-style rule")
