"""The live plain forward as a traced graph (`pipeline.traced`): eager until a layer set holds still, then the
graph -- same logits and activations as the eager forward with the same hooks -- and eager again for good where
the graph cannot be trusted (tracing fails, or it disagrees with the eager forward at the trace or at a recheck).
The frame processor uses it on the CPU's plain frames and gives the same result as without it."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from helpers import hooks_left, tiny_conv_net
from torch import nn

from deepvis_app.pipeline import Frame, FrameProcessor, replayed, traced
from deepvis_app.pipeline.traced import RETRY_EVERY, STABLE_FRAMES, TRIAL, SplitChoice, TracedForward
from deepvis_app.probe import Probe
from deepvis_app.values import Unit, ViewRequest


def eager(net, x, layers):
    with Probe(net, layers, detach=True) as probe, torch.inference_mode():
        return net(x), dict(probe.activations)


def test_eager_until_the_layers_hold_still_then_the_same_numbers_from_the_graph():
    net = tiny_conv_net()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    fast = TracedForward(net)
    for _ in range(STABLE_FRAMES - 1):
        assert fast.run(x, ["relu"]) is None and not fast.graphs
    logits, acts = fast.run(x, ["relu"])  # traced on this frame
    assert list(fast.graphs) == [("relu",)]
    ref_logits, ref_acts = eager(net, x, ["relu"])
    assert torch.equal(logits, ref_logits) and torch.equal(acts["relu"], ref_acts["relu"])
    assert (ref_acts["relu"] >= 0).all() and (ref_acts["relu"] == 0).any()  # a ReLU's output, not the conv's
    y = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))  # a new frame through the graph
    logits, acts = fast.run(y, ["relu"])
    ref_logits, ref_acts = eager(net, y, ["relu"])
    assert torch.equal(logits, ref_logits) and torch.equal(acts["relu"], ref_acts["relu"])
    assert not hooks_left(net)


def test_a_layer_change_runs_eager_until_the_new_set_holds_still_and_known_sets_keep_their_graph():
    net = tiny_conv_net()
    x = torch.randn(1, 3, 16, 16)
    fast = TracedForward(net)
    for _ in range(STABLE_FRAMES):
        fast.run(x, ["relu"])
    assert fast.run(x, ["relu"]) is not None
    for _ in range(STABLE_FRAMES - 1):
        assert fast.run(x, ["conv1", "relu"]) is None  # clicking another layer: no trace yet
    logits, acts = fast.run(x, ["conv1", "relu"])
    assert set(acts) == {"conv1", "relu"} and torch.equal(acts["conv1"], eager(net, x, ["conv1"])[1]["conv1"])
    kept = fast.graphs[("relu",)]
    assert fast.run(x, ["relu"]) is not None  # back to a set traced before: its graph at once, not traced anew
    assert fast.graphs[("relu",)] is kept


class Counting(nn.Module):
    """A forward that changes with every call (Python state): a trace bakes one call in, so it must be refused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x).mean((2, 3)) * self.calls


