"""The live session: owns the capture thread, the inference worker and the request, and hands results to the GUI.

Threading contract: the GUI thread never runs the model and never waits on it. The worker publishes each
FrameResult through `WorkerBridge.result` (queued to the GUI thread); the session keeps only the newest one and
emits `painted` from a display-rate timer, so surplus results coalesce. Results made for an older request (or
another model) are dropped. The request is derived from the app state (`state.view_request`) on every change;
sending it to the worker is coalesced (a lone click goes out on the next event-loop turn, a held arrow key once
per `REQUEST_COALESCE_MS`). Whether a state change needs a new request is derived, never listed: the new request
is compared with the last one (ids aside); equal means the change only alters the drawing, and it repaints.

The session owns what is loaded and opened: the VisModel (`vm`), the source, and the private model copies that
background jobs use (one per job slot, `model_copy_loader`), all freed when the model changes. A model switch is
announced once, on `model_changed`, after the state was moved to the new model's default layer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from PySide6.QtCore import QObject, Qt, QTimer, Signal

from ..devices import settle_objects
from ..pipeline import CaptureThread, FrameResult, InferenceWorker, LatestSlot
from ..sources import FrameSource
from ..state import AppState, view_request
from ..values import Unit
from ..zoo import VisModel
from .bridge import WorkerBridge
from .sources_gui import FreezableSource

PAINT_MS = 16  # display timer (~60 Hz); paints only when a new result arrived
REQUEST_COALESCE_MS = 25  # request changes are sent at most this often


class LiveSession(QObject):
    """Capture thread -> worker -> newest result -> `painted` (GUI thread). One owner of the pipeline's threads."""

    painted = Signal(object)  # FrameResult, when a new one (or a repaint) is to be drawn
    model_changed = Signal(object)  # VisModel: THE announcement of a model switch (the worker has it already)
    source_changed = Signal(object)  # FreezableSource
    status = Signal(str, str)  # (message, level) from the capture (source lost / reconnected) or the worker
    stats_changed = Signal(dict)  # smoothed rates, once a second

    def __init__(self, state: AppState, model: VisModel, *, fps: float | None = None,
                 device: str = "auto", worker_threads: int | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.vm = model
        self.device_arg = device
        self.fps = fps
        self.bridge = WorkerBridge(self)
        q = Qt.ConnectionType.QueuedConnection
        self.bridge.result.connect(self.on_result, q)
        self.bridge.status.connect(self._on_capture_status, q)
        self.bridge.error.connect(self._on_worker_error, q)
        self.latest: FrameResult | None = None  # newest result for the current request
        self.shown: FrameResult | None = None  # the result on screen
        self.paint_count = 0
        self.paint_ms: deque[float] = deque(maxlen=100)  # GUI-thread time per painted result
        self.click_latencies: deque[float] = deque(maxlen=50)  # seconds from a request change to its first paint
        self._t_request: float | None = None
        self._await_request: int | None = None
        self._repaint = False
        self._last_flush = 0.0
        self._closing = False
        self.frames_before = 0  # frames read by captures that were replaced
        self._copies: dict[str, VisModel] = {}  # job slot -> its private copy of `vm`
        self._copies_lock = threading.Lock()
        self._generation = 0  # bumped on every model switch: copies of an older model are never kept
        self._switching = False  # set_model moves the state; the request goes out with the model

        if not state.layer:
            state.layer = model.default_layer  # a window started without a layer shows the model's default
        self.request = view_request(state, request_id=0)
        self.slot = LatestSlot()
        self.worker = InferenceWorker(model, self.slot, self.bridge.publish, request=self.request,
                                      on_error=self.bridge.on_error, threads=worker_threads)
        self.capture: CaptureThread | None = None
        self.source: FreezableSource | None = None
        state.events.all.connect(self._on_state)

        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.timeout.connect(self._flush_request)
        self._paint_timer = QTimer(self)
        self._paint_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._paint_timer.timeout.connect(self._paint)
        self.stats = {"capture_fps": 0.0, "inference_fps": 0.0, "attribution_fps": 0.0, "display_fps": 0.0}
        self._counts = self._count()
        self._stats_timer = QTimer(self)
        self._stats_timer.timeout.connect(self._update_stats)

    def start(self, source: FrameSource) -> None:
        self.worker.start()
        self.set_source(source)
        self._paint_timer.start(PAINT_MS)
        self._stats_timer.start(1000)

    # ------------------------------------------------------------------ request
    def _on_state(self, info) -> None:
        name = info.signal.name
        if name == "mirror" and self.capture is not None:
            self.capture.mirror = self.state.mirror
        if name == "camera_frozen" and self.source is not None:
            self.source.frozen = self.state.camera_frozen
        if not self._switching:
            self.refresh_request()

    def refresh_request(self) -> None:
        """Derive the request from the state; when it differs (ids aside), give it a new id and schedule sending
        it; when it does not, the change was only about drawing: repaint."""
        new = view_request(self.state, request_id=self.request.request_id)
        if new == self.request:
            self.repaint()  # e.g. activation <-> overlay: same request, another drawing
            return
        self.request = replace(new, request_id=self.request.request_id + 1)
        self._t_request = time.perf_counter()
        self._await_request = self.request.request_id
        if not self._flush_timer.isActive():
            wait_ms = REQUEST_COALESCE_MS - (time.perf_counter() - self._last_flush) * 1000
            # leading edge on the next event-loop turn, so one user action that sets several fields is one request
            self._flush_timer.start(max(0, int(wait_ms) + 1) if wait_ms > 0 else 0)
        self.repaint()

    def _flush_request(self) -> None:
        self._last_flush = time.perf_counter()
        self.worker.set_request(self.request)

    # ------------------------------------------------------------------ results and painting
    def on_result(self, result: FrameResult) -> None:
        """Keep `result` as the newest unless it was made for a request or model the user already left. The first
        result of a layer while no unit is chosen (start, model switch) selects the layer's strongest unit."""
        if result.request_id < self.request.request_id or result.model != self.vm.name or self._closing:
            return
        self.latest = result
        if self.state.unit is None and result.unit is None and result.layer == self.state.layer:
            maxima = result.grid.channel_max[:self.vm.channels(result.layer)]
            if len(maxima):
                self.state.unit = Unit(result.layer, int(maxima.argmax()))

    def repaint(self) -> None:
        """Draw the newest result again (a display-only choice changed)."""
        self._repaint = True

    def _paint(self) -> None:
        res = self.latest
        if res is None or (res is self.shown and not self._repaint):
            return
        self._repaint = False
        self.shown = res
        self.paint_count += 1
        if self._await_request is not None and res.request_id >= self._await_request:
            if self._t_request is not None:
                self.click_latencies.append(time.perf_counter() - self._t_request)
            self._await_request = None
        t0 = time.perf_counter()
        try:
            self.painted.emit(res)
        finally:
            self.paint_ms.append((time.perf_counter() - t0) * 1000)

    # ------------------------------------------------------------------ rates
    def _count(self) -> dict[str, float]:
        return {"capture_fps": self.frames_read, "inference_fps": self.bridge.results_received,
                "attribution_fps": self.bridge.attributions_received, "display_fps": self.paint_count,
                "t": time.perf_counter()}

    def _update_stats(self) -> None:
        """Rates over the last second, smoothed (half of the old value stays) so labels do not flicker."""
        now = self._count()
        dt = max(1e-6, now["t"] - self._counts["t"])
        for key in self.stats:
            rate = (now[key] - self._counts[key]) / dt
            self.stats[key] = rate if self.stats[key] == 0.0 else 0.5 * self.stats[key] + 0.5 * rate
        self._counts = now
        self.stats_changed.emit(dict(self.stats))

    # ------------------------------------------------------------------ model and source
    def set_model(self, vm: VisModel) -> None:
        """Make a loaded model the live one: the old model's job copies are freed, the state moves to the new
        model's default layer (features hear those fields change, reading the new `vm`), the worker gets model
        and request together, then `model_changed` announces the switch."""
        self.vm = vm
        self.latest = None
        self.free_model_copies()
        self._switching = True
        try:
            # choices that name the old model's layers, classes or blocks go in the same update (one request)
            self.state.update(layer=vm.default_layer, unit=None, unit_frozen=False, backprop_blocked=None,
                              overlay_class=None, attention_block="", attention_patch=None)
        finally:
            self._switching = False
        self.request = view_request(self.state, request_id=self.request.request_id + 1)
        self.worker.set_model(vm, self.request)
        self.repaint()
        self.model_changed.emit(vm)
        settle_objects()  # the new model's modules out of the garbage collector's walks

    def set_source(self, source: FrameSource) -> None:
        """Make an opened source the input; the old capture thread is told to stop (not waited on)."""
        wrapped = FreezableSource(source)
        wrapped.frozen = self.state.camera_frozen
        old = self.capture
        slot = LatestSlot()
        self.worker.set_slot(slot)  # the worker switches at its next take
        self.slot = slot
        if old is not None:
            self.frames_before += old.frames_read
            old.stop()
        self.source = wrapped
        self.capture = CaptureThread(wrapped, slot, fps=self.fps, mirror=self.state.mirror,
                                     on_status=self.bridge.on_status)
        self.capture.start()
        self.source_changed.emit(wrapped)

    @property
    def frames_read(self) -> int:
        return self.frames_before + (self.capture.frames_read if self.capture is not None else 0)

    def model_copy_loader(self, slot: str) -> Callable[[], VisModel]:
        """A function for a job of `slot` that returns the slot's private copy of the current model (jobs never
        touch the live worker's). The copy is loaded on first use, in the job's thread, and kept for the slot's
        later jobs; jobs of one slot never overlap (`Jobs`), so one thread at a time uses it. Pass the job's own
        slot: two slots never share a copy. After a model switch the copies are freed (`free_model_copies`); a
        job of the old model still running loads a copy of its own that is not kept."""
        source, device, generation = self.vm, self.device_arg, self._generation

        def load() -> VisModel:
            with self._copies_lock:
                vm = self._copies.get(slot) if generation == self._generation else None
            if vm is not None:
                return vm
            vm = source.reload(device=device)  # same spec, weights, labels and head size as the live model
            with self._copies_lock:
                if generation == self._generation:
                    self._copies[slot] = vm
            return vm

        return load

    @property
    def model_copies(self) -> dict[str, VisModel]:
        """The kept copies by job slot (a snapshot)."""
        with self._copies_lock:
            return dict(self._copies)

    def free_model_copies(self) -> None:
        """Drop every kept copy (a job still using one keeps it until the job ends)."""
        with self._copies_lock:
            self._copies.clear()
            self._generation += 1

    # ------------------------------------------------------------------ messages from the threads
    def _on_capture_status(self, message: str) -> None:
        self.status.emit(message, "info" if "reconnected" in message else "error")

    def _on_worker_error(self, message: str) -> None:
        if self.request.attribution and not self._closing:
            # The worker publishes nothing while a frame fails; keep the live view going without backprop
            # for this unit (selecting another unit or backprop mode tries again).
            unit = self.request.unit
            self.state.backprop_blocked = unit
            message = f"{message} (backprop turned off for {unit})"
        self.status.emit(message, "error")

    # ------------------------------------------------------------------ shutdown
    @property
    def closing(self) -> bool:
        return self._closing

    def shutdown(self) -> None:
        """Stop the threads (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._paint_timer.stop()
        self._flush_timer.stop()
        self._stats_timer.stop()
        if self.capture is not None:
            self.capture.stop()
        self.worker.stop()
        self.worker.join(5)
        if self.capture is not None:
            self.capture.join(2)
