"""The CPU worker in two stages: an explained frame's forward on the worker's thread, its backprop views and host copy
on the finisher's (`pipeline.worker.Finisher`), the next frame's forward beside it. What it publishes is what one
thread makes from the same frames, in frame order, errors of either stage are said once and the loop goes on."""

from __future__ import annotations

import contextlib
import sys
import threading
import time

import numpy as np
import pytest

from deepvis_app.pipeline import FrameProcessor, InferenceWorker, LatestSlot, replayed
from deepvis_app.pipeline.frames import Frame
from deepvis_app.pipeline.stages import stage_threads, two_stages
from deepvis_app.values import Unit, ViewRequest

VIEWS = ("gradient", "deconv", "guided")


def _explained(request_id: int = 1, **changes) -> ViewRequest:
    fields = {"layer": "_blocks.3", "unit": Unit("_blocks.3", 5), "attribution": VIEWS, **changes}
    return ViewRequest(request_id=request_id, **fields)


def _feed(worker: InferenceWorker, slot: LatestSlot, photos: dict, frames: int, results: list,
          between=None) -> None:
    """Offer `frames` frames as fast as the worker takes them (the slot drops what it missed), then wait for the
    last one's result."""
    names = sorted(photos)
    worker.start()
    try:
        for i in range(frames):
            if between is not None:
                between(i)
            slot.put(Frame(i, photos[names[i % len(names)]], time.perf_counter()))
            time.sleep(0.025)
        deadline = time.time() + 60
        while time.time() < deadline and not any(r.frame_id == frames - 1 for r in results):
            time.sleep(0.01)
    finally:
        worker.stop()
        worker.join(10)


def _finisher_alive() -> bool:
    return any(t.name == "deepvis-finisher" and t.is_alive() for t in threading.enumerate())


def test_stage_threads_share_the_cores_but_the_guis():
    assert stage_threads(1) == 1 and stage_threads(2) == 1 and stage_threads(3) == 1
    assert stage_threads(8) == 3 and stage_threads(16) == 7


