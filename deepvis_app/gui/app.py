"""`deepvis` (no subcommand): build everything that can fail *before* the window, then run the Qt loop.

A bad --model/--source/--select raises DeepVisError here, so the CLI prints one line and exits 2 without a
window ever appearing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..errors import DeepVisError, ParamError


def prepare(args: argparse.Namespace):
    """Model, opened source, initial request and notices from the CLI args (no Qt yet)."""
    from ..commands.common import model_from_args
    from ..commands.live_args import request_from_args
    from ..devices import hand_threads_to_worker
    from ..pipeline import Unit, validate_request
    from ..sources import open_source

    exit_after = getattr(args, "exit_after", None)
    if exit_after is not None and not (exit_after >= 0):  # also catches nan
        raise ParamError("exit_after", f"must be a number of seconds >= 0, not {exit_after}")
    args.worker_threads = hand_threads_to_worker()  # before the main thread runs any torch op
    if getattr(args, "select", None) and not getattr(args, "layer", None):
        args.layer = Unit.parse(args.select).layer  # --select LAYER:UNIT shows that layer
    if getattr(args, "record", None):  # a bad --record path is one line before anything loads
        from ..commands.common import check_output_file

        check_output_file(args.record, (".mp4",), "--record")
    model = model_from_args(args)
    request = request_from_args(args, model.default_layer)
    validate_request(model, request)
    if args.store:
        from ..topk.store import TopKStore

        TopKStore.open(args.store)  # a bad --store is a start-up error (exit 2), not a banner
    notices: list[str] = []
    source = open_source(args.source, fallback_to_demo=args.source is None, notice=notices.append)
    return model, source, request, notices


def main_gui(args: argparse.Namespace) -> int:
    model, source, request, notices = prepare(args)
    try:
        os.environ.setdefault("QT_API", "pyside6")
        import pyqtgraph as pg
        from PySide6.QtWidgets import QApplication

        pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
        app = QApplication.instance() or QApplication(sys.argv[:1])
        app.setApplicationName("DeepVis")
        app.setOrganizationName("DeepVis")
        from PySide6.QtGui import QIcon

        from ..resources import icon_path

        app.setWindowIcon(QIcon(str(icon_path())))
        from .main_window import KeyFilter, MainWindow

        settings = None
        if os.environ.get("DEEPVIS_SETTINGS"):  # a portable/throwaway settings file (tests, kiosks)
            from PySide6.QtCore import QSettings

            settings = QSettings(os.environ["DEEPVIS_SETTINGS"], QSettings.Format.IniFormat)
        window = MainWindow(model, source, request, fps=args.fps, mirror=args.mirror, device=args.device,
                            store=args.store, notices=notices, settings=settings,
                            worker_threads=getattr(args, "worker_threads", None))
        key_filter = KeyFilter(window)
        app.installEventFilter(key_filter)
        window.show()
        if getattr(args, "record", None):
            window.feature("record").start(args.record)
    except BaseException:
        source.close()
        raise
    outcome = schedule_exit(window, snapshot=args.snapshot, exit_after=args.exit_after)
    code = app.exec()
    window.shutdown()
    app.removeEventFilter(key_filter)
    return int(code) or outcome.get("code", 0)


MAX_TIMER_MS = 2**31 - 1  # Qt timers take a 32-bit int of milliseconds (~24.8 days)


def schedule_exit(window, *, snapshot: str | None, exit_after: float | None) -> dict:
    """--snapshot / --exit-after: snapshot just before quitting (after at least one result for the current
    request was painted, waiting up to 10 s more for it), or, without --exit-after, 5 s after start.
    Returns a dict whose "code" becomes the exit status (2 when the snapshot could not be written)."""
    from PySide6.QtCore import QTimer

    outcome: dict = {}
    if snapshot is None and exit_after is None:
        return outcome
    delay = exit_after if exit_after is not None else 5.0
    deadline = time.monotonic() + delay + 10.0
    live = window.live

    def fire() -> None:
        res = live.shown
        if snapshot is not None and (res is None or res.request_id < live.request.request_id) \
                and time.monotonic() < deadline:
            QTimer.singleShot(200, fire)
            return
        if snapshot is not None:
            try:
                paths = window.feature("snapshots").save(snapshot)
                print(f"deepvis: snapshot: {len(paths)} files in {snapshot}", file=sys.stderr)
            except DeepVisError as err:
                print(f"deepvis: error: {err}", file=sys.stderr)
                outcome["code"] = 2
                window.close()
                return
        if exit_after is not None:
            window.close()

    QTimer.singleShot(min(MAX_TIMER_MS, max(0, int(delay * 1000) - 100)), fire)
    return outcome
