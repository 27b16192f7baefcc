"""pyqtgraph's ImageItem painted as a copy: the visible part of the image made at screen resolution by OpenCV with
the GIL released (`scaled.warp_window`), then blitted. pyqtgraph's own paint samples the scaled indexed image in
Qt's raster engine while PySide holds the GIL -- the largest single draw of a live frame (the activation grid).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QRectF

from .scaled import bgra_lut, rgb32, warp_window


class ScreenImageItem(pg.ImageItem):
    """An ImageItem for uint8 images shown with levels (0, 255): grey indices through a 256-entry RGB lookup table,
    or RGB. Anything else (other levels, a rotated view, a composition mode, a border, a HiDPI screen) is painted
    by pyqtgraph as before."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._key: tuple | None = None
        self._held: tuple = ()  # the image and table the key names: alive, so their ids are not reused
        self._bgra: np.ndarray | None = None
        self.copied = 0  # paints done as a copy (tests)

    def _coloured(self, img: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
        """The whole image as B, G, R, 255 (remade when the image or the table changed)."""
        key = (id(img), id(lut))
        if key != self._key or self._bgra is None:
            if img.ndim == 2:
                self._bgra = cv2.LUT(cv2.cvtColor(img, cv2.COLOR_GRAY2BGRA), bgra_lut(lut))
            else:
                self._bgra = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGRA)
            self._key, self._held = key, (img, lut)
        return self._bgra

    def _copyable(self, painter) -> tuple[bool, np.ndarray | None]:
        """(whether this paint can be a copy, the lookup table of a grey image or None for RGB)."""
        img, lut = self.image, self.lut
        if img is None or img.dtype != np.uint8 or self.axisOrder != "row-major" or self.paintMode is not None \
                or self.border is not None or painter.worldTransform().isRotating():
            return False, None
        levels = self.getLevels()
        if levels is None or np.ndim(levels) != 1 or tuple(float(v) for v in levels) != (0.0, 255.0):
            return False, None
        device = painter.device()
        if device is None or device.devicePixelRatioF() != 1.0:
            return False, None
        if img.ndim == 2:
            ok = isinstance(lut, np.ndarray) and lut.shape == (256, 3) and lut.dtype == np.uint8
            return ok, lut if ok else None
        return img.ndim == 3 and img.shape[2] == 3, None

    def paint(self, painter, *args) -> None:
        ok, lut = self._copyable(painter)
        if not ok:
            super().paint(painter, *args)
            return
        img = self.image
        h, w = img.shape[:2]
        t = painter.worldTransform()
        sx, sy, tx, ty = t.m11(), t.m22(), t.dx(), t.dy()
        if sx == 0 or sy == 0:
            return
        target = t.mapRect(QRectF(0, 0, w, h))
        device = painter.device()
        # the screen pixels whose centres fall on the image, inside the device
        x0, x1 = max(0, math.ceil(target.left() - 0.5)), min(device.width(), math.ceil(target.right() - 0.5))
        y0, y1 = max(0, math.ceil(target.top() - 0.5)), min(device.height(), math.ceil(target.bottom() - 0.5))
        if x1 <= x0 or y1 <= y0:
            return
        shown = warp_window(self._coloured(img, lut), (sx, sy), (tx, ty), (x0, y0, x1, y1))
        painter.save()
        painter.resetTransform()
        painter.drawImage(QPoint(x0, y0), rgb32(shown))
        painter.restore()
        self.copied += 1