def test_two_stages_publish_what_one_thread_makes_in_frame_order(lite0, photos):
    """Views, ERF and live top-k of the frames it published equal a single-thread processor run over the same
    frames in the same order (bit for bit); the finisher thread ran them and is gone after stop."""
    assert two_stages(lite0.device)
    slot, results, errors = LatestSlot(), [], []
    req = _explained(erf=True, live_topk=True, live_topk_k=3)
    worker = InferenceWorker(lite0, slot, results.append, on_error=errors.append, request=req, threads=1)
    names = sorted(photos)
    seen: list[str] = []
    original = FrameProcessor.finish

    def finish(self, begun):
        seen.append(threading.current_thread().name)
        return original(self, begun)

    FrameProcessor.finish = finish
    try:
        _feed(worker, slot, photos, 40, results)
    finally:
        FrameProcessor.finish = original
    assert not errors and len(results) >= 4
    ids = [r.frame_id for r in results]
    assert ids == sorted(set(ids)), ids  # in order, none twice
    assert set(seen) == {"deepvis-finisher"} and not _finisher_alive()
    # The lone processor may pick the other forward (traced graph + short eager, or all eager: `SplitChoice` times
    # them), so float sums may differ in the last bits: probabilities to 1e-5, 8-bit images to one level.
    alone = FrameProcessor(lite0)
    for got in results:
        want = alone.process(Frame(got.frame_id, photos[names[got.frame_id % len(names)]], 0.0), req)
        assert np.array_equal(got.grid.image, want.grid.image)
        assert _close(got.unit_map, want.unit_map) and got.unit_value == pytest.approx(want.unit_value, rel=1e-5)
        assert got.unit_position == want.unit_position
        assert [p[:2] for p in got.predictions] == [p[:2] for p in want.predictions]
        assert np.allclose([p[2] for p in got.predictions], [p[2] for p in want.predictions], rtol=1e-5)
        for m in VIEWS:
            assert _close(got.attributions[m], want.attributions[m]), m
        assert got.erf_frames == want.erf_frames and _close(got.erf_map, want.erf_map)
        assert [t.frame_id for t in got.live_topk] == [t.frame_id for t in want.live_topk]


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """8-bit images equal but for rounding: at most one level apart, and on fewer than 0.1% of the pixels."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return a.shape == b.shape and int(d.max()) <= 1 and float((d > 0).mean()) < 1e-3


def test_frames_with_and_without_views_keep_their_order(lite0, photos, monkeypatch):
    """Requests switching between an explained unit (two stages) and none (one stage): a plain frame waits for the
    finisher's frames, so results still go out in frame order, each with the views its request asked for. (The
    finisher is made slow here: a plain frame finished at once would overtake it.)"""
    original = FrameProcessor.finish

    def slow_finish(self, begun):
        if threading.current_thread().name == "deepvis-finisher":
            time.sleep(0.05)
        return original(self, begun)

    monkeypatch.setattr(FrameProcessor, "finish", slow_finish)
    slot, results, errors = LatestSlot(), [], []
    worker = InferenceWorker(lite0, slot, results.append, on_error=errors.append, request=_explained(), threads=1)

    asked = {1: True}  # request id -> with views

    def between(i: int) -> None:
        if i % 8 == 0:
            views = (i // 8) % 2 == 1
            asked[10 + i] = views
            worker.set_request(_explained(request_id=10 + i, attribution=VIEWS if views else ()))

    _feed(worker, slot, photos, 48, results, between)
    assert not errors
    ids = [r.frame_id for r in results]
    assert ids == sorted(set(ids)), ids
    assert {bool(r.attributions) for r in results} == {True, False}  # both kinds of frame went through
    for r in results:
        assert bool(r.attributions) == asked[r.request_id]


def test_an_error_in_stage_two_is_said_once_and_the_loop_goes_on(lite0, photos, monkeypatch):
    slot, results, errors = LatestSlot(), [], []
    original = FrameProcessor.finish
    finished: list[int] = []

    def finish(self, begun):
        try:
            if begun.frame.frame_id in (2, 3, 4):
                raise RuntimeError("boom")
            return original(self, begun)
        finally:
            finished.append(begun.frame.frame_id)

    monkeypatch.setattr(FrameProcessor, "finish", finish)
    worker = InferenceWorker(lite0, slot, results.append, on_error=errors.append, request=_explained(), threads=1)
    names = sorted(photos)
    worker.start()
    try:
        for i in range(8):  # one frame at a time: each one is processed
            slot.put(Frame(i, photos[names[i % len(names)]], time.perf_counter()))
            deadline = time.time() + 30
            while time.time() < deadline and i not in finished:
                time.sleep(0.01)
    finally:
        worker.stop()
        worker.join(10)
    assert finished == list(range(8))
    assert errors == ["inference failed: RuntimeError: boom"]
    assert [r.frame_id for r in results] == [0, 1, 5, 6, 7]


def test_one_stage_when_turned_off(lite0, photos, monkeypatch):
    monkeypatch.setenv("DEEPVIS_STAGES", "1")
    assert not two_stages(lite0.device)
    slot, results, errors = LatestSlot(), [], []
    names: list[str] = []
    original = FrameProcessor.finish

    def finish(self, begun):
        names.append(threading.current_thread().name)
        return original(self, begun)

    monkeypatch.setattr(FrameProcessor, "finish", finish)
    worker = InferenceWorker(lite0, slot, results.append, on_error=errors.append, request=_explained(), threads=1)
    _feed(worker, slot, photos, 3, results)
    assert not errors and results and set(names) == {"deepvis-inference"}


@pytest.mark.parametrize("cpus", [1])
def test_one_core_has_nothing_to_overlap(lite0, monkeypatch, cpus):
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert not two_stages(lite0.device)


def test_a_frame_superseded_while_it_waited_is_not_finished(lite0, photos):
    """The window drops results made for an older request: the finisher does not spend a backward on them."""
    from deepvis_app.pipeline.stages import Finisher

    published, errors = [], []
    newest = {"id": 1}
    finisher = Finisher(published.append, errors.append, threads=1, done=lambda: None, newest=lambda: newest["id"])
    finisher.start()
    proc = FrameProcessor(lite0)
    try:
        finisher.put(proc, proc.begin(Frame(0, photos["coffee"], time.perf_counter()), _explained(request_id=1)))
        finisher.drain()
        newest["id"] = 2
        finisher.put(proc, proc.begin(Frame(1, photos["coffee"], time.perf_counter()), _explained(request_id=1)))
        finisher.put(proc, proc.begin(Frame(2, photos["coffee"], time.perf_counter()), _explained(request_id=2)))
        finisher.drain()
    finally:
        finisher.stop()
        finisher.join(10)
    assert not errors and [r.frame_id for r in published] == [0, 2] and finisher.skipped == 1


def test_a_staged_split_frame_takes_its_predictions_from_the_graph_in_stage_two(lite0, photos, monkeypatch):
    """In two stages a split frame runs only the rules' forward to the unit's layer in `begin` and the traced
    whole net in `finish`: its predictions, grid and views are the one-thread processor's, and `SplitChoice`
    settles on the way whose longer stage is shorter. (Never replayed: `test_replay` has those frames.)"""
    monkeypatch.setattr(replayed, "STABLE_FRAMES", 10**9)
    staged, alone = FrameProcessor(lite0), FrameProcessor(lite0)
    req = _explained(attribution=("guided",))
    names = sorted(photos)
    deferred = 0
    for i in range(60):
        rgb = photos[names[i % len(names)]]
        begun = staged.begin(Frame(i, rgb, 0.0), req, staged=True)
        got = staged.finish(begun)
        if begun.deferred is None:
            continue
        deferred += 1
        assert "graph" in got.timings and "predictions" in begun.send
        want = alone.process(Frame(i, rgb, 0.0), req)
        assert [p[:2] for p in got.predictions] == [p[:2] for p in want.predictions]
        assert np.allclose([p[2] for p in got.predictions], [p[2] for p in want.predictions], rtol=1e-4)
        assert np.array_equal(got.grid.image, want.grid.image)
        assert _close(got.attributions["guided"], want.attributions["guided"])
    key = (("_blocks.3",), "_blocks.3", ("guided",))
    assert deferred >= 5 and key in staged.split.chosen


def _niceness(tid: int) -> int:
    import os

    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
@pytest.mark.parametrize("setting, spare, jobs, want", [(None, True, 0, 10), ("4", True, 0, 4),
                                                         (None, False, 0, None), (None, True, 1, None),
                                                         ("0", True, 0, None)])
def test_stage_one_gives_the_cpu_to_stage_two_and_the_gui(lite0, photos, monkeypatch, setting, spare, jobs, want):
    """While the cores are spare and no background job runs, the window's worker hands stage one to a thread at
    nice 10 (DEEPVIS_STAGE_NICE sets another, 0 none) and waits for it; next to busy programs or jobs it runs
    stage one itself. The worker, the finisher and the calling thread keep their priority."""
    import deepvis_app.pipeline.worker as worker_module
    from deepvis_app.devices import background_job

    if setting is not None:
        monkeypatch.setenv("DEEPVIS_STAGE_NICE", setting)
    monkeypatch.setattr(worker_module, "cores_to_spare", lambda: spare)

    me = _niceness(threading.get_native_id())
    slot, results, errors = LatestSlot(), [], []
    seen: dict[str, set] = {"begin": set(), "finish": set()}
    begin, finish = FrameProcessor.begin, FrameProcessor.finish

    def begin_here(self, *args, **kw):
        seen["begin"].add((threading.current_thread().name, _niceness(threading.get_native_id())))
        return begin(self, *args, **kw)

    def finish_here(self, begun):
        seen["finish"].add((threading.current_thread().name, _niceness(threading.get_native_id())))
        return finish(self, begun)

    monkeypatch.setattr(FrameProcessor, "begin", begin_here)
    monkeypatch.setattr(FrameProcessor, "finish", finish_here)
    worker = InferenceWorker(lite0, slot, results.append, on_error=errors.append, request=_explained(), threads=1)
    with background_job() if jobs else contextlib.nullcontext():  # a job running, as `gui.jobs` marks one
        _feed(worker, slot, photos, 4, results)
    assert not errors and results
    staged = seen["begin"] - {("deepvis-inference", me)}  # the first frame begins on the worker (no helper yet)
    if want is None:
        assert staged == set() and worker.stage_one[1] == 0
    else:
        assert staged == {("deepvis-stage-one", max(me, want))}
        assert worker.stage_one[0] == max(me, want) and worker.stage_one[1] >= 1
    assert seen["finish"] == {("deepvis-finisher", me)} and _niceness(threading.get_native_id()) == me
    assert not any(t.name == "deepvis-stage-one" and t.is_alive() for t in threading.enumerate())


def test_an_inline_worker_keeps_its_callers_priority(lite0, photos):
    """Run inline (the headless runner), the worker has no GUI thread to give way to: the caller's niceness stays."""
    from deepvis_app.pipeline import run_headless
    from deepvis_app.sources import open_source

    me = _niceness(threading.get_native_id())
    run_headless(lite0, open_source("demo"), frames=3, request=_explained(), warmup=0, fps=0)
    assert _niceness(threading.get_native_id()) == me
