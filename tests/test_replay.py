"""A unit's rules backward fed by a traced forward (`attribution.replay`, `pipeline.replayed`): learned from one
eager frame, then equal to the eager rules forward + backward on other images (every graph shape the program
runs, EfficientNet-Lite0 in the live processor, one stage or two), declined with its reason where the program
cannot run the graph, and refused when a later check finds it disagreeing."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_bn
from test_attribution_fused import ChainNet
from test_attribution_program import _FireNet, _PadNet, _vgg
from test_attribution_stacked import ResidualNet, TokenNet
from torch import nn

from deepvis_app.attribution import AttributionContext, fused
from deepvis_app.attribution.replay import Calls, ReplayedRules, learn
from deepvis_app.pipeline import Frame, FrameProcessor, replayed
from deepvis_app.pipeline.replayed import ReplayedForward
from deepvis_app.probe import Capture, Probe
from deepvis_app.values import Unit, ViewRequest

VIEWS = ("gradient", "deconv", "guided", "saliency", "input_x_gradient")


def _eager(net, x, layer, calls=None):
    """The rules' eager forward (with `calls` entered last when given): (x requiring grad, context, activations)."""
    x = x.clone().requires_grad_(True)
    with AttributionContext(net) as ctx, Probe(net, [layer]) as probe:
        if calls is None:
            net(x)
        else:
            with calls:
                net(x)
    return x, ctx, dict(probe.activations)


def _learned(net, x, layer):
    calls = Calls(hold=True)
    xr, ctx, acts = _eager(net, x, layer, calls)
    return learn(net, xr, [layer], calls, acts[layer], acts, deconv_static=ctx.deconv_static)


