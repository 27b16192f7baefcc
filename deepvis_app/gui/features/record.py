"""Recording: the window as shown (input, grid, inspector, open tool panels) to an MP4, one grab per painted frame.

`r` (or File > Record video, or the status bar's record button) starts and stops. The video's frame rate is the
painted rate measured just before the start; frames are placed by the wall clock (a frame painted late is held,
surplus frames are dropped), so the video lasts as long as the recording did. A red "REC" mark with the elapsed
time shows in the status bar meanwhile. The file is written to a temp file beside the target and renamed into
place when the recording stops (also when the window closes): a reader never sees half a video. Into
$DEEPVIS_RECORDINGS or ~/deepvis-recordings/<time>.mp4; `deepvis --record FILE --exit-after S` for scripts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QToolButton

from ...errors import DeepVisError, ParamError
from ...fileio import FILE_MODE, fsync_dir
from ..feature import Feature, Key, MenuItem

SUFFIXES = (".mp4",)
MIN_FPS, MAX_FPS, DEFAULT_FPS = 1, 60, 10
REC_STYLE = "QToolButton { color: white; background: #c0392b; font-weight: bold; border-radius: 3px; padding: 0 6px; }"


def grab_rgb(widget) -> np.ndarray:
    """The widget as it is drawn now: RGB uint8 HxWx3."""
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    arr = np.frombuffer(image.constBits(), np.uint8, count=h * stride).reshape(h, stride)
    return arr[:, :w * 3].reshape(h, w, 3).copy()


def painted_rate(times: list[float] | deque, default: float = DEFAULT_FPS) -> int:
    """Frames per second of the last paints (within 3 s), clamped to what a video player shows well."""
    recent = [t for t in times if t >= (times[-1] - 3.0 if times else 0.0)]
    if len(recent) < 3 or recent[-1] - recent[0] <= 0:
        return int(default)
    rate = (len(recent) - 1) / (recent[-1] - recent[0])
    return int(min(MAX_FPS, max(MIN_FPS, round(rate))))


class Recorder:
    """One recording: an OpenCV mp4v writer on a temp file beside `path`, frames placed by the wall clock."""

    def __init__(self, path: Path, fps: int, size: tuple[int, int]) -> None:
        self.path, self.fps = path, fps
        self.size = (size[0] - size[0] % 2, size[1] - size[1] % 2)  # (w, h): codecs want even sides
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.mp4", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), self.size)
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise DeepVisError(f"cannot write an MP4 video to {path} (OpenCV has no mp4v encoder here)")
        self.t0 = time.monotonic()
        self.frames = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def add(self, rgb: np.ndarray, now: float | None = None) -> int:
        """Write `rgb` as often as the clock says (0 when ahead of it); returns the index of its last copy or -1."""
        due = int(((now if now is not None else time.monotonic()) - self.t0) * self.fps) + 1
        copies = due - self.frames
        if copies <= 0:
            return -1
        w, h = self.size
        if 0 <= rgb.shape[0] - h <= 1 and 0 <= rgb.shape[1] - w <= 1:
            frame = rgb[:h, :w]
        else:  # the window was resized while recording: the video keeps its first size
            frame = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
        for _ in range(copies):
            self.writer.write(bgr)
        self.frames += copies
        return self.frames - 1

    def finish(self) -> Path | None:
        """Close the video and rename it into place; None (and nothing left behind) when no frame was written."""
        self.writer.release()
        if self.frames == 0:
            self.tmp.unlink(missing_ok=True)
            return None
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(self.tmp, FILE_MODE)
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abandon(self) -> None:
        self.writer.release()
        self.tmp.unlink(missing_ok=True)


def check_video_path(path: str | os.PathLike) -> Path:
    out = Path(path).expanduser()
    if out.suffix.lower() not in SUFFIXES:
        raise ParamError("record", f"must be a file ending in {' or '.join(SUFFIXES)}, got {str(path)!r}")
    if out.is_dir():
        raise ParamError("record", f"{out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise ParamError("record", f"the folder {out.parent} does not exist")
    return out


class RecordFeature(Feature):
    name = "record"
    frame_written = Signal(int, object)  # (index of the frame in the video, the RGB image written)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.recorder: Recorder | None = None
        self.last_path: Path | None = None
        self.paint_times: deque[float] = deque(maxlen=64)
        self._pending = False
        self.button = QToolButton()
        self.button.setAutoRaise(True)
        self.button.setToolTip("record the window to an MP4 video (r)")
        self.button.clicked.connect(self.toggle)
        self.clock = QTimer(self)
        self.clock.setInterval(500)
        self.clock.timeout.connect(self._show_state)
        self.act = self.action("Record video", self.toggle, checkable=True,
                               tip="record the window to an MP4 video (r starts and stops)")
        ctx.live.painted.connect(self._painted)
        self._show_state()

    @property
    def recording(self) -> bool:
        return self.recorder is not None

    # -- what the window gathers
    def keys(self) -> list[Key]:
        return [Key(("r",), self.toggle, "r", "record the window to MP4 (again: stop)")]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&File", self.act)]

    def status_widgets(self) -> list:
        return [self.button]

    def snapshot_state(self) -> dict:
        rec = self.recorder
        return {"recording": None if rec is None else {"path": str(rec.path), "fps": rec.fps, "frames": rec.frames}}

    def shutdown(self) -> None:
        self.stop()

    # -- recording
    def toggle(self) -> None:
        if self.recording:
            self.stop()
            return
        root = Path(os.environ.get("DEEPVIS_RECORDINGS") or Path.home() / "deepvis-recordings")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.ctx.notify(f"cannot record: cannot create {root} ({err.strerror})", "error")
            self._show_state()
            return
        self.start(root / time.strftime("deepvis-%Y%m%d-%H%M%S.mp4"))

    def start(self, path: str | os.PathLike) -> bool:
        """Start recording into `path` (.mp4); a banner and False when it cannot."""
        if self.recording:
            return True
        try:
            out = check_video_path(path)
            first = grab_rgb(self.ctx.top_widget)
            fps = painted_rate(self.paint_times, self._source_rate())
            self.recorder = Recorder(out, fps, (first.shape[1], first.shape[0]))
        except (DeepVisError, OSError) as err:
            text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            self.ctx.notify(f"cannot record: {text}", "error")
            self._show_state()
            return False
        self._write(first)
        self.clock.start()
        self._show_state()
        self.ctx.notify(f"recording to {out} at {fps} fps (r to stop)", "info", 3)
        return True

    def stop(self) -> Path | None:
        """Stop and publish the video; returns its path (None when nothing was recording or recorded)."""
        rec, self.recorder = self.recorder, None
        self.clock.stop()
        if rec is None:
            return None
        try:
            path = rec.finish()
        except OSError as err:
            rec.abandon()
            self.ctx.notify(f"recording failed: {err.strerror or err}", "error")
            path = None
        self._show_state()
        if path is not None:
            self.last_path = path
            seconds = rec.frames / rec.fps
            self.ctx.notify(f"recorded {seconds:.1f} s ({rec.frames} frames) to {path}", "info", 5)
        return path

    def _source_rate(self) -> float:
        fps = getattr(self.ctx.live, "fps", None)
        return float(fps) if isinstance(fps, int | float) and fps > 0 else DEFAULT_FPS

    def _painted(self, _res) -> None:
        self.paint_times.append(time.monotonic())
        if self.recording and not self._pending:
            self._pending = True  # grab once the other features have drawn this result
            QTimer.singleShot(0, self._grab)

    def _grab(self) -> None:
        self._pending = False
        if self.recorder is not None:
            self._write(grab_rgb(self.ctx.top_widget))

    def _write(self, rgb: np.ndarray) -> None:
        try:
            index = self.recorder.add(rgb)
        except cv2.error as err:
            self.ctx.notify(f"recording failed: {err}", "error")
            with contextlib.suppress(Exception):
                self.recorder.abandon()
            self.recorder = None
            self._show_state()
            return
        if index >= 0:
            self.frame_written.emit(index, rgb)

    def _show_state(self) -> None:
        rec = self.recorder
        self.act.setChecked(rec is not None)
        if rec is None:
            self.button.setText("\u25cf record")
            self.button.setStyleSheet("")
            return
        s = int(rec.elapsed())
        self.button.setText(f"\u25cf REC {s // 60:02d}:{s % 60:02d}")
        self.button.setStyleSheet(REC_STYLE)
