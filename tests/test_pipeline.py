"""The live pipeline: latest-frame slot drops old frames, capture survives a lost source, the worker
publishes correct results with the newest request, and the headless run reports sane numbers."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import hooks_left

from deepvis_app.errors import DeepVisError
from deepvis_app.pipeline import (
    CaptureThread,
    Frame,
    FrameProcessor,
    InferenceWorker,
    LatestSlot,
    run_headless,
    validate_request,
)
from deepvis_app.probe import Probe
from deepvis_app.render import render_grid, upscale_map
from deepvis_app.sources import FrameSource, ImageSource
from deepvis_app.values import Unit, ViewRequest


def test_slot_keeps_only_newest_and_counts_drops():
    slot = LatestSlot()
    for i in range(5):
        slot.put(Frame(i, np.zeros((1, 1, 3), np.uint8), 0.0))
    assert slot.take(0).frame_id == 4
    assert slot.dropped == 4 and slot.take(0.01) is None


def test_slot_take_blocks_until_put():
    slot = LatestSlot()
    threading.Timer(0.05, lambda: slot.put(Frame(9, np.zeros((1, 1, 3), np.uint8), 0.0))).start()
    assert slot.take(2.0).frame_id == 9


class Flaky(FrameSource):
    """Delivers 3 frames, then nothing (unplugged), then comes back when re-opened twice."""

    name = "flaky"
    native_fps = 200.0
    reconnectable = True

    def __init__(self):
        self.reads = 0
        self.opens = 0

    def open(self):
        self.opens += 1
        if 1 < self.opens < 3:
            from deepvis_app.errors import SourceError

            raise SourceError("still unplugged")

    def read(self):
        self.reads += 1
        if 3 < self.reads <= 4:
            return None
        return np.full((4, 4, 3), self.reads, np.uint8)


def test_capture_reports_lost_source_and_reconnects(monkeypatch):
    monkeypatch.setattr(CaptureThread, "RETRY_SECONDS", 0.01)
    slot = LatestSlot()
    messages: list[str] = []
    src = Flaky()
    src.open()
    cap = CaptureThread(src, slot, fps=200, on_status=messages.append)
    cap.start()
    deadline = time.time() + 5
    while "reconnected" not in " ".join(messages) and time.time() < deadline:
        time.sleep(0.01)
    got = slot.take(2.0)
    cap.stop()
    cap.join(2)
    assert any("lost" in m for m in messages) and any("reconnected" in m for m in messages)
    assert got is not None and not cap.is_alive()


def test_capture_fps_zero_is_pulled_by_consumer():
    slot = LatestSlot()
    src = ImageSource.__new__(ImageSource)
    src.name, src.native_fps, src._img = "img", 30.0, np.zeros((2, 2, 3), np.uint8)
    cap = CaptureThread(src, slot, fps=0)
    cap.start()
    time.sleep(0.2)  # nobody takes frames: the source must not be read again and again
    assert cap.frames_read == 1 and slot.dropped == 0
    for _ in range(3):
        assert slot.take(1.0) is not None
    cap.stop()
    cap.join(2)
    assert slot.dropped == 0


def test_processor_result_matches_direct_computation(lite0, photos):
    proc = FrameProcessor(lite0)
    req = ViewRequest(request_id=7, layer="_blocks.1", unit=Unit("_blocks.3", 5), norm="channel")
    result = proc.process(Frame(3, photos["coffee"], time.perf_counter()), req)
    x = lite0.preprocess(photos["coffee"])
    with Probe(lite0.net, ["_blocks.1", "_blocks.3"], detach=True) as probe, torch.no_grad():
        logits = lite0.net(x)
    expected = render_grid(probe["_blocks.1"][0], norm="channel", min_tile=8)
    assert result.frame_id == 3 and result.request_id == 7 and result.layer == "_blocks.1"
    assert np.array_equal(result.grid.image, expected.image)
    assert result.predictions[0][1] == "espresso"
    assert abs(result.predictions[0][2] - float(logits.softmax(-1).max())) < 1e-5
    assert result.unit_value == pytest.approx(float(probe["_blocks.3"][0, 5].max()), rel=1e-5)
    assert np.array_equal(result.unit_map, upscale_map(probe["_blocks.3"][0, 5], 224))
    # block outputs are signed (no ReLU after the residual add): zero maps to mid-gray
    assert result.unit_map.shape == (224, 224) and result.unit_map.min() < 128 < result.unit_map.max()
    assert result.image.shape == (224, 224, 3) and result.latency > 0


def test_worker_uses_newest_request_and_survives_errors(lite0, photos):
    slot = LatestSlot()
    results, errors = [], []
    worker = InferenceWorker(lite0, slot, results.append, on_error=errors.append,
                             request=ViewRequest(request_id=1, layer="no_such_layer"))
    worker.start()
    try:
        slot.put(Frame(0, photos["rocket"], time.perf_counter()))
        deadline = time.time() + 10
        while not errors and time.time() < deadline:
            time.sleep(0.01)
        assert "unknown layer 'no_such_layer'" in errors[0] and not results
        worker.set_request(ViewRequest(request_id=2, layer="_blocks.7"))
        slot.put(Frame(1, photos["rocket"], time.perf_counter()))
        while not results and time.time() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
        worker.join(5)
    assert results[0].request_id == 2 and results[0].grid.layout.channels == 80 and worker.is_alive() is False


def test_headless_run_drops_frames_when_source_is_faster(lite0, chelsea_png):
    src = ImageSource(chelsea_png)
    src.open()
    report = run_headless(lite0, src, frames=8, fps=200, request=ViewRequest(layer="_blocks.3"), timeout=60)
    assert report.frames_processed == 8
    assert report.frames_dropped > 0  # 200 fps source, ~25 fps network: old frames were dropped, not queued
    assert report.frames_captured == report.frames_processed + report.frames_dropped
    assert 0 < report.latency_ms_p50 <= report.latency_ms_p95
    assert report.pipeline_fps > 0 and {"forward", "render", "preprocess"} <= set(report.stage_ms_mean)


def test_headless_parameters_are_refused_in_the_cores_words(lite0):
    """The core names its parameters (`frames`, `timeout`), never a command-line flag; nothing starts."""
    from deepvis_app.errors import ParamError

    src = ImageSource.__new__(ImageSource)
    for kwargs, param, text in (({"frames": 0}, "frames", "frames must be at least 1, got 0"),
                                ({"frames": 5, "timeout": 0.0}, "timeout", "timeout must be between 0 and 1e+07"),
                                ({"frames": 5, "timeout": float("nan")}, "timeout", "seconds, got nan")):
        with pytest.raises(ParamError) as err:
            run_headless(lite0, src, request=ViewRequest(), **kwargs)
        assert err.value.param == param and text in str(err.value) and "--" not in str(err.value)


def test_validate_request(lite0):
    validate_request(lite0, ViewRequest(layer="_fc", unit=Unit("_fc", 999)))
    with pytest.raises(DeepVisError, match=r"valid units are 0\.\.39"):
        validate_request(lite0, ViewRequest(unit=Unit("_blocks.3", 40)))
    with pytest.raises(DeepVisError, match="outside layer"):
        validate_request(lite0, ViewRequest(unit=Unit("_blocks.3", 1, 28, 0)))
    with pytest.raises(DeepVisError, match="'_fc' has no positions"):  # y/x on a vector were ignored silently
        validate_request(lite0, ViewRequest(unit=Unit("_fc", 3, 1, 1)))
    with pytest.raises(DeepVisError, match="bad unit"):
        Unit.parse("_blocks.3")
    assert Unit.parse("_blocks.3:4:5:6") == Unit("_blocks.3", 4, 5, 6)


def test_processor_attributions_match_standalone_api(lite0, photos):
    """The live path reuses the frame's forward; its images equal the standalone API's on the same frame."""
    from deepvis_app.attribution import attribute, render_view

    proc = FrameProcessor(lite0)
    req = ViewRequest(layer="_blocks.1", unit=Unit("_blocks.3", 5), attribution=("gradient", "deconv", "guided"),
                      attribution_view="raw")
    result = proc.process(Frame(0, photos["chelsea"], time.perf_counter()), req)
    x = lite0.preprocess(photos["chelsea"])
    with torch.no_grad(), Probe(lite0.net, ["_blocks.3"], detach=True) as probe:
        lite0.net(x)
    chan = probe["_blocks.3"][0, 5]
    y, xx = divmod(int(chan.argmax()), chan.shape[1])
    assert result.unit_position == (y, xx)
    for method in ("gradient", "deconv", "guided"):
        expected = render_view(attribute(lite0.net, x, layer="_blocks.3", unit=(5, y, xx), method=method), "raw",
                               percentile=99.5)
        got = result.attributions[method]
        assert got.shape == (224, 224, 3) and got.dtype == np.uint8
        assert np.array_equal(got, expected)  # the graph cut after the unit's layer changes no value
    assert not np.array_equal(result.attributions["gradient"], result.attributions["guided"])
    assert "attribution" in result.timings
    assert hooks_left(lite0.net) == []


def test_processor_runs_a_channels_last_copy_and_leaves_the_model_as_loaded(lite0, photos):
    """On the CPU frames run through a private channels-last copy (faster depthwise and 1x1 convs): the shared
    model is never called nor changed, and the copy's predictions are the model's."""
    from deepvis_app.render import top_predictions

    proc = FrameProcessor(lite0)
    proc.process(Frame(0, photos["chelsea"], time.perf_counter()), ViewRequest(layer="_blocks.5"))  # copy made
    calls = []
    handle = lite0.net.register_forward_hook(lambda *_: calls.append(1))
    try:
        for unit in (None, Unit("_blocks.3", 5)):
            result = proc.process(Frame(0, photos["coffee"], time.perf_counter()),
                                  ViewRequest(layer="_blocks.5", unit=unit, attribution=("guided",)))
    finally:
        handle.remove()
    assert calls == []
    assert all(p.is_contiguous() for p in lite0.net.parameters())  # the loaded layout, untouched
    x = lite0.preprocess(photos["coffee"])
    with torch.no_grad():
        expected = top_predictions(lite0.net(x)[0], lite0.categories)
    assert [c for c, _, _ in result.predictions] == [c for c, _, _ in expected]
    assert np.allclose([p for _, _, p in result.predictions], [p for _, _, p in expected], atol=1e-5)
    assert result.predictions[0][1] == "espresso"


def test_processor_with_unit_before_the_grid_layer_keeps_predictions_and_grid(lite0, photos):
    """Grad is recorded only up to the unit's layer: the grid layer after it and the predictions (computed
    without a graph) equal a plain forward's, the attributions equal `attribute()`, and grad mode is restored."""
    from deepvis_app.attribution import attribute, render_view

    proc = FrameProcessor(lite0)
    req = ViewRequest(layer="_blocks.10", unit=Unit("_blocks.3", 2, 10, 12), attribution=("guided",),
                      attribution_view="norm")
    result = proc.process(Frame(0, photos["chelsea"], time.perf_counter()), req)
    assert torch.is_grad_enabled()
    plain = FrameProcessor(lite0).process(Frame(0, photos["chelsea"], time.perf_counter()),
                                          ViewRequest(layer="_blocks.10"))
    assert result.predictions == plain.predictions
    assert np.array_equal(result.grid.image, plain.grid.image)
    x = lite0.preprocess(photos["chelsea"])
    expected = render_view(attribute(lite0.net, x, layer="_blocks.3", unit=(2, 10, 12), method="guided"), "norm",
                           percentile=99.5)
    assert np.array_equal(result.attributions["guided"], expected)
    assert hooks_left(lite0.net) == []


