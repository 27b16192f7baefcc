"""A layout that wraps its widgets onto more lines when the row is too narrow (Qt's flow layout example).

Control rows use it so that a panel's minimum width is its widest control, not the sum of all of them: a narrow
dock (a small screen, several tools open) wraps the row instead of pushing the window wider than the screen.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QSize, Qt
from PySide6.QtWidgets import QLayout, QLayoutItem, QSizePolicy, QStyle, QWidget


class FlowLayout(QLayout):
    """Items left to right, wrapping; each line's items are centred vertically on the line."""

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self._spacing = spacing
        self.setContentsMargins(0, 0, 0, 0)

    # -- QLayout's item protocol
    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802 - Qt naming
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def addStretch(self, _stretch: int = 0) -> None:  # noqa: N802 - a QHBoxLayout call: a flow has no stretch
        pass

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def spacing(self) -> int:
        return self._spacing if self._spacing >= 0 else self._style_spacing()

    def _style_spacing(self) -> int:
        parent = self.parentWidget()
        if parent is None:
            return 6
        return max(0, parent.style().pixelMetric(QStyle.PixelMetric.PM_LayoutHorizontalSpacing))

    # -- sizes
    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._place(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._place(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802
        """Everything on one line."""
        visible = self._visible()
        if not visible:
            return QSize(0, 0)
        m = self.contentsMargins()
        w = sum(i.sizeHint().width() for i in visible) + self.spacing() * (len(visible) - 1)
        h = max(i.sizeHint().height() for i in visible)
        return QSize(w + m.left() + m.right(), h + m.top() + m.bottom())

    def minimumSize(self) -> QSize:  # noqa: N802
        """The widest item: anything wider wraps."""
        size = QSize(0, 0)
        for item in self._visible():
            size = size.expandedTo(item.minimumSize())
        m = self.contentsMargins()
        return size + QSize(m.left() + m.right(), m.top() + m.bottom())

    def _visible(self) -> list[QLayoutItem]:
        return [i for i in self._items if not (i.widget() is not None and i.widget().isHidden())]

    def _place(self, rect: QRect, *, move: bool) -> int:
        """Lay the items out in `rect` (move=True) or only measure; returns the height used."""
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        space = self.spacing()
        lines: list[list[tuple[QLayoutItem, QSize]]] = [[]]
        x = area.x()
        for item in self._visible():
            hint = item.sizeHint().expandedTo(item.minimumSize())
            w = min(hint.width(), max(area.width(), item.minimumSize().width()))
            if lines[-1] and x + w > area.right() + 1:
                lines.append([])
                x = area.x()
            lines[-1].append((item, QSize(w, hint.height())))
            x += w + space
        y = area.y()
        for line in lines:
            if not line:
                continue
            height = max(size.height() for _item, size in line)
            x = area.x()
            for item, size in line:
                if move:
                    h = size.height()
                    if item.widget() is not None and item.widget().sizePolicy().verticalPolicy() \
                            == QSizePolicy.Policy.Expanding:
                        h = height
                    item.setGeometry(QRect(QPoint(x, y + (height - h) // 2), QSize(size.width(), h)))
                x += size.width() + space
            y += height + space
        return y - space - rect.y() + m.bottom() if y > area.y() else m.top() + m.bottom()
