"""What the interventions panel draws: the top-5 of the real and of the intervened network side by side with the
change in probability, and a strip of ranked channel tiles that select a unit when clicked.

Both widgets only draw what they are handed (rows of predictions, ranked channels with their tiles); the
interventions feature decides what that is."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainter, QPen
from PySide6.QtWidgets import (
    QBoxLayout,
    QDoubleSpinBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .canvas import BG
from .images import to_qimage

Rows = list[tuple[int, str, float]]  # (class index, name, probability), best first

REAL = QColor(90, 200, 250)  # the real network's bars
INTERVENED = QColor(255, 159, 10)  # the intervened network (orange, as the "[intervened: ...]" notes)
UP, DOWN, SAME = QColor(120, 220, 120), QColor(255, 105, 97), QColor(150, 155, 170)
SELECTED = QColor(255, 214, 10)
ROW_H = 17


def delta_text(index: int, prob: float, other: Rows) -> tuple[str, float | None]:
    """The change of class `index` from the `other` network's top-5 to this one's `prob`, in percentage points:
    ("+3.1", 0.031); when the class is not in the other top-5 its probability there is only known to be below the
    other's 5th: ("new", None)."""
    for i, _n, p in other:
        if i == index:
            d = prob - p
            return f"{d * 100:+.1f}", d
    return "new", None


def after_text(index: int, rows: Rows) -> tuple[str, float | None]:
    """Where class `index` of the real top-5 is in the intervened network: its probability, or "<x%" below the
    intervened top-5's last."""
    for i, _n, p in rows:
        if i == index:
            return f"{p * 100:.1f}%", p
    low = min((p for _i, _n, p in rows), default=0.0)
    return f"<{low * 100:.1f}%", None


class CompareTop5(QWidget):
    """Two columns of 5 rows: the real network's top-5 (left) and the intervened network's (right), each row with
    a bar, the class, its probability, and the change against the other network (percentage points)."""

    class_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.real: Rows = []
        self.intervened: Rows | None = None  # None: nothing active (the live network is the real one)
        self.setMinimumHeight(6 * ROW_H + 4)
        self.setMinimumWidth(240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("top-5 without the interventions (the real network) and with them; the numbers after "
                        "the intervened probabilities are the change in percentage points. Click a class: "
                        "rank the units for it")

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        return QSize(460, 6 * ROW_H + 4)

    def set_rows(self, real: Rows, intervened: Rows | None) -> None:
        self.real, self.intervened = list(real), (list(intervened) if intervened is not None else None)
        self.update()

    def deltas(self) -> list[tuple[int, str]]:
        """(class, Δ text) of each intervened row, as drawn (for tests and snapshots)."""
        if self.intervened is None:
            return []
        return [(i, delta_text(i, p, self.real)[0]) for i, _n, p in self.intervened]

    def column_rects(self) -> tuple[QRectF, QRectF]:
        half = (self.width() - 8) / 2
        return QRectF(0, ROW_H, half, 5 * ROW_H), QRectF(half + 8, ROW_H, half, 5 * ROW_H)

    def row_at(self, x: float, y: float) -> int | None:
        """The class under widget point (x, y), None off the rows."""
        for rect, rows in zip(self.column_rects(), (self.real, self.intervened or []), strict=True):
            if rect.contains(x, y):
                i = int((y - rect.top()) // ROW_H)
                return rows[i][0] if 0 <= i < len(rows) else None
        return None

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt naming
        idx = self.row_at(event.position().x(), event.position().y())
        if event.button() == Qt.MouseButton.LeftButton and idx is not None:
            self.class_clicked.emit(idx)
            event.accept()
            return
        super().mousePressEvent(event)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        p.fillRect(self.rect(), BG)
        left, right = self.column_rects()
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.9))
        p.setFont(small)
        p.setPen(REAL)
        p.drawText(QRectF(left.left() + 4, 0, left.width(), ROW_H), Qt.AlignmentFlag.AlignVCenter,
                   "real network (without)")
        p.setPen(INTERVENED if self.intervened is not None else SAME)
        p.drawText(QRectF(right.left() + 4, 0, right.width(), ROW_H), Qt.AlignmentFlag.AlignVCenter,
                   "with the interventions" + ("" if self.intervened is not None else ": none on"))
        p.setFont(self.font())
        self._column(p, left, self.real, REAL, None)
        if self.intervened is not None:
            self._column(p, right, self.intervened, INTERVENED, self.real)
        p.end()

    def _column(self, p: QPainter, rect: QRectF, rows: Rows, color: QColor, other: Rows | None) -> None:
        fm = QFontMetricsF(p.font())
        num_w = fm.horizontalAdvance("100.0%") + 6
        delta_w = fm.horizontalAdvance("+100.0") + 6 if other is not None else 0.0
        bar = QColor(color)
        bar.setAlpha(90)
        for k, (idx, name, prob) in enumerate(rows[:5]):
            y = rect.top() + k * ROW_H
            width = rect.width() - delta_w
            p.fillRect(QRectF(rect.left(), y + 2, max(2.0, width * prob), ROW_H - 4), bar)
            p.setPen(QColor(240, 240, 240))
            name_w = max(10.0, width - num_w - 6)
            p.drawText(QRectF(rect.left() + 4, y, name_w, ROW_H), Qt.AlignmentFlag.AlignVCenter,
                       fm.elidedText(name, Qt.TextElideMode.ElideRight, name_w))
            p.drawText(QRectF(rect.left() + width - num_w, y, num_w - 2, ROW_H),
                       Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, f"{prob * 100:.1f}%")
            if other is not None:
                text, d = delta_text(idx, prob, other)
                p.setPen(SAME if d is None or abs(d) < 5e-4 else (UP if d > 0 else DOWN))
                p.drawText(QRectF(rect.right() - delta_w, y, delta_w, ROW_H),
                           Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, text)


