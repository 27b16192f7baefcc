"""Widgets of the attention panel: a labelled mosaic of images (one per attention head), a canvas that says where
it was clicked (the rollout: click a patch to look from there), a strip of values (the class token's features),
and a tool panel that also says when it is hidden (so a view is computed only while someone looks at it)."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from .canvas import BG, ImageCanvas
from .images import to_qimage
from .panel import ToolPanel

LABEL_BG = QColor(0, 0, 0, 170)
LABEL_FG = QColor(235, 235, 235)
DIM = QColor(140, 145, 160)
MOSAIC_MARGIN = 3  # px between the heads mosaic and its widget's edges


class WatchedPanel(ToolPanel):
    """A ToolPanel that also emits `hidden` (its dock closed, or another tool's tab raised)."""

    hidden = Signal()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt naming
        super().hideEvent(event)
        self.hidden.emit()


def mosaic_shape(n: int, width: float, height: float, aspect: float = 1.0) -> tuple[int, int, float]:
    """(rows, cols, cell side) that fit `n` cells of width/height `aspect` in a `width` x `height` box largest."""
    best = (1, max(1, n), 0.0)
    for cols in range(1, max(1, n) + 1):
        rows = math.ceil(n / cols)
        side = min(width / cols / aspect, height / rows)
        if side > best[2]:
            best = (rows, cols, side)
    return best


class HeadsView(QWidget):
    """A mosaic of RGB images, each with a label in its top-left corner, laid out to fill the widget."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.placeholder = placeholder
        self._arrays: list[np.ndarray] = []  # keep the QImages' memory alive
        self._images: list[QImage] = []
        self.labels: list[str] = []
        self.short_labels: list[str] = []  # used where a label does not fit its tile
        self.setMinimumSize(80, 60)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        return QSize(320, 220)

    @property
    def count(self) -> int:
        return len(self._images)

    @property
    def arrays(self) -> list[np.ndarray]:
        """The images shown, in order."""
        return list(self._arrays)

    def set_tiles(self, images: list[np.ndarray], labels: list[str], short_labels: list[str] | None = None) -> None:
        self._arrays = [np.ascontiguousarray(a) for a in images]
        self._images = [to_qimage(a) for a in self._arrays]
        self.labels = list(labels)
        self.short_labels = list(short_labels or [])
        self.update()

    def clear(self, placeholder: str | None = None) -> None:
        if placeholder is not None:
            self.placeholder = placeholder
        self.set_tiles([], [])

    def tile_rects(self) -> list[QRectF]:
        """Where each image is drawn (widget coordinates): whole pixels, every tile inside the widget with a
        margin (a last column flush with the edge reads as cut off)."""
        n = len(self._images)
        if not n:
            return []
        gap, margin = 3, MOSAIC_MARGIN
        room_w, room_h = self.width() - 2 * margin, self.height() - 2 * margin
        iw, ih = self._images[0].width(), self._images[0].height()
        aspect = iw / max(1, ih)
        rows, cols, side = mosaic_shape(n, room_w + gap, room_h + gap, aspect)
        w, h = max(1, math.floor(side * aspect - gap)), max(1, math.floor(side - gap))
        x0 = margin + (room_w - (cols * (w + gap) - gap)) // 2
        y0 = margin + (room_h - (rows * (h + gap) - gap)) // 2
        return [QRectF(x0 + (i % cols) * (w + gap), y0 + (i // cols) * (h + gap), w, h) for i in range(n)]

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        p.fillRect(self.rect(), BG)
        if not self._images:
            p.setPen(DIM)
            p.drawText(self.rect().adjusted(4, 4, -4, -4), int(Qt.AlignmentFlag.AlignCenter
                                                               | Qt.TextFlag.TextWordWrap), self.placeholder)
            p.end()
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        font = p.font()
        font.setPointSizeF(max(6.5, font.pointSizeF() * 0.85))
        p.setFont(font)
        fm = p.fontMetrics()
        for i, (rect, image, label) in enumerate(zip(self.tile_rects(), self._images, self.labels, strict=False)):
            p.drawImage(rect, image)
            if fm.horizontalAdvance(label) + 10 > rect.width() and i < len(self.short_labels):
                label = self.short_labels[i]
                if fm.horizontalAdvance(label) + 10 > rect.width():  # a tiny tile: its number ("7: 0.009" -> "7")
                    label = label.split(":")[0]
            if label:
                text = fm.elidedText(label, Qt.TextElideMode.ElideRight, int(rect.width()) - 6)
                box = QRectF(rect.left() + 2, rect.top() + 2, fm.horizontalAdvance(text) + 6, fm.height() + 2)
                p.fillRect(box, LABEL_BG)
                p.setPen(LABEL_FG)
                p.drawText(box, int(Qt.AlignmentFlag.AlignCenter), text)
        p.end()


class ClickCanvas(ImageCanvas):
    """An ImageCanvas that emits `clicked(fx, fy)`: where the image was clicked, in 0..1 of its width and
    height (clicks beside the image are ignored)."""

    clicked = Signal(float, float)

    def __init__(self, placeholder: str = "", **kw) -> None:
        super().__init__(placeholder, **kw)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt naming
        rect = self.image_rect()
        pos = event.position()
        if event.button() != Qt.MouseButton.LeftButton or rect.isEmpty() or not rect.contains(pos):
            super().mousePressEvent(event)
            return
        self.clicked.emit((pos.x() - rect.left()) / rect.width(), (pos.y() - rect.top()) / rect.height())

    def point_at(self, fx: float, fy: float) -> QPointF:
        """The widget point of image fractions (fx, fy) (for tests and markers)."""
        rect = self.image_rect()
        return QPointF(rect.left() + fx * rect.width(), rect.top() + fy * rect.height())


class ValueStrip(QWidget):
    """Rows of values (e.g. the class token's features), each drawn as a colour strip: zero white, positive red,
    negative blue, scaled to the largest |value| of all rows; a title line above and the range below. Hovering
    says the feature's index and value."""

    def __init__(self, lut: np.ndarray, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lut = np.ascontiguousarray(lut, np.uint8)  # 256 x 3, diverging: entry 128 is zero
        self.values: np.ndarray | None = None  # rows x C float32
        self.names: list[str] = []
        self.title = ""
        self.note = ""
        self._strip: np.ndarray | None = None
        self._image: QImage | None = None
        self.scale = 0.0
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._fit()

    def _row_h(self) -> int:
        return max(10, self.fontMetrics().height())

    def _fit(self) -> None:
        rows = 0 if self.values is None else self.values.shape[0]
        self.setFixedHeight(self.fontMetrics().height() * 2 + 6 + rows * (self._row_h() + 2))

    def set_rows(self, values: np.ndarray | None, names: list[str], title: str, note: str = "") -> None:
        """`values` rows x C (None: show only `title` and `note`)."""
        old_rows = None if self.values is None else self.values.shape[0]
        self.title, self.note, self.names = title, note, list(names)
        if values is None or values.size == 0:
            self.values = self._strip = self._image = None
        else:
            v = np.asarray(values, np.float32).reshape(len(values), -1)
            self.values = v
            self.scale = float(np.abs(v).max()) if np.isfinite(v).all() else 0.0
            idx = np.clip(np.round(128 + 127 * v / max(self.scale, 1e-12)), 0, 255).astype(np.uint8)
            self._strip = np.ascontiguousarray(self.lut[idx])  # rows x C x 3
            self._image = to_qimage(self._strip)
        if (None if self.values is None else self.values.shape[0]) != old_rows:
            self._fit()
        self.update()

    def _strip_rect(self) -> QRectF:
        fm = self.fontMetrics()
        label_w = max((fm.horizontalAdvance(n) for n in self.names), default=0) + 8
        rows = 0 if self.values is None else self.values.shape[0]
        top = fm.height() + 3
        return QRectF(label_w, top, max(10.0, self.width() - label_w - 4), rows * (self._row_h() + 2))

    def feature_at(self, x: float, y: float) -> tuple[int, int] | None:
        """(row, feature) under widget point (x, y)."""
        if self.values is None:
            return None
        rect = self._strip_rect()
        if not rect.contains(QPointF(x, y)):
            return None
        row = int((y - rect.top()) // (self._row_h() + 2))
        col = int((x - rect.left()) / rect.width() * self.values.shape[1])
        if 0 <= row < self.values.shape[0] and 0 <= col < self.values.shape[1]:
            return row, col
        return None

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - Qt naming
        hit = self.feature_at(event.position().x(), event.position().y())
        if hit is None:
            self.setToolTip(self.note)
        else:
            row, col = hit
            name = self.names[row] if row < len(self.names) else f"token {row}"
            self.setToolTip(f"{name}, feature {col}: {self.values[row, col]:.4g}")
        super().mouseMoveEvent(event)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        fm = self.fontMetrics()
        p.setPen(QColor(220, 222, 228))
        p.drawText(QRectF(2, 0, self.width() - 4, fm.height() + 2),
                   int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                   fm.elidedText(self.title, Qt.TextElideMode.ElideRight, self.width() - 4))
        rect = self._strip_rect()
        if self.values is not None and self._image is not None:
            rh = self._row_h()
            for r in range(self.values.shape[0]):
                y = rect.top() + r * (rh + 2)
                p.setPen(DIM)
                p.drawText(QRectF(2, y, rect.left() - 4, rh), int(Qt.AlignmentFlag.AlignLeft
                                                                  | Qt.AlignmentFlag.AlignVCenter),
                           self.names[r] if r < len(self.names) else "")
                p.drawImage(QRectF(rect.left(), y, rect.width(), rh), self._image,
                            QRectF(0, r, self.values.shape[1], 1))
        if self.note:
            p.setPen(DIM)
            p.drawText(QRectF(2, rect.bottom() + 2, self.width() - 4, fm.height() + 2),
                       int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                       fm.elidedText(self.note, Qt.TextElideMode.ElideRight, self.width() - 4))
        p.end()