def test_model_switch_brings_its_own_request(lite0, photos):
    """The new model never runs with the old model's request: a layer only the old one has raises nothing."""
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    other = type(lite0)(spec=lite0.spec, net=small.eval(), device=lite0.device, categories=[],
                        preprocess=lite0.preprocess)
    slot = LatestSlot()
    results, errors = [], []
    worker = InferenceWorker(lite0, slot, results.append, on_error=errors.append,
                             request=ViewRequest(request_id=5, layer="_blocks.3"))
    worker.set_model(other, ViewRequest(request_id=6, layer="0"))
    worker.start()
    try:
        slot.put(Frame(0, photos["coffee"], time.perf_counter()))
        deadline = time.time() + 10
        while not results and not errors and time.time() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
        worker.join(5)
    assert not errors and results[0].request_id == 6 and results[0].grid.layout.channels == 4
    assert results[0].predictions == []  # a net without class logits shows no predictions


def test_live_topk_keeps_the_best_frames_of_the_unit(lite0, photos):
    """Frames offered one by one: the unit's tiles are the frames with the highest channel maxima, in order."""
    proc = FrameProcessor(lite0)
    req = ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 4), live_topk=True, live_topk_k=2)
    names = ["chelsea", "coffee", "astronaut", "rocket"]
    maxima = {}
    for i, name in enumerate(names):
        result = proc.process(Frame(i, photos[name], time.perf_counter()), req)
        with torch.no_grad(), Probe(lite0.net, ["_blocks.3"], detach=True) as probe:
            lite0.net(lite0.preprocess(photos[name]))
        maxima[i] = float(probe["_blocks.3"][0, 4].max())
    best = sorted(maxima, key=lambda i: -maxima[i])[:2]
    tiles = result.live_topk
    assert [t.frame_id for t in tiles] == best
    assert tiles[0].value == pytest.approx(maxima[best[0]], rel=1e-5)
    top, left, bottom, right = tiles[0].box
    assert tiles[0].patch.shape == (bottom - top, right - left, 3)
    assert result.live_topk_frames <= 40 * 2  # bounded by units x k
    cleared = proc.process(Frame(9, photos["coffee"], time.perf_counter()),
                           replace(req, live_topk_epoch=1))
    assert [t.frame_id for t in cleared.live_topk] == [9]  # epoch bump cleared it


def test_effective_rf_accumulates_centre_gradient(lite0, photos):
    from deepvis_app.receptive_field import EffectiveRF

    proc = FrameProcessor(lite0)
    req = ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 2), erf=True)
    for i, name in enumerate(("chelsea", "coffee")):
        result = proc.process(Frame(i, photos[name], time.perf_counter()), req)
    reference = EffectiveRF(lite0.net, "_blocks.3", channel=2)
    for name in ("chelsea", "coffee"):
        reference.update(lite0.preprocess(photos[name]))
    heat = reference.map / reference.map.max()
    expected = (heat * 255).round().to(torch.uint8).numpy()
    assert result.erf_frames == 2 and result.erf_map.shape == (224, 224)
    assert np.abs(result.erf_map.astype(int) - expected.astype(int)).max() <= 1
    # centred on the layer's centre unit (14, 14) of 28: around input pixel 112, zero far away
    ys, xs = np.nonzero(result.erf_map)
    assert 90 < ys.mean() < 134 and 90 < xs.mean() < 134 and result.erf_map[0, 0] == 0