@dataclass(frozen=True)
class RankedTile:
    """One ranked channel: its number, score, and its current activation tile (RGB uint8, or None)."""

    channel: int
    score: float
    image: np.ndarray | None = None
    intervened: bool = False  # an active intervention changes this channel


class RankTile(QWidget):
    """A ranked channel: its tile, "#channel" and the score; a click selects the unit."""

    clicked = Signal(int)
    SIDE = 48

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.item: RankedTile | None = None
        self.rank = 0
        self.selected = False
        self._qimage = None
        self.setFixedSize(self.SIDE + 4, self.SIDE + 2 * 14 + 4)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_item(self, rank: int, item: RankedTile, selected: bool) -> None:
        self.rank, self.item, self.selected = rank, item, selected
        self._qimage = to_qimage(np.ascontiguousarray(item.image)) if item.image is not None else None
        self._array = item.image  # the QImage borrows its memory
        state = " (changed by an active intervention)" if item.intervened else ""
        self.setToolTip(f"rank {rank + 1}: channel {item.channel}, score {item.score:.4g}{state}\n"
                        "click: select this unit (its top-k and optimized image appear)")
        self.update()

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt naming
        if event.button() == Qt.MouseButton.LeftButton and self.item is not None:
            self.clicked.emit(self.item.channel)
            event.accept()
            return
        super().mousePressEvent(event)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        p.fillRect(self.rect(), BG)
        if self.item is None:
            p.end()
            return
        img_rect = QRectF(2, 2, self.SIDE, self.SIDE)
        if self._qimage is not None:
            p.drawImage(img_rect, self._qimage)
        else:
            p.fillRect(img_rect, QColor(30, 32, 40))
        if self.item.intervened:
            p.setPen(QPen(INTERVENED, 2))
            p.drawLine(img_rect.topLeft(), img_rect.bottomRight())
        if self.selected:
            p.setPen(QPen(SELECTED, 2))
            p.drawRect(img_rect.adjusted(1, 1, -1, -1))
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        p.setFont(small)
        p.setPen(SELECTED if self.selected else QColor(230, 230, 230))
        top = self.SIDE + 3
        p.drawText(QRectF(0, top, self.width(), 14), Qt.AlignmentFlag.AlignCenter, f"#{self.item.channel}")
        p.setPen(UP if self.item.score > 0 else (DOWN if self.item.score < 0 else SAME))
        p.drawText(QRectF(0, top + 13, self.width(), 14), Qt.AlignmentFlag.AlignCenter, f"{self.item.score:+.3g}")
        p.end()


class RankStrip(QScrollArea):
    """A horizontal, scrolling row of ranked channel tiles, best first; `chosen(channel)` on a click."""

    chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.body = QWidget()
        self.row = QHBoxLayout(self.body)
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.setSpacing(2)
        self.row.addStretch(1)
        self.setWidget(self.body)
        self.tiles: list[RankTile] = []
        bar = self.horizontalScrollBar().sizeHint().height()
        self.setFixedHeight(RankTile.SIDE + 2 * 14 + 6 + bar)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - the strip scrolls: it never asks for its full width
        return QSize(RankTile.SIDE * 2, self.height())

    def set_items(self, items: list[RankedTile], selected: int | None) -> None:
        """Show `items` in order (reusing tiles: the strip is refreshed with every frame while shown)."""
        while len(self.tiles) < len(items):
            tile = RankTile()
            tile.clicked.connect(self.chosen)
            self.row.insertWidget(len(self.tiles), tile)
            self.tiles.append(tile)
        for k, tile in enumerate(self.tiles):
            if k < len(items):
                tile.set_item(k, items[k], items[k].channel == selected)
                tile.show()
            else:
                tile.item = None
                tile.hide()

    def shown_channels(self) -> list[int]:
        return [t.item.channel for t in self.tiles if t.item is not None and not t.isHidden()]

    def tile_of(self, channel: int) -> RankTile | None:
        return next((t for t in self.tiles if t.item is not None and t.item.channel == channel), None)


