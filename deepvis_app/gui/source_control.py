"""Input sources: switching the capture to a new source, opening one in the background (menu, dialog,
drag and drop), camera freeze and mirror."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog

from ..pipeline import Capture, LatestSlot
from ..sources import FrameSource, open_source
from .sources_gui import FreezableSource

if TYPE_CHECKING:
    from .main_window import MainWindow


def set_source(win: MainWindow, source: FrameSource) -> None:
    """Make an already opened source the input; the old capture thread is told to stop (not waited on)."""
    wrapped = FreezableSource(source)
    wrapped.frozen = win.camera_frozen
    old = win.capture
    slot = LatestSlot()
    win.worker.set_slot(slot)  # the worker switches at its next take
    win.slot = slot
    if old is not None:
        win._frames_before += old.frames_read
        old.stop()
    win.source = wrapped
    win.capture = Capture(wrapped, slot, fps=win.fps, mirror=win.mirror, on_status=win.bridge.on_status)
    win.capture.start()
    win._update_status_labels()


def open_source_text(win: MainWindow, text: str) -> None:
    """Open a source in the background (a camera can take a second); on failure the old one keeps going."""
    win.status.showMessage(f"opening {text}...")

    def done(source: object) -> None:
        win.set_source(source)  # type: ignore[arg-type]
        win.status.showMessage(f"source: {win.source.name}", 4000)

    win.bridge.run_job(lambda: open_source(text), done,
                       lambda msg: win.notify(f"cannot open source: {msg}", "error"), name="deepvis-open")


def open_dialog(win: MainWindow, kind: str) -> None:
    if kind == "folder":
        path = QFileDialog.getExistingDirectory(win, "Open image folder")
    else:
        pattern = ("Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)" if kind == "image"
                   else "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.gif)")
        path, _ = QFileDialog.getOpenFileName(win, f"Open {kind}", "", f"{pattern};;All files (*)")
    if path:
        win.open_source_text(path)


def drag_enter_event(win: MainWindow, event) -> None:  # noqa: N802
    if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
        event.acceptProposedAction()


def drop_event(win: MainWindow, event) -> None:  # noqa: N802
    files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
    if files:
        win.open_source_text(files[0])
        event.acceptProposedAction()


def toggle_camera_freeze(win: MainWindow) -> None:
    win.camera_frozen = not win.camera_frozen
    if win.source is not None:
        win.source.frozen = win.camera_frozen
    win.freeze_action.setChecked(win.camera_frozen)
    win.status.showMessage("camera frozen (f to resume)" if win.camera_frozen else "camera live", 3000)
    win._repaint = True


def toggle_mirror(win: MainWindow) -> None:
    win.mirror = not win.mirror
    if win.capture is not None:
        win.capture.mirror = win.mirror
    win.mirror_action.setChecked(win.mirror)
