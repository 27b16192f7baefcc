"""Predictions pane: top-5 classes with probability bars, and the top classes' probabilities over time.
Clicking a class row asks for that class's optimized image (`class_clicked`).

The history plot fits its height: the y axis gets only as many labels as fit without touching (0 / 0.5 / 1 on
a short plot), a short plot drops its "seconds" title, and a pane too low for a readable plot hides it (the
top 5 rows keep the room) rather than showing a bare x axis."""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

HISTORY_SECONDS = 15.0
HELD_TEXT = "held while the pointer is here"
HELD_COLOR = QColor(255, 159, 10)
HELD_BG = QColor(30, 24, 14)
PLOT_MIN_DATA_H = 36  # px of plot area (between the axes) below which the plot is hidden
PLOT_TITLE_MIN_H = 110  # a plot lower than this drops the x axis title ("seconds"; its tooltip still says it)
Y_STEPS = (0.2, 0.5, 1.0)  # y label spacings, densest first (each label fits the 30 px axis)
COLORS = [QColor(255, 214, 10), QColor(90, 200, 250), QColor(255, 105, 97), QColor(120, 220, 120),
          QColor(200, 150, 255)]


class Bars(QWidget):
    """Top-k rows: a filled bar proportional to the probability, the class name and the percentage."""

    class_clicked = Signal(int, str)  # (class index, name)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("click a class: explain its unit and synthesize its optimized image")
        self.rows: list[tuple[int, str, float]] = []
        self.colors: dict[int, QColor] = {}
        self.hovered = False  # while the pointer is over the rows their order is held (clicks land where aimed)
        self.painted_rows: list[tuple[int, str, float]] = []  # the rows on screen: what a click acts on
        self.held = False  # the rows on screen are held (the newest frame's top 5 differ)
        self.note = ""  # drawn in orange over the bars: e.g. "[intervened: ...]" (not the real network's top 5)
        self.setMouseTracking(True)
        # a click takes the keyboard focus from a text field (a class search box), so the window's keys (q,
        # arrows, ...) work again after choosing a class here
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.setMinimumHeight(5 * 18)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(260, 5 * 22)

    def set_rows(self, rows: list[tuple[int, str, float]], colors: dict[int, QColor]) -> None:
        """New top-k rows; while hovered, the classes keep their rows (probabilities still update; a class that
        left the top-k shows its last value, dimmed) so a click lands on the class the user aimed at."""
        held = False
        if self.hovered and self.rows:
            latest = {i: (n, p) for i, n, p in rows}
            order = [i for i, _n, _p in rows]
            kept = [(i, latest.get(i, (n, p))[0], latest[i][1] if i in latest else -abs(p)) for i, n, p in self.rows]
            held = [i for i, _n, _p in kept] != order
            rows = kept
        self.rows, self.colors, self.held = rows, colors, held
        self.update()

    def enterEvent(self, event) -> None:  # noqa: N802
        self.hovered = True
        self.setToolTip("the rows keep their order while the pointer is here (probabilities still update; "
                        "dimmed: out of the newest top 5). Click a class: its unit and optimized image")
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered = False
        self.held = False
        super().leaveEvent(event)
        self.update()

    def row_at(self, y: float) -> int | None:
        """The row index under widget y in the rows on screen, or None below the last row."""
        rows = self.painted_rows
        if not rows:
            return None
        top = self.note_height()
        i = int((y - top) // ((self.height() - top) / max(5, len(rows)))) if y >= top else -1
        return i if 0 <= i < len(rows) else None

    def note_height(self) -> int:
        """The line the note takes above the rows (0 without a note): the rows never sit under it."""
        if not self.note:
            return 0
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
        from PySide6.QtGui import QFontMetrics

        return QFontMetrics(small).height() + 2

    def row_center(self, i: int) -> tuple[int, int]:
        """(x, y) of row i's centre in widget coordinates (for tests and scripted clicks)."""
        top = self.note_height()
        h = (self.height() - top) / max(5, len(self.painted_rows or self.rows))
        return self.width() // 2, int(top + (i + 0.5) * h)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        # the row the user saw: newer rows may have arrived since the last paint (they are drawn on the next one)
        i = self.row_at(event.position().y())
        if event.button() == Qt.MouseButton.LeftButton and i is not None:
            idx, name, _p = self.painted_rows[i]
            self.class_clicked.emit(idx, name)
            event.accept()
            return
        super().mousePressEvent(event)

    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(14, 15, 19) if not self.held else HELD_BG)
        self.painted_rows = list(self.rows)
        if not self.rows:
            p.setPen(QColor(140, 145, 160))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no predictions yet")
            p.end()
            return
        n = max(5, len(self.rows))
        top = self.note_height()
        h = (self.height() - top) / n
        f = QFont(self.font())
        p.setFont(f)
        for i, (idx, name, prob) in enumerate(self.rows):
            y = top + i * h
            stale = prob < 0  # held under the pointer but out of the newest top-k: its last value, dimmed
            prob = abs(prob)
            color = self.colors.get(idx, QColor(150, 150, 150)) if not stale else QColor(90, 90, 90)
            bar = QColor(color)
            bar.setAlpha(110)
            p.fillRect(QRectF(0, y + 2, max(2.0, self.width() * prob), h - 4), bar)
            p.setPen(QColor(240, 240, 240))
            text_rect = QRectF(6, y, self.width() - 64, h)
            p.drawText(text_rect, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       p.fontMetrics().elidedText(f"{name}", Qt.TextElideMode.ElideRight, int(text_rect.width())))
            p.drawText(QRectF(self.width() - 60, y, 56, h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight,
                       f"{prob * 100:.1f}%")
        if self.held:
            self._paint_held(p)
        if self.note:
            small = QFont(self.font())
            small.setPointSizeF(max(7.0, small.pointSizeF() * 0.85))
            p.setFont(small)
            p.setPen(QColor(255, 160, 60))
            note_rect = QRectF(6, 0, self.width() - 12, top)
            p.drawText(note_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                       p.fontMetrics().elidedText(self.note, Qt.TextElideMode.ElideMiddle, int(note_rect.width())))
        p.end()

    def held_rect(self) -> QRectF:
        """Where the "held" badge is drawn (bottom right, over the last row's bar)."""
        f = QFont(self.font())
        f.setPointSizeF(max(7.0, f.pointSizeF() * 0.85))
        from PySide6.QtGui import QFontMetrics

        w = QFontMetrics(f).horizontalAdvance(HELD_TEXT) + 10
        h = QFontMetrics(f).height() + 2
        return QRectF(max(0.0, self.width() - 64 - w), self.height() - h - 1, w, h)

    def _paint_held(self, p: QPainter) -> None:
        """The rows stay where they were while the pointer is over them: say so (the newest frame's order differs)."""
        f = QFont(self.font())
        f.setPointSizeF(max(7.0, f.pointSizeF() * 0.85))
        p.setFont(f)
        rect = self.held_rect()
        p.fillRect(rect, HELD_COLOR)
        p.setPen(QColor(20, 20, 20))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, HELD_TEXT)


