"""Frames in: the one-frame mailbox between capture and inference, and the capture thread that fills it.

A slow consumer always gets the newest frame and nothing queues up; a source that stops delivering is re-opened
until it comes back. Nothing here touches the model.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ParamError, SourceError
from ..sources import FrameSource

StatusFn = Callable[[str], None]

MIN_FPS, MAX_FPS = 0.01, 1000.0


@dataclass(frozen=True)
class Frame:
    frame_id: int
    rgb: np.ndarray
    t_capture: float  # time.perf_counter() when the frame was read


class LatestSlot:
    """A one-frame mailbox: `put` overwrites (counting the frame it drops), `take` blocks until a new one.

    A slow consumer therefore always gets the newest frame and nothing queues up.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.put_count += 1
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Frame | None:
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def wait_taken(self, timeout: float | None = None, cancel: threading.Event | None = None) -> bool:
        """Block until the slot is empty (the consumer took the frame); used by pull-paced sources.
        `cancel` (checked on every wake-up) ends the wait early."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._frame is None or self._closed or (cancel is not None and cancel.is_set()), timeout)

    def wake(self) -> None:
        """Wake every waiter so it re-checks its own stop condition."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


def check_fps(fps: float | None) -> None:
    """None (the source's rate), 0 (as fast as taken) or MIN_FPS..MAX_FPS; a pace like 1e-12 would ask the
    capture thread to sleep for 30000 years (and overflow the wait)."""
    if fps is None or fps == 0:
        return
    if not (isinstance(fps, int | float) and math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise ParamError("fps", f"must be 0 (as fast as the network takes frames) or between {MIN_FPS:g} and "
                                f"{MAX_FPS:g}, got {fps}")


class CaptureThread(threading.Thread):
    """Reads a source on its own thread at the requested pace and posts frames into a `LatestSlot`.

    fps: None = the source's own rate (cameras: as they deliver), 0 = as fast as the consumer takes frames,
    N = paced to N per second. A source that stops delivering (a camera unplugged) is reported through
    `on_status` and re-opened once a second until it comes back; the thread never dies for it.
    """

    RETRY_SECONDS = 1.0

    def __init__(self, source: FrameSource, slot: LatestSlot, *, fps: float | None = None, mirror: bool = False,
                 on_status: StatusFn | None = None) -> None:
        super().__init__(name="deepvis-capture", daemon=True)
        check_fps(fps)
        self.source = source
        self.slot = slot
        self.fps = fps
        self.mirror = mirror
        self.on_status = on_status or (lambda _msg: None)
        self._halt = threading.Event()
        self.frames_read = 0
        self.lost = False

    def stop(self) -> None:
        """Stop reading; the slot stays open (the worker may go on with a new source's slot)."""
        self._halt.set()
        self.slot.wake()

    def _rate(self) -> float | None:
        if self.fps is not None:
            return self.fps
        if self.source.reconnectable:  # a camera paces itself
            return None
        return self.source.native_fps

    def run(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # leave the cores to the network
        next_t = time.perf_counter()
        frame_id = 0
        try:
            while not self._halt.is_set():
                rate = self._rate()
                if rate == 0:  # pulled: the next frame only once the last one was taken, however long it takes
                    while not self.slot.wait_taken(timeout=0.5, cancel=self._halt):
                        pass
                    if self._halt.is_set():
                        break
                try:
                    rgb = self.source.read()
                except SourceError as err:
                    self.on_status(f"source error: {err}")
                    rgb = None
                if rgb is None:
                    self._recover()
                    next_t = time.perf_counter()
                    continue
                if self.mirror:
                    rgb = np.ascontiguousarray(rgb[:, ::-1])
                self.slot.put(Frame(frame_id, rgb, time.perf_counter()))
                frame_id += 1
                self.frames_read += 1
                if rate:
                    next_t += 1.0 / rate
                    delay = next_t - time.perf_counter()
                    if delay > 0:
                        self._halt.wait(delay)
                    else:
                        next_t = time.perf_counter()  # fell behind: do not burst to catch up
        finally:
            self.source.close()

    def _recover(self) -> None:
        self.lost = True
        self.on_status(f"{self.source.name}: lost (no frames); retrying every {self.RETRY_SECONDS:g} s")
        self.source.close()
        while not self._halt.wait(self.RETRY_SECONDS):
            try:
                self.source.open()
            except SourceError:
                continue
            self.lost = False
            self.on_status(f"{self.source.name}: reconnected")
            return
