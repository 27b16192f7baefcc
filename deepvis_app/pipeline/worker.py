"""The inference thread: owns the model, takes the newest frame, processes it with the newest request, publishes.

The GUI (or the headless runner) only swaps references on it; nothing it calls waits on inference. On a CPU an
explained frame runs in two stages (`stages`): its forward here (in the window, while the cores are the live
view's, on a lower-priority helper this thread waits for), its backprop views on the finisher's thread while the
next frame's forward runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..devices import background_jobs, cores_to_spare, live_stream, solo_threads, wait_for_other_streams
from ..errors import DeepVisError
from ..heap import KeptMemory
from ..values import ViewRequest
from ..zoo import VisModel
from .frames import Frame, LatestSlot, StatusFn
from .processor import FrameProcessor, FrameResult, explains
from .stages import Finisher, StageOne, stage_one_nice, stage_threads, two_stages

if TYPE_CHECKING:
    from ..topk.live import LiveTopK


class InferenceWorker(threading.Thread):
    """Owns the model: takes the newest frame, processes it with the newest request, publishes the result.

    `set_request`, `set_model` and `set_slot` only swap references; they take effect at the next frame
    boundary, so the caller (the GUI thread) never waits on inference. A model arrives together with the
    request meant for it (one reference), so the new model never runs with the old model's layer. Errors are
    reported through `on_error` and the loop goes on with the next frame.
    """

    def __init__(self, model: VisModel, slot: LatestSlot, publish: Callable[[FrameResult], None], *,
                 request: ViewRequest | None = None, on_error: StatusFn | None = None,
                 threads: int | None = None) -> None:
        super().__init__(name="deepvis-inference", daemon=True)
        self.threads = threads  # torch intra-op threads for this thread (None: leave as is)
        self.slot = slot
        self.publish = publish
        self.on_error = on_error or (lambda _msg: None)
        self._processor = FrameProcessor(model)
        self._request = request or ViewRequest(layer=model.default_layer)
        self._pending: tuple[VisModel, ViewRequest] | None = None
        self._lock = threading.Lock()  # guards only the hand-over of `_pending`
        self._halt = threading.Event()
        self.kept = KeptMemory()  # the process's kept free memory, checked between frames
        self.frames_done = 0
        self._finisher: Finisher | None = None  # stage two on its own thread (`two_stages`), made on first use
        self._stage_one: StageOne | None = None  # stage one at a lower priority while the cores are spare
        self._last_error = ""

    @property
    def model(self) -> VisModel:
        return self._processor.model

    def set_request(self, request: ViewRequest) -> None:
        self._request = request  # atomic reference swap: newest wins

    def set_model(self, model: VisModel, request: ViewRequest | None = None) -> None:
        """Switch models at the next frame; `request` (default: the model's default layer) comes with it."""
        with self._lock:
            self._pending = (model, request or ViewRequest(request_id=self._request.request_id + 1,
                                                             layer=model.default_layer))

    @property
    def stage_one(self) -> tuple[int, int]:
        """(niceness of the thread that runs stage one while the cores are spare, frames it began): (0, 0) where
        stage one runs only on this thread."""
        helper = self._stage_one
        return (helper.nice, helper.calls) if helper is not None else (0, 0)

    def live_topk_snapshot(self) -> LiveTopK | None:
        """A copy of the live top-k that another thread may save (`.save(path)`) while this one goes on."""
        live = self._processor.live
        return live.snapshot() if live is not None else None

    def set_slot(self, slot: LatestSlot) -> None:
        """Take frames from another slot (a new source); the old one is woken so the switch is immediate."""
        old, self.slot = self.slot, slot
        old.wake()

    def stop(self) -> None:
        self._halt.set()
        self.slot.close()

    def run(self) -> None:
        """The loop; `start()` runs it on a new thread, a caller may also run it inline (headless).

        On a GPU the loop runs on the device's high-priority live stream (`devices.live_stream`): background jobs
        queue their kernels on low-priority streams of their own, and a frame waits only for its own work (its
        host copies), never for the whole device. A new model's weights were copied on another stream: the live
        stream waits for those copies on the GPU (`devices.wait_for_other_streams`) before the first frame."""
        if self.threads:
            torch.set_num_threads(self.threads)
        frame: Frame | None = None
        try:
            while not self._halt.is_set():
                device = self._processor.model.device
                with live_stream(device):
                    wait_for_other_streams(device)
                    frame = self._loop(device, frame)
                if frame is None:
                    return
        finally:
            if self._stage_one is not None:
                self._stage_one.stop()
                self._stage_one.join(5)
            if self._finisher is not None:
                self._finisher.stop()
                if self._finisher is not threading.current_thread():
                    self._finisher.join(5)  # not left inside torch at the interpreter's exit

    def _report(self, err: BaseException) -> None:
        """One line per new error (the same error every frame is said once); the loop goes on."""
        msg = str(err) if isinstance(err, DeepVisError) else f"inference failed: {type(err).__name__}: {err}"
        if msg != self._last_error:
            self.on_error(msg)
            self._last_error = msg

    def _published(self) -> None:
        """After a result went out (from either stage's thread)."""
        self._last_error = ""
        self.frames_done += 1
        self.kept.check()  # between frames: what the arenas keep free beyond a bound goes back to the kernel

    def _stage_two(self, device: torch.device, req: ViewRequest) -> Finisher | None:
        """The finisher thread when this frame's second stage runs there (an explained frame on a CPU with the
        cores for it, `two_stages`), started on first use; else None."""
        if not explains(req) or not two_stages(device):
            return None
        if self._finisher is None:
            self._finisher = Finisher(self.publish, self._report, threads=stage_threads(), done=self._published,
                                      newest=lambda: self._request.request_id)
            self._finisher.start()
            if threading.current_thread() is self and stage_one_nice() > 0:  # the window's worker: run inline
                self._stage_one = StageOne(stage_threads())  # (headless) there is no GUI thread to give way to
                self._stage_one.start()
        return self._finisher

    def _process(self, device: torch.device, frame: Frame, req: ViewRequest) -> FrameResult | None:
        """The frame's work: both stages here, or its forward here and the rest handed to the finisher (None)."""
        finisher = self._stage_two(device, req)
        if finisher is None:
            if self._finisher is not None:
                self._finisher.drain()  # its frames first: results go out in order
            return self._processor.process(frame, req)
        processor = self._processor
        if self._stage_one is not None and not background_jobs() and cores_to_spare():
            begun = self._stage_one.call(lambda: processor.begin(frame, req, staged=True))
        else:
            with solo_threads():
                have = torch.get_num_threads()
                torch.set_num_threads(min(have, stage_threads()))
                try:
                    begun = processor.begin(frame, req, staged=True)
                finally:
                    torch.set_num_threads(have)
        finisher.put(processor, begun)
        return None

    def _loop(self, device: torch.device, carried: Frame | None) -> Frame | None:
        """Process frames on `device` until halted (returns None) or a new model lives on another device (returns
        the frame taken for it: the caller re-enters that device's stream and hands it back)."""
        while not self._halt.is_set():
            slot = self.slot
            frame, carried = (carried, None) if carried is not None else (slot.take(timeout=0.5), None)
            if frame is None:
                if slot.closed:
                    self._halt.wait(0.05)  # a closed slot returns at once: do not spin
                continue
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                if self._finisher is not None:
                    self._finisher.drain()  # the old model's frames go out before the new model's
                self._processor = FrameProcessor(pending[0])
                if pending[1].request_id >= self._request.request_id:  # a newer set_request wins
                    self._request = pending[1]
                if pending[0].device != device:
                    return frame
                wait_for_other_streams(device)
            req = self._request
            if req.paused:
                continue
            try:
                result = self._process(device, frame, req)
            except Exception as err:  # noqa: BLE001 - a bad frame must not kill the live loop
                self._report(err)
                continue
            if result is not None:
                self.publish(result)
                self._published()
        return None