class SignBranch(nn.Module):
    """Data-dependent control flow: the trace records the branch of the frame it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.conv(x)
        return (y if float(x.mean()) > 0 else -y).mean((2, 3))


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return {"logits": self.conv(x).mean((2, 3))}


@pytest.mark.parametrize("make", [Counting, DictOut])
def test_a_graph_that_disagrees_or_cannot_be_made_leaves_the_forward_eager(make):
    net = make().eval()
    x = torch.randn(1, 3, 8, 8)
    fast = TracedForward(net)
    for _ in range(STABLE_FRAMES + 5):
        assert fast.run(x, ["conv"]) is None
    assert ("conv",) in fast.refused and not fast.graphs
    assert not hooks_left(net)


def test_a_recheck_catches_a_branch_the_trace_did_not_see(monkeypatch):
    monkeypatch.setattr(traced, "RECHECK_EVERY", 3)
    net = SignBranch().eval()
    pos, neg = torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)
    fast = TracedForward(net)
    for _ in range(STABLE_FRAMES):
        fast.run(pos, ["conv"])
    assert fast.graphs
    assert fast.run(neg, ["conv"]) is not None  # run 2: the wrong branch goes unseen until the recheck ...
    assert fast.run(neg, ["conv"]) is None  # run 3: compared with the eager forward, refused
    assert ("conv",) in fast.refused and not fast.graphs
    assert fast.run(pos, ["conv"]) is None


def test_processor_plain_frames_equal_with_and_without_the_graph(lite0, photos, monkeypatch):
    """EfficientNet-Lite0's live plain frames: once traced (the graph exists), the grid, predictions and unit map
    equal those of the eager forward, frame by frame."""
    req = ViewRequest(layer="_blocks.3", unit=Unit("_blocks.5", 7))
    frames = [Frame(i, photos[k], time.perf_counter()) for i, k in enumerate(["chelsea", "coffee"] * 8)]
    ours = FrameProcessor(lite0)
    with_graph = [ours.process(f, req) for f in frames]
    assert ours.traced is not None and list(ours.traced.graphs) == [("_blocks.3", "_blocks.5")]
    monkeypatch.setattr(traced, "STABLE_FRAMES", 10**9)  # never traced
    ref = FrameProcessor(lite0)
    without = [ref.process(f, req) for f in frames]
    assert not ref.traced.graphs
    for a, b in zip(with_graph, without, strict=True):
        assert (a.grid.image == b.grid.image).all() and a.predictions == b.predictions
        assert (a.unit_map == b.unit_map).all() and a.unit_value == b.unit_value


def test_split_choice_alternates_then_keeps_the_faster():
    choice = SplitChoice()
    key = (("a",), "a", ("guided",))
    asked = []
    for _ in range(2 * TRIAL):
        split = choice.wants(key)
        asked.append(split)
        choice.record(key, split, 0.010 if split else 0.020)  # split twice as fast
    assert asked[:4] == [True, False, True, False] and choice.chosen[key] is True
    assert all(choice.wants(key) for _ in range(5))
    slow = (("b",), "b", ("guided",))
    for _ in range(2 * TRIAL):
        split = choice.wants(slow)
        choice.record(slow, split, 0.030 if split else 0.020)
    assert choice.chosen[slow] is False and not choice.wants(slow)
    # after RETRY_EVERY frames both ways are timed again, and a changed balance changes the choice
    for _ in range(RETRY_EVERY - 2):
        assert not choice.wants(slow)
    assert choice.wants(slow) and slow not in choice.chosen  # timing both again, the split first
    for _ in range(2 * TRIAL + 1):
        split = choice.wants(slow)
        choice.record(slow, split, 0.010 if split else 0.020)
    assert choice.chosen[slow] is True


@pytest.mark.parametrize("methods", [("guided",), ("gradient", "deconv", "guided")])
def test_processor_views_equal_split_or_whole(lite0, photos, methods, monkeypatch):
    """A unit's backprop views, its map and the grid are the same whichever forward ran: the traced graph plus
    the rule-recording forward stopped at the unit's layer, or one rule-recording forward of the whole net. (One
    thread throughout: `batch_threads` would widen by the machine's load, and two threads round differently.)"""
    from deepvis_app import devices

    monkeypatch.setattr(devices, "cores_to_spare", lambda **_: False)
    monkeypatch.setattr(replayed, "STABLE_FRAMES", 10**9)  # never replayed (`test_replay` compares that way)
    req = ViewRequest(layer="_blocks.5", unit=Unit("_blocks.3", 5), attribution=methods, attribution_view="raw")
    key = (("_blocks.5", "_blocks.3"), "_blocks.3", methods)
    frames = [Frame(i, photos[k], time.perf_counter()) for i, k in enumerate(["chelsea", "coffee"] * 8)]
    runs = {}
    for split in (True, False):
        proc = FrameProcessor(lite0)
        proc.split.chosen[key] = split
        runs[split] = [proc.process(f, req) for f in frames]
        assert bool(proc.traced.graphs) is split  # the whole forward never asks for a graph
    for a, b in zip(runs[True], runs[False], strict=True):
        assert (a.grid.image == b.grid.image).all() and a.predictions == b.predictions
        assert a.unit_position == b.unit_position and (a.unit_map == b.unit_map).all()
        for m in methods:
            assert np.array_equal(a.attributions[m], b.attributions[m]), m
    assert not hooks_left(lite0.net)
