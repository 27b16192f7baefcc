"""The live pipeline without a window: the same capture thread and worker, a tally of timings, one report.

Only each frame's timings are kept (a few numbers in flat arrays), so an hour-long soak run stays flat in memory.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import DeepVisError, ParamError
from ..sources import FrameSource
from ..values import ViewRequest
from ..zoo import VisModel
from .frames import CaptureThread, LatestSlot, StatusFn
from .processor import FrameResult
from .worker import InferenceWorker

MAX_TIMEOUT = 1e7  # seconds (~4 months); threading waits overflow somewhere above 1e9


@dataclass(frozen=True)
class HeadlessReport:
    """What `deepvis run --headless --json` prints (field names are stable; see docs/cli.md).

    `timed_out` is true when the run hit its timeout first: the figures then cover the frames that arrived."""

    model: str
    device: str
    source: str
    layer: str
    frames_processed: int
    frames_captured: int
    frames_dropped: int
    seconds: float
    pipeline_fps: float
    capture_fps: float
    latency_ms_p50: float
    latency_ms_p95: float
    stage_ms_mean: dict[str, float]
    attribution_fps: float | None
    unit: str | None
    timed_out: bool = False
    frames_wanted: int = 0


@dataclass(frozen=True)
class FrameStat:
    """The timings of one processed frame: all a headless run keeps (a `FrameResult` holds images; keeping
    those for a long run grew RSS by ~2 MB a frame)."""

    frame_id: int
    layer: str
    t_capture: float
    t_done: float
    timings: dict[str, float]

    @property
    def latency(self) -> float:
        return self.t_done - self.t_capture


class _Tally:
    """Running figures of a headless run: a few numbers per frame in flat arrays (8 bytes each), stage times
    as sums, so an hour-long run costs a few MB, not the images of every frame."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seen = 0
        self.layer = ""
        self.t_start = 0.0  # finish time of the last warm-up frame: the clock starts there
        self.frame_ids = array("q")
        self.t_done = array("d")
        self.latency = array("d")
        self.stage_sums: dict[str, float] = {}

    def add(self, stat: FrameStat) -> None:
        self.seen += 1
        self.layer = stat.layer
        if self.seen <= self.warmup:
            self.t_start = stat.t_done
            return
        self.frame_ids.append(stat.frame_id)
        self.t_done.append(stat.t_done)
        self.latency.append(stat.latency)
        for k, v in stat.timings.items():
            self.stage_sums[k] = self.stage_sums.get(k, 0.0) + v

    def report(self, model: VisModel, source: FrameSource, request: ViewRequest, *, timed_out: bool,
               wanted: int) -> HeadlessReport:
        n = len(self.latency)
        unit = str(request.unit) if request.unit else None
        if n == 0:
            return HeadlessReport(model=model.name, device=str(model.device), source=source.name,
                                  layer=self.layer or request.layer, frames_processed=0, frames_captured=0,
                                  frames_dropped=0, seconds=0.0, pipeline_fps=0.0, capture_fps=0.0,
                                  latency_ms_p50=float("nan"), latency_ms_p95=float("nan"), stage_ms_mean={},
                                  attribution_fps=None, unit=unit, timed_out=timed_out, frames_wanted=wanted)
        span = max(1e-9, self.t_done[-1] - self.t_start)
        lat = np.frombuffer(self.latency, dtype=np.float64) * 1000.0
        captured = self.frame_ids[-1] - self.frame_ids[0] + 1
        attr_fps = (n / span) if request.attribution and request.unit is not None else None
        return HeadlessReport(
            model=model.name, device=str(model.device), source=source.name, layer=self.layer,
            frames_processed=n, frames_captured=captured, frames_dropped=captured - n, seconds=span,
            pipeline_fps=n / span, capture_fps=captured / span, latency_ms_p50=float(np.percentile(lat, 50)),
            latency_ms_p95=float(np.percentile(lat, 95)),
            stage_ms_mean={k: v / n * 1000 for k, v in sorted(self.stage_sums.items())}, attribution_fps=attr_fps,
            unit=unit, timed_out=timed_out, frames_wanted=wanted)


def check_headless(frames: int, timeout: float | None) -> None:
    """The run's own parameters, in the core's words: at least one frame, a timeout the waits can keep."""
    if frames < 1:
        raise ParamError("frames", f"must be at least 1, got {frames}")
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise ParamError("timeout", f"must be between 0 and {MAX_TIMEOUT:g} seconds, got {timeout}")


def run_headless(model: VisModel, source: FrameSource, *, frames: int, request: ViewRequest,
                 fps: float | None = None, mirror: bool = False, warmup: int = 2,
                 timeout: float | None = None, on_status: StatusFn | None = None,
                 on_frame: Callable[[FrameStat], None] | None = None) -> HeadlessReport:
    """Run the live pipeline with no window until `frames` results arrived (after `warmup` ignored ones).

    Only each frame's timings are kept, so memory stays flat however long it runs. On `timeout` the report
    covers what arrived (`timed_out=True`); `on_frame` sees every frame's timings as it finishes (soak runs)."""
    check_headless(frames, timeout)
    warmup = max(1, warmup)
    slot = LatestSlot()
    tally = _Tally(warmup)
    done = threading.Event()
    errors: list[str] = []
    target = frames + warmup

    def publish(result: FrameResult) -> None:
        if tally.seen >= target:
            return
        stat = FrameStat(result.frame_id, result.layer, result.t_capture, result.t_done, dict(result.timings))
        tally.add(stat)
        if on_frame is not None:
            on_frame(stat)
        if tally.seen >= target:
            done.set()
            worker.stop()

    def on_error(msg: str) -> None:
        errors.append(msg)
        done.set()
        worker.stop()

    capture = CaptureThread(source, slot, fps=fps, mirror=mirror, on_status=on_status)
    worker = InferenceWorker(model, slot, publish, request=request, on_error=on_error)
    watchdog = threading.Timer(timeout, worker.stop) if timeout else None
    capture.start()
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        # The calling thread is the inference worker here: it loaded the model, so torch keeps one
        # OpenMP team (a second thread running the net gets a second team and runs ~1.5x slower on 2 cores).
        worker.run()
        finished = done.is_set()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        capture.stop()
        worker.stop()
        capture.join(5)
    if errors:
        raise DeepVisError(errors[0])
    return tally.report(model, source, request, timed_out=not finished, wanted=frames)