class PredictionsPane(QWidget):
    class_clicked = Signal(int, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("predictionsPane")
        self.bars = Bars()
        self.bars.class_clicked.connect(self.class_clicked.emit)
        self.plot = pg.PlotWidget(background=QColor(14, 15, 19))
        self.plot.setMinimumHeight(24)  # the plot gives way first: the top-5 rows stay readable
        self.plot.setYRange(0, 1, padding=0.02)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.getAxis("left").setWidth(30)
        self.plot.getAxis("bottom").setLabel("seconds")
        self.plot.setToolTip("probabilities of the top 3 classes over the last 15 seconds")
        self.plot.showGrid(x=False, y=True, alpha=0.2)
        self.plot.installEventFilter(self)  # its y labels follow its height
        self.y_ticks: list[float] = []  # the y axis labels shown now
        self.y_pad = 0.02  # the y range is -y_pad .. 1 + y_pad
        self.x_titled = True  # the x axis says "seconds"
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.bars)
        layout.addWidget(self.plot, 1)
        self._layout = layout
        self.history: deque[tuple[float, dict[int, float]]] = deque()
        self._curves: dict[int, pg.PlotDataItem] = {}
        self._names: dict[int, str] = {}
        self.rows: list[tuple[int, str, float]] = []

    # -- fitting the plot to its height
    def _axis_h(self, titled: bool) -> int:
        """The x axis' height under the plot area (tick labels, and the title when shown)."""
        return QFontMetrics(self.plot.font()).height() * (2 if titled else 1) + 12

    def plot_room(self) -> int:
        """The height the plot widget gets when shown: what the bars (at their preferred height) leave."""
        m = self._layout.contentsMargins()
        return self.height() - m.top() - m.bottom() - self._layout.spacing() - self.bars.sizeHint().height()

    def fit_plot(self) -> None:
        """Show the plot only when its area between the axes would be readable; else the rows take the room."""
        room = self.plot_room()
        show = room - self._axis_h(False) >= PLOT_MIN_DATA_H
        if show != self.plot.isVisibleTo(self):
            self.plot.setVisible(show)

    def fit_ticks(self, height: int) -> None:
        """As many y labels (0 .. 1) as fit in `height` px of plot without touching, 0 and 1 included (the range
        gets half a label of room at both ends: pyqtgraph drops a label that sticks out); the x title when roomy."""
        titled = height >= PLOT_TITLE_MIN_H
        if titled != self.x_titled:
            self.x_titled = titled
            self.plot.getAxis("bottom").showLabel(titled)
        text_h = QFontMetrics(self.plot.font()).height()
        half = 0.4 * text_h + 1  # pyqtgraph's label box is 0.8 of the text's height
        per_unit = max(1.0, height - self._axis_h(titled) - 2 * half)  # px from 0 to 1
        step = next((s for s in Y_STEPS if per_unit * s >= 1.5 * text_h), 1.0)
        ticks = [round(k * step, 2) for k in range(int(round(1 / step)) + 1)]
        pad = half / per_unit
        if ticks != self.y_ticks or abs(pad - self.y_pad) > 1e-3:
            self.y_ticks, self.y_pad = ticks, pad
            self.plot.getAxis("left").setTicks([[(v, f"{v:g}") for v in ticks], []])
            self.plot.setYRange(-pad, 1 + pad, padding=0)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().resizeEvent(event)
        self.fit_plot()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt naming
        if obj is self.plot and event.type() == QEvent.Type.Resize:
            self.fit_ticks(self.plot.height())
        return False

    @property
    def curves(self) -> dict[int, pg.PlotDataItem]:
        """The history plot's curve of each class drawn now (the top three rows at the last redraw)."""
        return dict(self._curves)

    def clear(self) -> None:
        self.history.clear()
        for curve in self._curves.values():
            self.plot.removeItem(curve)
        self._curves.clear()
        self.rows = []
        self.bars.set_rows([], {})

    def set_note(self, text: str) -> None:
        """A one-line note over the bars (e.g. the active interventions); "" hides it."""
        if self.bars.note != text:
            self.bars.note = text
            self.bars.setToolTip(text)
            self.bars.update()

    def add(self, predictions: list[tuple[int, str, float]], t: float | None = None) -> None:
        """Record one result's top-k (cheap); the plot is redrawn by `refresh` at display rate."""
        t = time.perf_counter() if t is None else t
        self.rows = predictions
        self.history.append((t, {i: p for i, _n, p in predictions}))
        for i, n, _p in predictions:
            self._names[i] = n
        while self.history and t - self.history[0][0] > HISTORY_SECONDS:
            self.history.popleft()

    def refresh(self, curves: bool = True) -> None:
        """Redraw the bars from the newest rows and, with `curves`, the history plot (the costlier part: ~3 ms of
        the GUI thread through pyqtgraph, so the live view redraws it less often than the bars)."""
        top = [i for i, _n, _p in self.rows[:3]]
        colors = {i: COLORS[k] for k, i in enumerate(i for i, _n, _p in self.rows)}
        self.bars.set_rows(self.rows, colors)
        if not self.history or not curves:
            return
        now = self.history[-1][0]
        ts = np.array([t - now for t, _ in self.history])
        # sparse history (a slow model or a busy CPU): dots as well, so lone points between gaps still show
        sparse = len(ts) < 3 or float(np.mean(np.diff(ts))) > 0.4
        for idx in list(self._curves):
            if idx not in top:
                self.plot.removeItem(self._curves.pop(idx))
        for idx in top:
            ys = np.array([probs.get(idx, np.nan) for _, probs in self.history], dtype=float)
            curve = self._curves.get(idx)
            if curve is None:
                curve = self.plot.plot(name=self._names.get(idx, str(idx)))
                self._curves[idx] = curve
            if pg.mkPen(curve.opts["pen"]).color() != colors[idx]:  # a new pen re-renders the curve: on a change
                curve.setPen(pg.mkPen(colors[idx], width=2))
            if sparse:
                curve.setData(ts, ys, connect="finite", symbol="o", symbolSize=5, symbolBrush=colors[idx],
                              symbolPen=None)
            else:
                curve.setData(ts, ys, connect="finite", symbol=None)
        self.plot.setXRange(-HISTORY_SECONDS, 0, padding=0)