class SideBySide(QWidget):
    """Two widgets side by side when there is room (`WIDE` px and more), one above the other in a narrow dock, so
    the panel never needs more width than its widest part."""

    WIDE = 520

    def __init__(self, first: QWidget, second: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.box = QBoxLayout(QBoxLayout.Direction.TopToBottom, self)
        self.box.setContentsMargins(0, 0, 0, 0)
        self.box.setSpacing(6)
        self.box.addWidget(first, 3)
        self.box.addWidget(second, 2)

    @property
    def side_by_side(self) -> bool:
        return self.box.direction() == QBoxLayout.Direction.LeftToRight

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        wide = event.size().width() >= self.WIDE
        if wide != self.side_by_side:
            self.box.setDirection(QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom)
        super().resizeEvent(event)


def joined(*widgets: QWidget) -> QWidget:
    """Widgets kept on one line when a control row wraps (a button and the value it uses)."""
    box = QWidget()
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(2)
    for w in widgets:
        lay.addWidget(w)
    return box


LIST_STYLE = """
QListWidget { background: #0e0f13; border: 1px solid #343846; }
QListWidget::indicator { width: 12px; height: 12px; border: 1px solid #9aa1b3; background: #0e0f13; }
QListWidget::indicator:checked { background: #ff9f0a; border: 1px solid #ff9f0a; image: none; }
QListWidget::item:selected { background: #343846; }
"""


class InterventionList(QWidget):
    """The interventions as rows with a tick box (on / off), and edit / remove / clear-all buttons; it says what
    the user asked for (`toggled(row, on)`, `edit_requested(row)`, ...) and shows the rows it is given."""

    toggled = Signal(int, bool)
    edit_requested = Signal(int)
    remove_requested = Signal(int)
    clear_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.view = QListWidget()
        self.view.setStyleSheet(LIST_STYLE)
        self.view.setToolTip("tick: on / off; double-click: edit")
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setMinimumHeight(70)
        self.view.itemChanged.connect(
            lambda item: self.toggled.emit(self.view.row(item), item.checkState() == Qt.CheckState.Checked))
        self.view.itemDoubleClicked.connect(lambda item: self.edit_requested.emit(self.view.row(item)))
        buttons = QHBoxLayout()
        for text, signal, tip in (("edit\u2026", self.edit_requested, "edit the chosen intervention as text: "
                                   "LAYER:CHANNELS[:MODE]"),
                                  ("remove", self.remove_requested, "remove the chosen intervention"),
                                  ("clear all", None, "remove every intervention (K)")):
            button = QPushButton(text)
            button.setToolTip(tip)
            button.clicked.connect(self.clear_requested.emit if signal is None else
                                   (lambda _c=False, sig=signal: sig.emit(self.view.currentRow())))
            buttons.addWidget(button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.view, 1)
        lay.addLayout(buttons)

    def set_rows(self, rows: list[tuple[str, str, bool]]) -> None:
        """(text, tooltip, on) per intervention, in the list's order; switched-off rows are dimmed."""
        current = self.view.currentRow()
        self.view.blockSignals(True)
        self.view.clear()
        for text, tip, on in rows:
            item = QListWidgetItem(text)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
            item.setToolTip(tip)
            if not on:
                item.setForeground(SAME)
            self.view.addItem(item)
        if 0 <= current < len(rows):
            self.view.setCurrentRow(current)
        self.view.blockSignals(False)


def action_button(text: str, slot, tip: str) -> QPushButton:
    """A push button that calls `slot()` when clicked (the checked flag dropped), with a tooltip."""
    b = QPushButton(text)
    b.setToolTip(tip)
    b.clicked.connect(lambda _checked=False: slot())
    return b


def number_box(box: QDoubleSpinBox, low: float, high: float, value: float, tip: str) -> QDoubleSpinBox:
    """`box` set to [low, high] at `value`, two decimals, as narrow as its widest number."""
    box.setRange(low, high)
    box.setDecimals(2)
    box.setValue(value)
    box.setMaximumWidth(box.fontMetrics().horizontalAdvance("-0000.00") + 30)
    box.setToolTip(tip)
    return box
