"""`deepvis` (no subcommand): build everything that can fail *before* the window, then run the Qt loop.

A bad --model/--source/--select raises DeepVisError here, so the CLI prints one line and exits 2 without a
window ever appearing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..errors import DeepVisError


def prepare(args: argparse.Namespace):
    """Model, opened source, initial request and notices from the CLI args (no Qt yet)."""
    from ..commands.common import model_from_args
    from ..commands.run import request_from_args
    from ..devices import hand_threads_to_worker
    from ..pipeline import Unit, validate_request
    from ..sources import open_source

    args.worker_threads = hand_threads_to_worker()  # before the main thread runs any torch op
    if getattr(args, "select", None) and not getattr(args, "layer", None):
        args.layer = Unit.parse(args.select).layer  # --select LAYER:UNIT shows that layer
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
    except BaseException:
        source.close()
        raise
    schedule_exit(window, snapshot=args.snapshot, exit_after=args.exit_after)
    code = app.exec()
    window.shutdown()
    app.removeEventFilter(key_filter)
    return int(code)


def schedule_exit(window, *, snapshot: str | None, exit_after: float | None) -> None:
    """--snapshot / --exit-after: snapshot just before quitting (after at least one result for the current
    request was painted, waiting up to 10 s more for it), or, without --exit-after, 5 s after start."""
    from PySide6.QtCore import QTimer

    if snapshot is None and exit_after is None:
        return
    delay = exit_after if exit_after is not None else 5.0
    deadline = time.monotonic() + delay + 10.0

    def fire() -> None:
        res = window._painted
        if snapshot is not None and (res is None or res.request_id < window.request.request_id) \
                and time.monotonic() < deadline:
            QTimer.singleShot(200, fire)
            return
        if snapshot is not None:
            try:
                paths = window.save_snapshot(snapshot)
                print(f"deepvis: snapshot: {len(paths)} files in {snapshot}", file=sys.stderr)
            except DeepVisError as err:
                print(f"deepvis: error: {err}", file=sys.stderr)
        if exit_after is not None:
            window.close()

    QTimer.singleShot(max(0, int(delay * 1000) - 100), fire)
