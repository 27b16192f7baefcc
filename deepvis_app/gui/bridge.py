"""Qt adapter for the Qt-free pipeline: worker/capture callbacks (any thread) -> queued signals (GUI thread).

The GUI connects to these signals with `Qt.QueuedConnection`, so every slot runs on the GUI thread and the
worker never waits for the window. Background jobs (loading a model, opening a source) use the same route.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from PySide6.QtCore import QObject, Qt, Signal

from ..errors import DeepVisError


class WorkerBridge(QObject):
    """Signals emitted from worker threads; slots connected with QueuedConnection run on the GUI thread."""

    result = Signal(object)  # FrameResult
    status = Signal(str)  # capture notices (source lost / reconnected)
    error = Signal(str)  # inference errors
    job_done = Signal(object, object)  # (callback, value)
    job_failed = Signal(object, str)  # (callback, message)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.results_received = 0  # written from the worker thread only (for fps counters)
        self.attributions_received = 0
        self.job_done.connect(self._on_job_done, Qt.ConnectionType.QueuedConnection)
        self.job_failed.connect(self._on_job_failed, Qt.ConnectionType.QueuedConnection)

    # -- callbacks handed to the Qt-free core (called on worker / capture threads)
    def publish(self, result: object) -> None:
        self.results_received += 1
        if getattr(result, "attributions", None):
            self.attributions_received += 1
        self.result.emit(result)

    def on_status(self, message: str) -> None:
        self.status.emit(message)

    def on_error(self, message: str) -> None:
        self.error.emit(message)

    # -- background jobs
    def run_job(self, fn: Callable[[], object], on_done: Callable[[object], None],
                on_fail: Callable[[str], None], *, name: str = "deepvis-job") -> threading.Thread:
        """Run `fn` on a daemon thread; `on_done(value)` or `on_fail(message)` then runs on the GUI thread."""

        def body() -> None:
            try:
                value = fn()
            except DeepVisError as err:
                self.job_failed.emit(on_fail, str(err))
            except Exception as err:  # noqa: BLE001 - any failure of a background job is shown, not raised
                self.job_failed.emit(on_fail, f"{type(err).__name__}: {err}")
            else:
                self.job_done.emit(on_done, value)

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        return thread

    def _on_job_done(self, callback: Callable[[object], None], value: object) -> None:
        callback(value)

    def _on_job_failed(self, callback: Callable[[str], None], message: str) -> None:
        callback(message)
