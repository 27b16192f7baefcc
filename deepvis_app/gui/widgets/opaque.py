"""Widgets that change every frame and paint their own background, so Qt repaints only them.

A widget that is not opaque to Qt makes every ancestor paint the region first; with the style sheet's background on
every QWidget, a live label under the status bar or in the inspector had the main window, the dock and the pane
(Python subclasses, each call a GIL round trip) painted beneath it 30 times a second, and the grid's viewport had
four panes' backgrounds filled under its 0.55 Mpx every frame (`benchmarks/gui_paint.py`: the GUI thread 0.227 ->
0.209 cores for the grid alone, docs/development.md). Marked `WA_OpaquePaintEvent`, a widget paints its own rect
(the style sheet's background, which Qt then no longer draws for it) and nothing behind it is touched.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import QLabel, QStyle, QStyleOption, QWidget


def make_opaque(widget: QWidget) -> None:
    """Tell Qt `widget` paints every pixel of its rect (its paintEvent must call `paint_background` first)."""
    widget.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)


def paint_background(widget: QWidget, painter: QPainter) -> None:
    """What Qt would have drawn under an opaque widget: its palette's window colour, then the style sheet's
    background for it (PE_Widget; nothing without a style sheet)."""
    painter.fillRect(widget.rect(), widget.palette().window())
    opt = QStyleOption()
    opt.initFrom(widget)
    widget.style().drawPrimitive(QStyle.PrimitiveElement.PE_Widget, opt, painter, widget)


class LiveLabel(QLabel):
    """A QLabel whose text changes every frame (a value, a latency): opaque, so only it is repainted."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        make_opaque(self)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        paint_background(self, p)
        p.end()
        super().paintEvent(event)