NETS = {  # name -> (net, unit layer, channel, input size)
    "chains": (ChainNet, "b6", 2, 23),  # every chain shape: pads folded or kept, depthwise, `d += b` in place
    "residual": (ResidualNet, "b4", 5, 32),  # max-pooling switches, in-place ReLU after `out += identity`
    "vgg": (_vgg, "5", 3, 20),  # plain convs with a bias, in-place ReLUs between max-pools (one ceil_mode)
    "pads": (_PadNet, "c3", 2, 40),  # uneven pads the chains do not fold, a residual sum of two padded sides
    "fire": (_FireNet, "bn", 1, 64),  # SqueezeNet's Fire: branches concatenated along the channels, max-pooling
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_replayed_views_equal_the_eager_rules_on_other_images(name):
    """Learned on one image, the replay's five views of a neuron equal the eager rules' on three others (same
    kernels, same order: equal up to 1e-6 of the map's largest value), for the neuron at the activation's peak."""
    make, layer, channel, size = NETS[name]
    net = make()
    g = torch.Generator().manual_seed(11)
    replay, why = _learned(net, torch.randn(1, 3, size, size, generator=g), layer)
    assert replay is not None, why
    assert replay.keep  # it reads the frame's tensors from the graph (rectifier outputs, conv inputs, switches)
    for _ in range(3):
        x = torch.randn(1, 3, size, size, generator=g)
        xe, ctx, acts = _eager(net, x, layer)
        want = ctx.explain(xe, acts[layer], Unit(layer, channel), VIEWS)
        logits, racts, rctx = replay.run(x, layer)
        assert isinstance(rctx, ReplayedRules) and racts[layer].grad_fn is None
        assert torch.equal(racts[layer], acts[layer].detach())
        got = rctx.explain(x.clone().requires_grad_(True), racts[layer], Unit(layer, channel), VIEWS)
        assert got.unit == want.unit and rctx.compiled_walks == 1
        for m in VIEWS:
            scale = float(want[m].abs().max())
            assert scale > 0 and float((got[m] - want[m]).abs().max()) <= 1e-6 * scale, m


def test_calls_number_the_models_own_calls_and_return_pooling_switches():
    """`Calls` numbers calls that return tensors (not sizes or a capture's detach); max-pooling runs with its
    switches as a second output, and the values are what the plain call returns."""
    x = torch.randn(1, 2, 6, 6)
    with Calls(hold=True) as calls:
        y = F.max_pool2d(torch.relu(x), 2)
        _ = y.shape, y.size(), y.dim(), y.detach()
    assert [name for name, _ in calls.signature] == ["relu", "max_pool2d"]
    values, switches = calls.outputs[1]
    assert torch.equal(values, y) and torch.equal(y, F.max_pool2d(torch.relu(x), 2))
    assert switches.dtype == torch.int64 and switches.shape == y.shape
    with Calls(keep=[(1, 1), (0, 0)]) as kept:
        F.max_pool2d(torch.relu(x), 2)
    assert torch.equal(kept.kept[0], switches) and torch.equal(kept.kept[1], torch.relu(x))


def test_a_graph_the_program_cannot_run_is_declined_with_its_reason():
    net = TokenNet()
    replay, why = _learned(net, torch.randn(1, 3, 16, 16), "fc2")
    assert replay is None and "not one the program runs" in why


def test_a_tensor_of_no_call_no_input_and_no_constant_is_declined(monkeypatch):
    """The folded BN weights are constants only because `fused` made them: unknown, they could be the frame's,
    so the replay is declined rather than reading last frame's values."""
    monkeypatch.setattr(fused, "cached_tensors", lambda: [])
    replay, why = _learned(ChainNet(), torch.randn(1, 3, 23, 23), "b6")
    assert replay is None and "made by no call" in why


def test_the_check_refuses_a_graph_that_disagrees():
    """`learn` with a graph learned before checks its tensors against this frame's eager forward: the same graph
    passes, one giving other tensors (here: another network's) is refused."""
    net, layer = ResidualNet(), "b4"
    x = torch.randn(1, 3, 32, 32)
    replay, _ = _learned(net, x, layer)
    calls = Calls(hold=True)
    xr, ctx, acts = _eager(net, torch.randn(1, 3, 32, 32), layer, calls)
    again, why = learn(net, xr, [layer], calls, acts[layer], acts, deconv_static=True, graph=replay.graph)
    assert again is not None and again.same_plan(replay), why
    other = ResidualNet()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    wrong, _ = _learned(other, x, layer)
    bad, why = learn(net, xr, [layer], calls, acts[layer], acts, deconv_static=True, graph=wrong.graph)
    assert bad is None and "differ" in why


def test_replayed_forward_learns_after_the_layers_hold_still_and_checks_again(monkeypatch):
    """No replay before `STABLE_FRAMES` frames of one set; the learning frame's eager forward gets a `Calls`;
    then frames replay, and every `RECHECK_EVERY` replayed frames one runs eagerly and is checked: a graph found
    disagreeing is refused (and the reason kept) and frames run eagerly from then on."""
    monkeypatch.setattr(replayed, "STABLE_FRAMES", 3)
    monkeypatch.setattr(replayed, "RECHECK_EVERY", 4)
    net, layer = ResidualNet(), "b4"
    rf = ReplayedForward(net)
    g = torch.Generator().manual_seed(2)
    ways = []
    for _ in range(14):
        x = torch.randn(1, 3, 32, 32, generator=g)
        got, calls = rf.run(x, [layer], layer)
        if got is not None:
            ways.append("replay")
            continue
        ways.append("learn" if calls is not None else "eager")
        xr, ctx, acts = _eager(net, x, layer, calls)
        if calls is not None:
            if len(ways) == 11:  # sabotage the check frame: the graph now reads another network's tensors
                other = ResidualNet()
                with torch.no_grad():
                    for p in other.parameters():
                        p.add_(0.5)
                rf.replays[((layer,), layer)].graph = _learned(other, x, layer)[0].graph
            rf.learn(xr, [layer], layer, calls, acts, ctx.deconv_static)
    assert ways == ["eager", "eager", "learn", "replay", "replay", "replay", "learn", "replay", "replay", "replay",
                    "learn", "eager", "eager", "eager"]
    assert rf.learned == 1 and "differ" in rf.refused[((layer,), layer)]


def _frames(photos, n=20):
    names = ["chelsea", "coffee", "astronaut", "rocket"]
    return [Frame(i, photos[names[i % 4]], time.perf_counter()) for i in range(n)]


@pytest.mark.parametrize("methods", [("guided",), ("gradient", "deconv", "guided")])
def test_processor_replayed_frames_equal_eager_frames(lite0, photos, methods, monkeypatch):
    """EfficientNet-Lite0's live frames with a unit explained (and its ERF): once replayed, the grid, predictions,
    unit map, views and ERF equal those of the eager rules forward, frame by frame, on four photos. One thread
    throughout (two threads round differently)."""
    from deepvis_app import devices

    monkeypatch.setattr(devices, "cores_to_spare", lambda **_: False)
    req = ViewRequest(layer="_blocks.5", unit=Unit("_blocks.3", 5), attribution=methods, attribution_view="raw",
                      erf=True)
    frames = _frames(photos)
    ours = FrameProcessor(lite0)
    begun = [ours.begin(f, req) for f in frames[:1]]
    got = [ours.finish(begun[0])]
    for f in frames[1:]:
        b = ours.begin(f, req)
        begun.append(b)
        got.append(ours.finish(b))
    key = (("_blocks.5", "_blocks.3"), "_blocks.3")
    assert ours.replayed.learned == 1 and key in ours.replayed.replays and not ours.replayed.refused
    kinds = [type(b.ctx).__name__ for b in begun]
    assert kinds.count("ReplayedRules") == len(frames) - replayed.STABLE_FRAMES
    monkeypatch.setattr(replayed, "STABLE_FRAMES", 10**9)  # never replayed
    ref = FrameProcessor(lite0)
    want = [ref.process(f, req) for f in frames]
    for a, b in zip(got, want, strict=True):
        assert (a.grid.image == b.grid.image).all() and a.predictions == b.predictions
        assert a.unit_position == b.unit_position and (a.unit_map == b.unit_map).all()
        assert np.array_equal(a.erf_map, b.erf_map) and a.erf_frames == b.erf_frames
        for m in methods:
            assert np.array_equal(a.attributions[m], b.attributions[m]), m


def test_a_staged_replayed_frame_equals_the_one_thread_processor(lite0, photos):
    """In the worker's two stages a replayed frame runs the graph in `begin` and the program in `finish`: its
    predictions, grid and views are the one-thread processor's with the eager rules forward."""
    staged, alone = FrameProcessor(lite0), FrameProcessor(lite0)
    alone.replayed = ReplayedForward(None)
    alone.replayed.enabled = False
    req = ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5), attribution=("gradient", "deconv", "guided"))
    replays = 0
    for f in _frames(photos, 24):
        begun = staged.begin(f, req, staged=True)
        got = staged.finish(begun)
        want = alone.process(f, req)
        replays += isinstance(begun.ctx, ReplayedRules)
        assert [p[:2] for p in got.predictions] == [p[:2] for p in want.predictions]
        assert np.array_equal(got.grid.image, want.grid.image)
        for m in req.attribution:
            d = np.abs(got.attributions[m].astype(np.int16) - want.attributions[m].astype(np.int16))
            assert int(d.max()) <= 1 and float((d > 0).mean()) < 1e-3, m
    assert replays == 24 - replayed.STABLE_FRAMES


