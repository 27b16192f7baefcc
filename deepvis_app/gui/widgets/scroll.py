"""A scroll area for a tool panel in a dock: the panel fills the dock when it fits, and scrolls (instead of
pushing the window wider or taller than the screen) when the dock is smaller than the panel's minimum.

QScrollArea's own "widget resizable" mode sizes a panel with wrapping rows (height-for-width) to its *preferred*
height, so a panel of images always scrolled; here the panel gets the dock's size, or its minimum where the dock
is smaller.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QBoxLayout, QFrame, QGridLayout, QLayout, QLayoutItem, QScrollArea, QWidget

from .flow import FlowLayout


def min_height(item: QWidget | QLayout | QLayoutItem, width: int) -> int:
    """The least height `item` needs at `width`, wrapped rows and word-wrapped labels included (Qt's own
    height-for-width of a box layout is its *preferred* height: images at their full size)."""
    if isinstance(item, QWidget):
        if item.isHidden():
            return 0
        lay = item.layout()
        if lay is not None:
            m = item.contentsMargins()
            inner = min_height(lay, width - m.left() - m.right()) + m.top() + m.bottom()
            return max(item.minimumHeight(), item.minimumSizeHint().height() if not lay.hasHeightForWidth() else 0,
                       inner)
        if item.hasHeightForWidth():
            return max(item.minimumSizeHint().height(), item.heightForWidth(width))
        return max(item.minimumHeight(), item.minimumSizeHint().height())
    if isinstance(item, QLayout):
        return _layout_min_height(item, width)
    if item.widget() is not None:
        return min_height(item.widget(), width)
    if item.layout() is not None:
        return _layout_min_height(item.layout(), width)
    return item.minimumSize().height()  # a spacer


def _layout_min_height(lay: QLayout, width: int) -> int:
    m = lay.contentsMargins()
    inner = max(0, width - m.left() - m.right())
    if isinstance(lay, FlowLayout):
        return lay.heightForWidth(width)
    items = [lay.itemAt(i) for i in range(lay.count())]
    items = [i for i in items if not (i.widget() is not None and i.widget().isHidden())]
    if isinstance(lay, QBoxLayout) and items:
        if lay.direction() in (QBoxLayout.Direction.TopToBottom, QBoxLayout.Direction.BottomToTop):
            body = sum(min_height(i, inner) for i in items) + max(0, lay.spacing()) * (len(items) - 1)
        else:
            body = max(min_height(i, inner // len(items)) for i in items)
        return body + m.top() + m.bottom()
    if isinstance(lay, QGridLayout) and items:
        rows, cols = max(1, lay.rowCount()), max(1, lay.columnCount())
        need = [0] * rows
        for i in range(lay.count()):
            item = lay.itemAt(i)
            if item.widget() is not None and item.widget().isHidden():
                continue
            r, c, rs, cs = lay.getItemPosition(i)
            h = min_height(item, inner * max(1, cs) // cols)
            for k in range(r, min(rows, r + max(1, rs))):
                need[k] = max(need[k], h // max(1, rs))
        used = [h for h in need if h > 0]
        return sum(used) + max(0, lay.verticalSpacing()) * max(0, len(used) - 1) + m.top() + m.bottom()
    return lay.minimumSize().height()


class FitScroll(QScrollArea):
    def __init__(self, widget: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(False)
        self.setWidget(widget)
        self.setMinimumSize(120, 60)
        widget.installEventFilter(self)  # its minimum changes (a longer text wraps): fit again
        self.viewport().installEventFilter(self)  # a scroll bar came or went: fit the new width

    def fit(self) -> None:
        widget = self.widget()
        if widget is None:
            return
        view = self.viewport().size()
        hint = widget.minimumSizeHint().expandedTo(widget.minimumSize())
        w = max(view.width(), hint.width())
        h = max(view.height(), hint.height(), min_height(widget, w))
        if widget.size().width() != w or widget.size().height() != h:
            widget.resize(w, h)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().resizeEvent(event)
        self.fit()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if (obj is self.widget() and event.type() == QEvent.Type.LayoutRequest) or (
                obj is self.viewport() and event.type() == QEvent.Type.Resize):
            self.fit()
        return False
