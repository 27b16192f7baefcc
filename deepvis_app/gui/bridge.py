"""Qt adapter for the Qt-free pipeline: worker/capture callbacks (any thread) -> queued signals (GUI thread).

The GUI connects to these signals with `Qt.QueuedConnection`, so every slot runs on the GUI thread and the
worker never waits for the window. Background jobs (loading a model, opening a source, reading files) go through
the one job runner, `gui.jobs.Jobs`.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class WorkerBridge(QObject):
    """Signals emitted from worker threads; slots connected with QueuedConnection run on the GUI thread."""

    result = Signal(object)  # FrameResult
    status = Signal(str)  # capture notices (source lost / reconnected)
    error = Signal(str)  # inference errors

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.results_received = 0  # written from the worker thread only (for fps counters)
        self.attributions_received = 0

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