def test_grad_cam_and_interventions_are_not_replayed(lite0, photos):
    """A live Grad-CAM needs the head's graph and an intervention a hook on every frame: those frames keep the
    eager forward (and nothing is learned)."""
    from deepvis_app.interventions import Intervention

    req = ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5), attribution=("guided", "gradcam"))
    proc = FrameProcessor(lite0)
    for f in _frames(photos, 16):
        assert not isinstance(proc.begin(f, req).ctx, ReplayedRules)
    assert proc.replayed is None or not proc.replayed.replays
    req = ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5), attribution=("guided",),
                      interventions=(Intervention("_blocks.2", (4,), "zero"),))
    proc = FrameProcessor(lite0)
    for f in _frames(photos, 16):
        assert not isinstance(proc.begin(f, req).ctx, ReplayedRules)


class _LooseBN(nn.Module):
    """A BatchNorm after a rectifier (no conv before it: its own node, whose scale is a view of a cached one) and
    one ReLU module called twice (a reused module: its bare name means its last call)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.c1, self.bn, self.c2 = nn.Conv2d(3, 6, 3, padding=1), random_bn(6, 9), nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        return self.relu(self.c2(self.bn(self.relu(self.c1(x)))))


def test_a_loose_batchnorm_and_a_reused_module_replay():
    """The standalone BatchNorm's scale is a constant (a view of the one `fused` cached), and the layer named by a
    reused module's bare name is captured at the same call in the eager frame (`Capture(example=)`, as the live
    processor runs it) and in the traced forward: learned, and equal to the eager rules on another image."""
    net, layer = _LooseBN(), "relu"
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 30, 30, generator=g).requires_grad_(True)
    calls = Calls(hold=True)
    with AttributionContext(net) as ctx, Capture(net, [layer], no_grad_after=layer, example=x) as probe:
        with calls:
            probe.run(x)
    replay, why = learn(net, x, [layer], calls, probe[layer], dict(probe.activations),
                        deconv_static=ctx.deconv_static)
    assert replay is not None, why
    x2 = torch.randn(1, 3, 30, 30, generator=g)
    xe, ectx, acts = _eager(net, x2, layer)
    assert acts[layer].shape == (1, 6, 30, 30)  # the second call's output
    want = ectx.explain(xe, acts[layer], Unit(layer, 2), VIEWS)
    _, racts, rctx = replay.run(x2, layer)
    got = rctx.explain(x2.clone().requires_grad_(True), racts[layer], Unit(layer, 2), VIEWS)
    for m in VIEWS:
        torch.testing.assert_close(got[m], want[m], rtol=1e-6, atol=1e-7)


class _GradMode(nn.Module):
    """A forward that runs other calls when grad is on (the eager rules frame) than when it is off (the trace)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x):
        if torch.is_grad_enabled():
            x = x.clone()  # a node the program runs (it passes the gradient on)
        return torch.relu(self.c(x))


def test_calls_that_differ_between_the_frames_refuse_the_replay():
    replay, why = _learned(_GradMode(), torch.randn(1, 3, 12, 12), "c")
    assert replay is None and "calls differ" in why


def test_a_failure_while_learning_or_replaying_leaves_the_eager_forward(monkeypatch):
    """An exception inside `learn` is its reason, not a crash; a replay that fails on a frame is refused and the
    frame runs eagerly."""
    from deepvis_app.attribution import replay as replay_mod

    net, layer = ResidualNet(), "b4"
    good, _ = _learned(net, torch.randn(1, 3, 32, 32), layer)

    def broken(*_a, **_k):
        raise RuntimeError("one of the variables needed for gradient computation has been modified")

    monkeypatch.setattr(replay_mod, "plan", broken)
    replay, why = _learned(net, torch.randn(1, 3, 32, 32), layer)
    assert replay is None and why.startswith("learning failed (RuntimeError")
    rf = ReplayedForward(net)
    rf.replays[((layer,), layer)] = good
    good.graph = None  # calling it raises
    got, calls = rf.run(torch.randn(1, 3, 32, 32), [layer], layer)
    assert got is None and calls is None and "failed" in rf.refused[((layer,), layer)]
