"""A panel that says when it becomes visible, so a tool computes only while someone is looking at it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QGridLayout, QLabel, QLayout, QProgressBar, QVBoxLayout, QWidget

from .flow import FlowLayout


class ToolPanel(QWidget):
    shown = Signal()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().showEvent(event)
        self.shown.emit()


def control_row(*widgets: QWidget | str) -> FlowLayout:
    """A row of controls, left-aligned (a string becomes a label); it wraps onto a second line in a narrow dock
    instead of making the window wider."""
    row = FlowLayout(spacing=4)
    for w in widgets:
        row.addWidget(QLabel(w) if isinstance(w, str) else w)
    return row


def assemble(panel: QWidget, rows: list[QLayout], body: QGridLayout, footer: list[QWidget]) -> None:
    """The tool panels' shape: control rows on top, the images (body) taking the room, text lines below."""
    lay = QVBoxLayout(panel)
    lay.setContentsMargins(4, 2, 4, 2)
    for row in rows:
        lay.addLayout(row)
    lay.addLayout(body, 1)
    for w in footer:
        lay.addWidget(w)


def small_progress(busy: bool = False) -> QProgressBar:
    """A thin progress bar for the status bar or a panel (hidden until a job runs); `busy`: no known total."""
    bar = QProgressBar()
    if busy:
        bar.setRange(0, 0)
    bar.setMaximumWidth(140)
    bar.setMaximumHeight(14)
    bar.hide()
    return bar
