"""Probes capture exactly what the layer produced: reused modules per call, safe from later inplace ops."""

from __future__ import annotations

import pytest
import torch
from helpers import hooks_left
from torch import nn

from deepvis_app import DeepVisError
from deepvis_app.probe import Probe, layer_table


class Reuse(nn.Module):
    """conv -> relu -> (+1 inplace) -> relu again (same module) -> conv; like ResNet's shared ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1) * torch.ones(2, 1, 3, 3) / 9)
            self.head.weight.fill_(1.0)

    def forward(self, x):
        a = self.relu(self.conv(x))
        a += 1.0  # inplace after the first ReLU call
        b = self.relu(a - 2.0)
        return self.head(b)


def test_reused_module_calls_and_inplace_safety():
    net = Reuse().eval()
    x = torch.arange(16.0).view(1, 1, 4, 4) - 8
    conv = net.conv(x)
    first = torch.relu(conv)
    second = torch.relu(first + 1 - 2)
    with Probe(net, ["conv", "relu@0", "relu@1", "relu"], detach=True) as probe:
        out = net(x)
    assert torch.equal(probe["conv"], conv)
    # relu@0 is captured before the `+= 1`: the inplace add must not leak into it
    assert torch.equal(probe["relu@0"], first)
    assert torch.equal(probe["relu@1"], second)
    assert torch.equal(probe["relu"], second)  # bare name = last call
    assert torch.allclose(out, second.sum(1, keepdim=True))


def test_probe_matches_direct_computation_on_default_model(lite0, photos):
    x = lite0.preprocess(photos["coffee"])
    net = lite0.net
    with torch.no_grad():
        stem = net._swish(net._bn0(net._conv_stem(x)))
        with Probe(net, ["_swish@0", "_blocks.0", "_fc"], detach=True) as probe:
            logits = net(x)
        block0 = net._blocks[0](stem)
    assert torch.allclose(probe["_swish@0"], stem, atol=1e-6)
    assert torch.allclose(probe["_blocks.0"], block0, atol=1e-5)
    assert torch.equal(probe["_fc"], logits)


def test_hooks_are_removed_and_output_unchanged(lite0, photos):
    x = lite0.preprocess(photos["rocket"])
    with torch.no_grad():
        before = lite0.net(x)
        with Probe(lite0.net, ["_blocks.3", "_swish"]) as probe:
            during = lite0.net(x)
        after = lite0.net(x)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert probe.activations  # captured
    assert hooks_left(lite0.net) == []


def test_graph_connected_capture_gives_gradients():
    """Reuse's `+= 1` after an inplace ReLU breaks autograd on its own; capturing relu@0 hands the
    downstream op a copy, so backpropagating from a captured tensor works and gives the true gradient."""
    net = Reuse().eval()
    x = (torch.arange(16.0).view(1, 1, 4, 4) - 4).requires_grad_(True)
    with Probe(net, ["relu@0", "relu@1"]) as probe:
        net(x)
    probe["relu@1"].sum().backward()
    xr = x.detach().clone().requires_grad_(True)
    first = torch.relu(net.conv(xr))
    torch.relu(first + 1 - 2).sum().backward()
    assert torch.allclose(x.grad, xr.grad) and x.grad.abs().sum() > 0


def test_unknown_layer_lists_valid_names():
    with pytest.raises(DeepVisError, match="unknown layer 'nope'.*conv, relu, head"):
        Probe(Reuse(), ["nope"])
    with pytest.raises(DeepVisError, match="call index"):
        Probe(Reuse(), ["relu@x"])


def test_exact_capture_finds_its_layers_by_path_not_by_walking_every_module(monkeypatch):
    """The live view builds a Capture every frame: its layers are looked up by path (walking all of a net's modules
    cost 1 ms of Lite0's stage one with the GIL held); the walk is left for the error's list of valid names."""
    from deepvis_app.probe import Capture

    net, x = Reuse(), torch.ones(1, 1, 4, 4)
    walks = []
    real = nn.Module.named_modules
    monkeypatch.setattr(nn.Module, "named_modules", lambda self, *a, **k: walks.append(1) or real(self, *a, **k))
    with Capture(net, ["relu@1"], stop=True, example=x) as cap:
        cap.run(x)
    assert cap["relu@1"].shape == (1, 2, 4, 4) and walks == []
    with pytest.raises(DeepVisError, match="unknown layer 'nope'.*conv, relu, head"):
        Capture(net, ["nope"], stop=True, example=x)


def test_layer_table_lists_calls_in_forward_order():
    table = layer_table(Reuse(), torch.zeros(1, 1, 4, 4))
    assert [(i.name, i.shape) for i in table] == [
        ("conv", (2, 4, 4)), ("relu@0", (2, 4, 4)), ("relu@1", (2, 4, 4)), ("head", (1, 4, 4))]


def test_capture_inputs_records_what_each_call_received_before_an_inplace_clip():
    """`inputs=`: the tensor a call received, kept as a copy when the module is inplace (a ReLU6 clips it in place);
    `name@k` picks a call of a reused module, a bare name the last."""
    import torch
    from torch import nn

    from deepvis_app.probe import Capture

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.act = nn.ReLU6(inplace=True)

        def forward(self, x):
            return self.act(self.act(x * 4) - 7)

    net = Twice()
    x = torch.tensor([[-1.0, 0.5, 2.0]])
    with Capture(net, ["act@1"], inputs=["act@0", "act@1", "act"]) as cap:
        out = cap.run(x)
    assert torch.equal(cap.inputs["act@0"], torch.tensor([[-4.0, 2.0, 8.0]]))  # 8 before the clip, not 6
    assert torch.equal(cap.inputs["act@1"], torch.tensor([[-7.0, -5.0, -1.0]]))
    assert torch.equal(cap.inputs["act"], cap.inputs["act@1"]) and torch.equal(out, torch.zeros(1, 3))
