"""A thin colour bar: the colour table the grid (or a map) is drawn with, and what its ends mean. Set every frame:
repainted only when its table or labels change, and alone (`opaque`)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from .opaque import make_opaque, paint_background


class ColorBar(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lut: np.ndarray | None = None
        self.labels: tuple[str, ...] = ()
        self._lut_of: np.ndarray | None = None  # the table `lut` was made from
        make_opaque(self)
        self.setMinimumWidth(90)
        self.setMaximumWidth(220)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().height() + 10)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        return QSize(170, self.fontMetrics().height() + 10)

    def set_scale(self, lut: np.ndarray, labels: tuple[str, ...], tip: str = "") -> None:
        """`lut`: 256x3 (entry 0 is the grid border, 1..255 the scale); `labels` spread from left to right."""
        if lut is self._lut_of and labels == self.labels and tip == self.toolTip():
            return
        self.lut, self._lut_of = np.ascontiguousarray(lut[1:] if len(lut) == 256 else lut, np.uint8), lut
        self.labels = labels
        self.setToolTip(tip)
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        paint_background(self, p)
        if self.lut is None:
            p.end()
            return
        strip = np.ascontiguousarray(self.lut[None, :, :])
        img = QImage(strip.data, strip.shape[1], 1, strip.strides[0], QImage.Format.Format_RGB888)
        bar = QRectF(0, 0, self.width(), 5)
        p.drawImage(bar, img)
        p.setPen(QColor(200, 200, 210))
        n = len(self.labels)
        for i, text in enumerate(self.labels):
            align = (Qt.AlignmentFlag.AlignLeft if i == 0 else Qt.AlignmentFlag.AlignRight if i == n - 1
                     else Qt.AlignmentFlag.AlignHCenter)
            x = 0 if n == 1 else i / (n - 1) * self.width()
            rect = QRectF(x - (0 if i == 0 else self.width() if i == n - 1 else 40), 5,
                          self.width() if i in (0, n - 1) else 80, self.height() - 5)
            p.drawText(rect, align | Qt.AlignmentFlag.AlignTop, text)
        p.end()
