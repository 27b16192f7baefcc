"""Several rules in one walk (`attribution.stacked`): the stacked views equal one autograd backward per rule on
every graph shape the walker meets -- fused conv chains, ResNet's in-place residual sum before a ReLU, max-pooling
(a node called once per view), a channels-last layout, a smooth activation with no rule, a token layer -- and
`explain` takes that path for two or more rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import random_bn
from torch import nn

from deepvis_app.attribution import RULES, AttributionContext
from deepvis_app.attribution.objectives import resolve_unit, unit_objective
from deepvis_app.layer_lookup import layer_info
from deepvis_app.probe import Capture
from deepvis_app.values import Unit


class ResidualNet(nn.Module):
    """A ResNet in small: stem conv-BN-ReLU, max-pool, a basic block with `out += identity` then an in-place ReLU,
    a strided block with a 1x1 downsample, a ReLU6 and a GELU (no rule: its plain derivative in every view)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.bn0 = nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False), random_bn(8, 0)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), random_bn(8, 1)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), random_bn(8, 2)
        self.relu = nn.ReLU(inplace=True)
        self.c3, self.b3 = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False), random_bn(12, 3)
        self.c4, self.b4 = nn.Conv2d(12, 12, 3, padding=1, bias=False), random_bn(12, 4)
        self.down, self.bd = nn.Conv2d(8, 12, 1, stride=2, bias=False), random_bn(12, 5)
        self.c5 = nn.Conv2d(12, 6, 3, padding=1)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        x = self.pool(self.relu(self.bn0(self.stem(x))))
        out = self.relu(self.b1(self.c1(x)))
        out = self.b2(self.c2(out))
        out += x
        x = self.relu(out)
        out = F.relu6(self.b3(self.c3(x)))
        out = self.b4(self.c4(out))
        out += self.bd(self.down(x))
        x = self.relu(out)
        return F.gelu(self.c5(x))


