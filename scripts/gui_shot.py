"""Screenshot of the real window, optionally with a tool panel raised and driven first.

    .venv/bin/python scripts/gui_shot.py --out shot.png --panel adversarial --call "adversarial.run_on_frame" \
        --wait 20
    .venv/bin/python scripts/gui_shot.py --out small.png --model convnext_tiny --weights random \
        --layer features.1.0.block.4 --display-size 1024x700

Without a display (no DISPLAY) it re-runs itself under `xvfb-run` with a virtual screen of --display-size.
--weights is load_model's: default (pretrained), random (seeded, nothing downloaded) or a weights file.

--call FEATURE.METHOD[:ARG] calls a feature's public method (with one string argument) once the first frame is
painted (repeatable).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

CHILD_ENV = "DEEPVIS_SHOT_CHILD"


def run_under_xvfb(size: str) -> int:
    """This script again, on a virtual `size` screen (WxH) of its own."""
    if not shutil.which("xvfb-run"):
        print("gui_shot: no display and no xvfb-run (apt-get install xvfb)", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}  # the real (virtual) screen, not offscreen
    env[CHILD_ENV] = "1"
    return subprocess.call(["xvfb-run", "-a", "-s", f"-screen 0 {size}x24", sys.executable, *sys.argv], env=env)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", default="demo")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--select", default=None, help="LAYER:UNIT")
    ap.add_argument("--panel", action="append", default=[], help="dock key to show and raise")
    ap.add_argument("--call", action="append", default=[], help="FEATURE.METHOD[:ARG] to call after the first frame")
    ap.add_argument("--text", default=None, help="FEATURE.METHOD returning a dialog's text (e.g. help.about_text): "
                    "shown in a message box, saved beside OUT as OUT-dialog.png")
    ap.add_argument("--wait", type=float, default=8.0, help="seconds after the calls before the shot")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="default", help="default (pretrained), random, or a weights file")
    ap.add_argument("--display-size", default="1600x1000", help="WxH of the virtual screen when there is no display")
    ap.add_argument("--screen", action="store_true", help="also save the whole screen as OUT-screen.png")
    args = ap.parse_args()
    if not re.fullmatch(r"\d{3,5}x\d{3,5}", args.display_size):
        ap.error(f"--display-size: give WxH, e.g. 1024x700, got {args.display_size!r}")
    if not os.environ.get("DISPLAY") and not os.environ.get(CHILD_ENV):
        return run_under_xvfb(args.display_size)
    os.environ.setdefault("QT_API", "pyside6")
    from deepvis_app.devices import hand_threads_to_worker, keep_freed_memory

    keep_freed_memory()  # as `deepvis` starts
    threads = hand_threads_to_worker()
    import pyqtgraph as pg
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from deepvis_app import load_model
    from deepvis_app.errors import DeepVisError, ParamError
    from deepvis_app.gui.main_window import KeyFilter, MainWindow
    from deepvis_app.pipeline import Unit, ViewRequest
    from deepvis_app.sources import open_source

    pg.setConfigOptions(imageAxisOrder="row-major")
    app = QApplication(sys.argv[:1])
    try:
        vm = load_model(args.model, device="cpu", weights=args.weights)
    except DeepVisError as e:
        print(f"gui_shot: {e.flag_message() if isinstance(e, ParamError) else e}", file=sys.stderr)
        return 2
    unit = Unit.parse(args.select) if args.select else None
    layer = args.layer or (unit.layer if unit else vm.default_layer)
    settings = QSettings(os.path.join(tempfile.mkdtemp(), "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(vm, open_source(args.source), ViewRequest(layer=layer, unit=unit), device="cpu",
                     settings=settings, worker_threads=threads)
    app.installEventFilter(KeyFilter(win))
    win.show()

    def pump(seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until()):
            app.processEvents()
            time.sleep(0.01)

    pump(120, lambda: win.live.shown is not None)
    for key in args.panel:
        win.ctx.show_panel.emit(key)
    for call in args.call:
        target, _, arg = call.partition(":")
        feature, method = target.split(".", 1)
        getattr(win.feature(feature), method)(*([arg] if arg else []))
    pump(args.wait)
    ok = win.grab().save(args.out)
    screen = app.primaryScreen()
    geo, avail = win.frameGeometry(), screen.availableGeometry()
    print(f"window {geo.width()}x{geo.height()} at ({geo.x()}, {geo.y()}), screen {avail.width()}x{avail.height()}",
          file=sys.stderr)
    if args.screen:  # the whole screen: shows what a window wider than the screen loses
        ok = screen.grabWindow(0).save(args.out.removesuffix(".png") + "-screen.png") and ok
    if args.text:
        from PySide6.QtWidgets import QMessageBox

        feature, method = args.text.split(".", 1)
        box = QMessageBox(QMessageBox.Icon.Information, "DeepVis", getattr(win.feature(feature), method)(), parent=win)
        box.setModal(False)
        box.show()
        pump(1.0)
        ok = box.grab().save(args.out.removesuffix(".png") + "-dialog.png") and ok
    win.close()
    from PySide6.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(60_000)  # a job still loading a model copy ends before Qt goes
    print(args.out if ok else "could not save", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
