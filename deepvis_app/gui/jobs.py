"""Background jobs, one mechanism for every feature: superqt generator workers on Qt's thread pool.

A job is a generator function `fn(abort: threading.Event)` that yields progress or partial results and returns its
final value; a plain function works too. Each job runs in a *slot* (e.g. "optimize"): starting a job in a slot
aborts the one running there (latest request wins), and everything an older job still delivers is dropped by id,
so a feature never sees a stale result. Callbacks run on the GUI thread. Aborting sets the Event (checked inside
long steps, e.g. `iter_optimize`) and asks superqt to stop at the next yield.
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
    done: bool = False

    @property
    def cancelled(self) -> bool:
        return self.abort.is_set()

    def cancel(self) -> None:
        self.abort.set()
        if self.worker is not None and not self.done:
            self.worker.quit()


def error_text(err: BaseException) -> str:
    """One line for the user: our own errors as they are, anything else with its type."""
    return str(err) if isinstance(err, DeepVisError) else f"{type(err).__name__}: {err}"


class Jobs(QObject):
    """Starts, tracks and cancels background jobs by slot; drops what stale jobs deliver."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._current: dict[str, Job] = {}
        self._workers: set[WorkerBase] = set()  # keep references until finished

    def start(self, slot: str, fn: Callable[[threading.Event], object], *,
              on_yield: Callable[[object], None] | None = None, on_done: Callable[[object], None] | None = None,
              on_error: Callable[[str], None] | None = None) -> Job:
        """Run `fn(abort)` in the background; a job already running in `slot` is cancelled first."""
        self.cancel(slot)
        job = Job(slot, next(_ids))
        self._current[slot] = job

        def live() -> bool:
            return self._current.get(slot) is job and not job.cancelled

        gen = inspect.isgeneratorfunction(fn)
        worker: WorkerBase = (GeneratorWorker if gen else FunctionWorker)(fn, job.abort)
        job.worker = worker
        if on_yield is not None and gen:
            worker.yielded.connect(lambda value: on_yield(value) if live() else None)
        worker.returned.connect(lambda value: self._finish(job, on_done, value) if live() else None)
        worker.errored.connect(lambda err: self._fail(job, on_error, err) if live() else None)

        def release() -> None:
            job.done = True
            self._workers.discard(worker)
            if self._current.get(slot) is job:
                del self._current[slot]

        worker.finished.connect(release)
        self._workers.add(worker)
        worker.start()
        return job

    def _finish(self, job: Job, on_done: Callable[[object], None] | None, value: object) -> None:
        job.done = True
        if on_done is not None:
            on_done(value)

    def _fail(self, job: Job, on_error: Callable[[str], None] | None, err: BaseException) -> None:
        job.done = True
        if on_error is not None:
            on_error(error_text(err))

    def current(self, slot: str) -> Job | None:
        """The job running in `slot` (None when idle)."""
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
