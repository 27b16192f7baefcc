"""The CPU worker's second stage: an explained frame's backprop views, ERF and host copy (`FrameProcessor.finish`)
on a thread of their own, while the worker's thread runs the next frame's forward (`FrameProcessor.begin`).

Measured on 2 cores (`benchmarks/gui_paint.py`, docs/development.md): a two-thread OpenMP team inside each frame
stalls at every op whenever the GUI thread takes one of its cores, so the window painted 0.70x the headless
pipeline's rate with three views; two single-thread stages only share the cores (the GUI's work fits in the
finisher's idle time) and lift both the window and the headless pipeline.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable

import torch

from ..devices import solo_threads
from .processor import Begun, FrameProcessor, FrameResult


def stage_threads(cores: int | None = None) -> int:
    """Intra-op threads of each stage when the CPU pipeline runs in two stages: the cores but one (the GUI's)
    shared by the two stages, at least one each. 2 cores: one each (measured, docs/development.md); larger
    machines follow the same reasoning, unmeasured."""
    cores = cores or os.cpu_count() or 1
    return max(1, (cores - 1) // 2)


def two_stages(device: torch.device) -> bool:
    """Whether the worker finishes explained frames on a second thread: on a CPU with two cores or more (a GPU
    runs a frame's stages as queued kernels; one core has nothing to overlap). DEEPVIS_STAGES=1 turns it off."""
    return device.type == "cpu" and (os.cpu_count() or 1) >= 2 and os.environ.get("DEEPVIS_STAGES", "2") != "1"


STAGE_ONE_NICE = 10  # DEEPVIS_STAGE_NICE overrides it; 0 keeps stage one on the worker's own thread


def stage_one_nice() -> int:
    """The niceness `StageOne` runs at: STAGE_ONE_NICE or DEEPVIS_STAGE_NICE; 0 (no such thread) off Linux, where
    PRIO_PROCESS would name the whole process, not a thread."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        return max(0, min(19, int(os.environ.get("DEEPVIS_STAGE_NICE", STAGE_ONE_NICE))))
    except ValueError:
        return STAGE_ONE_NICE


def lower_priority() -> int:
    """Lower the calling thread's CPU priority (Linux `nice`, this thread only) to `stage_one_nice()`; returns the
    thread's niceness now, 0 where nothing changed (another system, a sandbox that forbids it, or turned off)."""
    want = stage_one_nice()
    if want <= 0:
        return 0
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < want:
            os.setpriority(os.PRIO_PROCESS, tid, want)
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:
        return 0


class StageOne(threading.Thread):
    """Runs stage one's `begin` for the window's worker at a lower priority (nice 10), while no other program
    wants the cores (`devices.cores_to_spare`) and no background job runs (`devices.background_jobs`); the worker
    waits for it, and runs `begin` itself otherwise.

    Why: stage one has slack (it waits in the hand-over while stage two, the slower one, bounds the rate), but on
    2 cores it took the CPU from stage two and the GUI thread as an equal, so the GUI waited runnable a fifth of
    the time and the window painted 0.80-0.82x the headless pipeline's rate with guided backprop; at nice 10 the
    CPU goes first to the GUI and to stage two (docs/development.md). Not on the worker's own thread: a thread
    cannot take a lower niceness back without privileges, and next to busy programs (where the kernel does not
    group a session's threads, or within one session) a nice-10 stage one got a tenth of a core: 3.5 fps instead
    of 14, measured (`benchmarks/gui_latency.py --busy 2`); with "Where it looks", the heat map and the adversarial
    panel live, their jobs took it the same way (3 fps instead of 8). So the worker keeps its priority, and hands
    stage one here only while the cores are the live view's."""

    def __init__(self, threads: int) -> None:
        super().__init__(name="deepvis-stage-one", daemon=True)
        self.threads = threads
        self.nice = 0  # this thread's niceness once it runs
        self.calls = 0  # frames begun here
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Begun], list, threading.Event] | None] = \
            queue.SimpleQueue()

    def call(self, begin: Callable[[], Begun]) -> Begun:
        """`begin()` on this thread; returns its frame or raises its error, in the caller's thread."""
        box: list = []
        done = threading.Event()
        self.calls += 1
        self._jobs.put((begin, box, done))
        while not done.wait(0.5):
            if not self.is_alive():
                raise RuntimeError("the stage-one thread is gone")
        ok, value = box[0]
        if ok:
            return value
        raise value

    def stop(self) -> None:
        self._jobs.put(None)

    def run(self) -> None:
        self.nice = lower_priority()
        torch.set_num_threads(self.threads)
        with solo_threads():
            while (job := self._jobs.get()) is not None:
                begin, box, done = job
                try:
                    box.append((True, begin()))
                except BaseException as err:  # noqa: BLE001 - handed to the waiting worker, which reports it
                    box.append((False, err))
                finally:
                    done.set()
                del job, begin, box, done  # no frame is held here until the next one


class Finisher(threading.Thread):
    """Stage two of the CPU pipeline: `FrameProcessor.finish` of explained frames (their backprop views, the
    host copy) on its own thread, while the worker's thread runs the next frame's forward (`begin`).

    On 2 cores this replaces a two-thread OpenMP team inside each frame: a team stalls at every op whenever the
    GUI thread takes one of its cores, while two single-thread stages only share the cores (docs/development.md).
    A hand-over, not a queue: `put` returns once the finisher took the frame, so each stage holds one frame and a
    frame waits for at most one other (a queued frame behind a slower second stage waited two: 93 ms latency for
    a 30 ms stage with guided backprop, measured)."""

    def __init__(self, publish: Callable[[FrameResult], None], report: Callable[[BaseException], None], *,
                 threads: int, done: Callable[[], None], newest: Callable[[], int] = lambda: 0) -> None:
        super().__init__(name="deepvis-finisher", daemon=True)
        self.publish, self.report, self.threads, self.done = publish, report, threads, done
        self.newest = newest  # the worker's newest request id: a frame made for an older one is not finished
        self.skipped = 0
        self._queue: queue.Queue[tuple[FrameProcessor, Begun] | None] = queue.Queue(maxsize=1)
        self._taken = threading.Semaphore(0)

    def put(self, processor: FrameProcessor, begun: Begun) -> None:
        """Hand a begun frame over; returns when the finisher took it (or is gone)."""
        self._queue.put((processor, begun))
        while not self._taken.acquire(timeout=0.5):
            if not self.is_alive():
                return

    def drain(self) -> None:
        """Wait until every frame handed over was published (or reported): before stage one finishes a frame
        itself, so results never arrive out of order, and before a model switch."""
        self._queue.join()

    def stop(self) -> None:
        self._queue.put(None)

    def run(self) -> None:
        torch.set_num_threads(self.threads)
        with solo_threads():
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    self._taken.release()
                    processor, begun = item
                    if begun.req.request_id < self.newest():
                        self.skipped += 1  # superseded while it waited: its result would be dropped anyway
                        continue
                    try:
                        result = processor.finish(begun)
                        self.publish(result)
                        self.done()
                    except Exception as err:  # noqa: BLE001 - a bad frame must not kill the live loop
                        self.report(err)
                finally:
                    self._queue.task_done()
