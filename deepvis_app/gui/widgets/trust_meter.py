"""The trust meter's bars: the shown map's insertion and deletion AUC, each beside a random map's, so whether the
map beats chance is seen before any number is read."""

from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

MAP_COLOR = QColor(255, 214, 10)  # the selection yellow: the map's own bar
RANDOM_COLOR = QColor(120, 126, 140)
TEXT_COLOR = QColor(220, 222, 228)
DIM_COLOR = QColor(140, 145, 160)
FLOOR = 0.05  # the bars' full length is at least this probability
ROWS = (("insertion", "insertion", "insertion_random"), ("deletion", "deletion", "deletion_random"))


class TrustMeter(QWidget):
    """Four bars (map and random, for insertion and deletion), scaled to the largest figure or the class's
    probability; `set_figures(None, message)` shows a message instead."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.figures = None  # trust.TrustFigures
        self.message = "turn the heat map on to measure it"
        self.setMinimumHeight(self._bar_h() * 4 + 16)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self._bar_h() * 4 + 16)

    def _bar_h(self) -> int:
        return self.fontMetrics().height() + 2

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        return QSize(320, self._bar_h() * 4 + 16)

    def set_figures(self, figures, message: str = "") -> None:
        self.figures = figures
        self.message = message
        self.setToolTip("" if figures is None else (
            "area under the class probability's curve while the map's pixels are restored over a blurred frame "
            "(insertion: higher is better) or blurred away (deletion: lower is better), most relevant first; the "
            f"grey bars are a random map of the same {figures.cells[0]}x{figures.cells[1]} cells. The class's "
            f"probability on the intact frame: {figures.score:.2f}"))
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        f = self.figures
        if f is None:
            p.setPen(DIM_COLOR)
            font = p.font()
            font.setItalic(True)
            p.setFont(font)
            p.drawText(self.rect().adjusted(4, 0, -4, 0), int(Qt.AlignmentFlag.AlignVCenter
                                                              | Qt.TextFlag.TextWordWrap), self.message)
            p.end()
            return
        fm = self.fontMetrics()
        bar_h = self._bar_h()
        label_w = max(fm.horizontalAdvance(name) for name, *_ in ROWS) + 10
        value_w = fm.horizontalAdvance("0.000") + 8
        room = max(10.0, self.width() - label_w - value_w - 8)
        # a floor: when the class is unlikely on this frame, all four are near zero and the bars say so
        top = max(f.score, f.insertion, f.deletion, f.insertion_random, f.deletion_random, FLOOR)
        y = 4.0
        for name, mine, chance in ROWS:
            p.setPen(TEXT_COLOR)
            p.drawText(QRectF(2, y, label_w, bar_h), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                       name)
            p.setPen(DIM_COLOR)
            p.drawText(QRectF(2, y + bar_h, label_w, bar_h),
                       int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), "random")
            for k, (attr, color) in enumerate(((mine, MAP_COLOR), (chance, RANDOM_COLOR))):
                value = float(getattr(f, attr))
                yy = y + k * bar_h
                w = room * max(0.0, value) / top
                p.fillRect(QRectF(label_w, yy + 2, max(1.0, w), bar_h - 4), color)
                p.setPen(TEXT_COLOR if k == 0 else DIM_COLOR)
                p.drawText(QRectF(label_w + w + 4, yy, value_w, bar_h),
                           int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), f"{value:.2f}")
            y += 2 * bar_h + 4
        p.end()