class TokenNet(nn.Module):
    """Patches -> tokens with a class token -> LayerNorm -> MLP (Linear, ReLU, Linear): a token layer's units."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.patch = nn.Conv2d(3, 16, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 16), requires_grad=False)
        self.norm = nn.LayerNorm(16)
        self.fc1, self.act, self.fc2 = nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], 1)
        return t + self.fc2(self.act(self.fc1(self.norm(t))))


def _forward(net, x, layer, *, compiled: bool = False):
    """The forward recorded for `layer`; `explain` walks the stacked views unless `compiled` (`program`)."""
    xin = x.clone().requires_grad_(True)
    ac = AttributionContext(net, compile_backward=compiled)
    with ac, Capture(net, [layer], no_grad_after=layer, example=x) as cap:
        cap.run(xin)
    return ac, xin, cap[layer]


def _per_rule(ac, xin, act, unit, info, rules):
    return {r: ac.grad(unit_objective(act, unit, "neuron", info), xin, r)[0] for r in rules}


CASES = [("relu@2", 2, "nchw"), ("b4", 3, "nchw"), ("c5", 1, "nchw"), ("relu@2", 0, "channels_last"),
         ("c5", 0, "channels_last"), ("relu@1", 2, "nchw")]


@pytest.mark.parametrize(("layer", "channel", "layout"), CASES)
def test_stacked_views_equal_one_backward_per_rule(layer: str, channel: int, layout: str) -> None:
    net = ResidualNet()
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ac, xin, act = _forward(net, x, layer)
    info = layer_info(net, layer, x)
    unit = resolve_unit(act, Unit(layer, channel), info)
    want = _per_rule(ac, xin, act, unit, info, RULES)
    got = ac.rule_grads(unit_objective(act, unit, "neuron", info), xin, RULES)
    assert ac.stacked_walks == 1
    for rule in RULES:
        scale = want[rule].abs().max()
        assert scale > 0, rule
        assert torch.allclose(got[rule], want[rule], atol=1e-6 * float(scale), rtol=0), rule
    # the three maps differ (a walker that ran one rule for all would pass the checks above only by accident)
    assert not torch.allclose(got["gradient"], got["guided"]) and not torch.allclose(got["deconv"], got["guided"])


@pytest.mark.parametrize("rules", [("gradient", "guided"), ("deconv", "gradient"), ("guided", "deconv", "gradient")])
def test_any_subset_and_order_of_rules(rules) -> None:
    _walked_as_per_rule(ResidualNet(), torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(4)),
                        Unit("b4", 3), rules)


def _walked_as_per_rule(net, x, unit, rules) -> None:
    """One stacked walk of `unit`'s rules equals one autograd backward per rule (relative 1e-6), and each is
    nonzero."""
    ac, xin, act = _forward(net, x, unit.layer)
    info = layer_info(net, unit.layer, x)
    unit = resolve_unit(act, unit, info)
    want = _per_rule(ac, xin, act, unit, info, rules)
    got = ac.rule_grads(unit_objective(act, unit, "neuron", info), xin, rules)
    assert ac.stacked_walks == 1
    for rule in rules:
        scale = float(want[rule].abs().max())
        assert scale > 0 and torch.allclose(got[rule], want[rule], atol=1e-6 * scale, rtol=0), rule


def test_a_token_layer_unit() -> None:
    net = TokenNet()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    ac, xin, act = _forward(net, x, "fc1")
    info = layer_info(net, "fc1", x)
    assert info.token_grid == (4, 4) and info.prefix_tokens == 1
    unit = resolve_unit(act, Unit("fc1", 9), info)
    want = _per_rule(ac, xin, act, unit, info, RULES)
    got = ac.rule_grads(unit_objective(act, unit, "neuron", info), xin, RULES)
    assert ac.stacked_walks == 1
    for rule in RULES:
        assert torch.allclose(got[rule], want[rule], atol=1e-6 * float(want[rule].abs().max()), rtol=0), rule


def test_explain_walks_once_for_several_rules(monkeypatch) -> None:
    """explain's three maps come from one stacked walk (no autograd backward per rule), equal to the per-rule
    maps of a context with stack_views=False."""
    net = ResidualNet()
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(6))
    calls = []
    real = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: calls.append(1) or real(*a, **k))
    ac, xin, act = _forward(net, x, "relu@2")
    exp = ac.explain(xin, act, Unit("relu@2", 2), RULES)
    assert ac.stacked_walks == 1 and calls == []
    old = AttributionContext(net, stack_views=False, compile_backward=False)
    xin2 = x.clone().requires_grad_(True)
    with old, Capture(net, ["relu@2"], no_grad_after="relu@2", example=x) as cap:
        cap.run(xin2)
    ref = old.explain(xin2, cap["relu@2"], Unit("relu@2", 2), RULES)
    assert len(calls) == 3 and old.stacked_walks == 0
    for rule in RULES:
        assert torch.allclose(exp[rule], ref[rule], atol=1e-6 * float(ref[rule].abs().max()), rtol=0), rule


def test_a_graph_it_does_not_walk_falls_back() -> None:
    """A node with several outputs (torch.split) is not walked: None, and explain runs one backward per rule."""

    class Split(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(2)
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            a, b = torch.split(self.relu(self.conv(x)), 4, dim=1)
            return self.relu(a * 2 - b)

    net = Split().eval()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    ac, xin, act = _forward(net, x, "relu@1")
    info = layer_info(net, "relu@1", x)
    unit = resolve_unit(act, Unit("relu@1", 1), info)
    want = _per_rule(ac, xin, act, unit, info, RULES)
    exp = ac.explain(xin, act, unit, RULES, info=info)
    assert ac.stacked_walks == 0  # declined: one backward per rule
    for rule in RULES:
        assert torch.allclose(exp[rule], want[rule]), rule


class _Excited(nn.Module):
    """Squeeze-excitation as MobileNetV3, EfficientNet-B0 and RegNetY have it: a [N, C, 1, 1] gate (pooled,
    two 1x1 convs, a sigmoid) times the map, broadcast over its positions, then a ReLU6 chain."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), random_bn(8, 21)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.c2, self.b2 = nn.Conv2d(8, 6, 3, padding=1, bias=False), random_bn(6, 22)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        a = F.relu(self.b1(self.c1(x)))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(a, 1)))))
        return F.relu6(self.b2(self.c2(a * gate)))


def test_a_broadcast_gate_is_walked_as_autograd_does() -> None:
    """The product's gradient for the [N, C, 1, 1] gate comes out of its node shaped like the map; autograd's engine
    sums it back to the gate's shape, and so must the walker (it crashed on these nets with two views or more)."""
    _walked_as_per_rule(_Excited(), torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(6)),
                        Unit("b2", 4), RULES)
