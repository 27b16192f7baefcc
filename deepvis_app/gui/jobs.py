"""Background jobs, one mechanism for every feature: superqt generator workers on Qt's thread pool.

A job is a generator function `fn(abort: threading.Event)` that yields progress or partial results and returns its
final value; a plain function works too. Each job runs in a *slot* (e.g. "optimize"): starting a job in a slot
cancels the one there (latest request wins), and everything an older job still delivers is dropped by id, so a
feature never sees a stale result. Within a slot, jobs never overlap: a new job starts once the cancelled one's
thread has stopped (at its next yield or abort check), so a slot may keep resources such as a private model
copy that only one thread at a time may use. Callbacks run on the GUI thread. Cancelling sets the Event, which
every job checks between steps (the core generators take it as `abort`).
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from PySide6.QtCore import QObject
from superqt.utils import FunctionWorker, GeneratorWorker, WorkerBase

from ..errors import DeepVisError

_ids = itertools.count(1)


@dataclass
class Job:
    """A handle on one started job."""

    slot: str
    id: int
    abort: threading.Event = field(default_factory=threading.Event)
    worker: WorkerBase | None = None
    done: bool = False  # its result (or error) was delivered
    launched: bool = False  # its thread was started
    stopped: bool = False  # its thread has ended

    @property
    def cancelled(self) -> bool:
        return self.abort.is_set()

    def cancel(self) -> None:
        # Only the Event: the job's own loop returns at its next check, so its generator *finishes* (its `finally`
        # and `with` blocks run in its thread: hooks removed, files closed). superqt's quit() would instead leave
        # the generator suspended, holding whatever it holds until garbage collection.
        self.abort.set()


def _small_team(fn: Callable, gen: bool) -> Callable:
    """`fn` run with the job thread's torch team held to `devices.job_threads()` (the live worker keeps the cores),
    on a GPU on the thread's low-priority stream (`devices.job_stream`: the live worker's kernels go first), and
    counted as running (`devices.background_job`: the worker's stage one then keeps its priority)."""
    from ..devices import background_job, job_stream, job_threads

    # `fn` is held in a box emptied once it has run: the job's inputs (frames, models, maps) are then free even if
    # the thread pool or Qt keeps the finished runnable a while longer
    box = [fn]
    if gen:
        def run_gen(abort):
            import torch

            torch.set_num_threads(job_threads())
            try:
                with job_stream(), background_job():
                    return (yield from box[0](abort))
            finally:
                box.clear()
        return run_gen

    def run(abort):
        import torch

        torch.set_num_threads(job_threads())
        try:
            with job_stream(), background_job():
                return box[0](abort)
        finally:
            box.clear()
    return run


def _disconnect(worker: WorkerBase | None) -> None:
    """Drop the callbacks connected to a finished worker's signals. Qt holds them on the C++ side, where Python's
    garbage collector cannot see the cycle job -> worker -> callback -> job, so every job's closures, inputs and
    results stayed alive for good (30 objects and whatever the job captured, per job: frames, maps, graphs)."""
    if worker is None:
        return
    for name in ("yielded", "returned", "errored", "finished"):
        signal = getattr(worker, name, None)
        if signal is None:
            continue
        try:
            signal.disconnect()
        except (RuntimeError, TypeError):  # nothing connected
            pass


def error_text(err: BaseException) -> str:
    """One line for the user: our own errors as they are, anything else with its type."""
    return str(err) if isinstance(err, DeepVisError) else f"{type(err).__name__}: {err}"


class Jobs(QObject):
    """Starts, tracks and cancels background jobs by slot; drops what stale jobs deliver."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._current: dict[str, Job] = {}  # the newest job per slot (the only one whose results count)
        self._running: dict[str, Job] = {}  # the job whose thread runs in the slot now
        self._workers: set[WorkerBase] = set()  # keep references until their threads end

    def start(self, slot: str, fn: Callable[[threading.Event], object], *,
              on_yield: Callable[[object], None] | None = None, on_done: Callable[[object], None] | None = None,
              on_error: Callable[[str], None] | None = None) -> Job:
        """Run `fn(abort)` in the background; a job in `slot` is cancelled first (the new one starts when its
        thread has stopped). `fn` must return soon after `abort` is set."""
        self.cancel(slot)
        job = Job(slot, next(_ids))
        self._current[slot] = job

        def live() -> bool:
            return self._current.get(slot) is job and not job.cancelled

        gen = inspect.isgeneratorfunction(fn)
        worker: WorkerBase = (GeneratorWorker if gen else FunctionWorker)(_small_team(fn, gen), job.abort)
        job.worker = worker
        if on_yield is not None and gen:
            worker.yielded.connect(lambda value: on_yield(value) if live() else None)
        worker.returned.connect(lambda value: self._finish(job, on_done, value) if live() else None)
        worker.errored.connect(lambda err: self._fail(job, on_error, err) if live() else None)
        worker.finished.connect(lambda: self._stopped(job))
        if slot not in self._running:
            self._launch(job)
        return job

    def _launch(self, job: Job) -> None:
        self._running[job.slot] = job
        self._workers.add(job.worker)
        job.launched = True
        job.worker.start()

    def _stopped(self, job: Job) -> None:
        job.stopped = True
        worker, job.worker = job.worker, None
        self._workers.discard(worker)
        _disconnect(worker)
        if self._running.get(job.slot) is job:
            del self._running[job.slot]
        if self._current.get(job.slot) is job:
            del self._current[job.slot]
        nxt = self._current.get(job.slot)
        if nxt is not None and not nxt.launched and not nxt.cancelled:
            self._launch(nxt)  # the slot is free: the newest request runs now

    def _finish(self, job: Job, on_done: Callable[[object], None] | None, value: object) -> None:
        job.done = True
        if on_done is not None:
            on_done(value)

    def _fail(self, job: Job, on_error: Callable[[str], None] | None, err: BaseException) -> None:
        job.done = True
        if on_error is not None:
            on_error(error_text(err))

    def current(self, slot: str) -> Job | None:
        """The newest job of `slot` while it is wanted (None when idle or cancelled)."""
        job = self._current.get(slot)
        return job if job is not None and not job.done and not job.cancelled else None

    def cancel(self, slot: str) -> None:
        job = self._current.pop(slot, None)
        if job is not None:
            job.cancel()

    def cancel_all(self, wait_ms: int = 0) -> None:
        """Cancel every job; with `wait_ms`, wait that long for their threads to stop (at exit: a thread still
        running when Qt tears down would emit into deleted objects)."""
        for slot in list(self._current):
            self.cancel(slot)
        if wait_ms > 0 and self._workers:
            try:
                WorkerBase.await_workers(wait_ms)
            except RuntimeError:
                pass  # a step that cannot be interrupted (e.g. loading a model): its thread ends on its own
