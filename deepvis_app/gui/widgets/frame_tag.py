"""Which frame a tool panel's result was computed from: a thumbnail, the frame number and its age, marked when
the input has moved on to another picture since (the result is then older than what the Input pane shows).

A tool job runs for seconds while the camera keeps going, so a panel without this would explain one picture next
to an input showing another. "Another picture" compares pixels, not frame numbers: a frozen camera or a still
image repeats the same picture under new numbers, and a result of it is not stale.
"""

from __future__ import annotations

import time

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QWidget

from .canvas import ImageCanvas

STALE_COLOR = "#ff9f0a"
THUMB = 30  # px


def same_picture(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """True when two frames hold the same pixels (the same array, or equal content)."""
    if a is None or b is None:
        return False
    return a is b or (a.shape == b.shape and bool(np.array_equal(a, b)))


class FrameTag(QWidget):
    """A thumbnail and one line: "frame 181 · 2.4 s ago", or, when the input shows another picture now,
    "... · older than the input (frame 190)" in orange. `set_frame` says what a result was computed from;
    `refresh` (connect it to the live session's `painted`) updates the age and the stale mark."""

    def __init__(self, what: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.what = what  # e.g. "maps of": said before the frame number
        self.thumb = ImageCanvas("", smooth=True, min_size=THUMB)
        self.thumb.setFixedSize(THUMB, THUMB)
        self.label = QLabel("")
        self.label.setWordWrap(True)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        lay.addWidget(self.thumb)
        lay.addWidget(self.label, 1)
        self.image: np.ndarray | None = None
        self.frame_id: int | None = None
        self.t_capture = 0.0
        self.stale = False
        self._input_id: int | None = None
        self.hide()

    def set_frame(self, res) -> None:
        """The result shown now was computed from `res` (a FrameResult); None: nothing shown."""
        if res is None:
            self.image, self.frame_id, self.stale = None, None, False
            self.hide()
            return
        self.image, self.frame_id, self.t_capture = res.image, int(res.frame_id), float(res.t_capture)
        self.thumb.set_image(res.image)
        self.show()
        self._update(None)

    def refresh(self, shown) -> None:
        """The input now shows `shown` (a FrameResult): update the age and whether the result is stale."""
        if self.image is None:
            return
        self._update(shown)

    def _update(self, shown) -> None:
        if shown is not None:
            self.stale = not same_picture(self.image, shown.image)
            self._input_id = int(shown.frame_id)
        age = max(0.0, time.perf_counter() - self.t_capture) if self.t_capture else 0.0
        head = f"{self.what} " if self.what else ""
        text = f"{head}frame {self.frame_id} \u00b7 {age:.1f} s ago"
        if self.stale:
            text = (f"<span style='color:{STALE_COLOR}'>{text} \u2014 older than the input (frame "
                    f"{self._input_id})</span>")
        self.label.setText(text)
        self.thumb.outline = QColor(STALE_COLOR) if self.stale else None
        self.setToolTip("the frame this panel's result was computed from" + (
            "; the input shows another picture now" if self.stale else ""))

    @property
    def text(self) -> str:
        return self.label.text()

