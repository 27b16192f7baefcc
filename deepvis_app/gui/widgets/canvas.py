"""A light image widget: paints a borrowed-memory QImage scaled to fit (aspect kept), with overlay text.

Cheaper than a QGraphicsView for images that only need showing; the grid (zoom/pan) uses pyqtgraph instead.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from .images import indexed_qimage, to_qimage
from .scaled import ScreenCache, bgra_lut

BG = QColor(14, 15, 19)
BOX_COLOR = QColor(255, 214, 10)  # receptive-field boxes (the grid's selection colour)
PLACEHOLDER_FLAGS = int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap)


class ImageCanvas(QWidget):
    """Shows one uint8 image (HxW with a LUT, or HxWx3) or, when empty, a centred placeholder message."""

    def __init__(self, placeholder: str = "", *, smooth: bool = False, min_size: int = 64,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._array: np.ndarray | None = None  # keeps the QImage's memory alive
        self._image: QImage | None = None
        self._lut: np.ndarray | None = None  # the array's colours (`scaled.bgra_lut`) when it holds indices
        self._lut_of: np.ndarray | None = None  # the RGB table `_lut` was made from
        self._screen = ScreenCache()  # the image at its drawn size: painting is a blit (`scaled`)
        self._badges: dict[tuple, tuple[QRectF, QFont, int]] = {}  # badge_layout's last results
        self.placeholder = placeholder
        self.caption = ""  # small text drawn over the image's top-left corner
        self.footer = ""  # small text at the bottom-left
        self.smooth = smooth
        self.outline: QColor | None = None
        self.marker: tuple[float, float] | None = None  # (x, y) in 0..1 image coords: a ring is drawn there
        self.box: tuple[int, int, int, int] | None = None  # (top, left, bottom, right) in image pixels
        self.setMinimumSize(min_size, min_size)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        return QSize(224, 224)

    @property
    def has_image(self) -> bool:
        return self._image is not None

    @property
    def array(self) -> np.ndarray | None:
        return self._array

    def set_image(self, arr: np.ndarray | None, lut: np.ndarray | None = None) -> None:
        if arr is None:
            self._array = self._image = self._lut = self._lut_of = None
            self._screen.clear()
        else:
            arr = np.ascontiguousarray(arr)
            self._array = arr
            indexed = lut is not None and arr.ndim == 2
            self._image = indexed_qimage(arr, lut) if indexed else to_qimage(arr)
            if not indexed:
                self._lut = self._lut_of = None
            elif lut is not self._lut_of:  # the same colour map frame after frame: its table is made once
                self._lut, self._lut_of = bgra_lut(lut), lut
        self.update()

    def clear(self, placeholder: str | None = None) -> None:
        if placeholder is not None:
            self.placeholder = placeholder
        self.set_image(None)

    def image_rect(self) -> QRectF:
        """Where the image is drawn inside the widget (aspect-preserving fit)."""
        if self._image is None:
            return QRectF()
        iw, ih = self._image.width(), self._image.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def box_rect(self) -> QRectF:
        """The receptive-field box in widget coordinates, clipped to the drawn image (empty when none)."""
        if self._image is None or self.box is None:
            return QRectF()
        rect = self.image_rect()
        sx, sy = rect.width() / self._image.width(), rect.height() / self._image.height()
        top, left, bottom, right = self.box
        box = QRectF(rect.left() + left * sx, rect.top() + top * sy, (right - left) * sx, (bottom - top) * sy)
        return box.intersected(rect)

    def _paint_box(self, p: QPainter, rect: QRectF) -> None:
        """Dim the image outside the box (where the unit could not look), then outline the box."""
        box = self.box_rect()
        if box.isEmpty():
            return
        shade = QColor(0, 0, 0, 110)
        p.fillRect(QRectF(rect.left(), rect.top(), rect.width(), box.top() - rect.top()), shade)
        p.fillRect(QRectF(rect.left(), box.bottom(), rect.width(), rect.bottom() - box.bottom()), shade)
        p.fillRect(QRectF(rect.left(), box.top(), box.left() - rect.left(), box.height()), shade)
        p.fillRect(QRectF(box.right(), box.top(), rect.right() - box.right(), box.height()), shade)
        inner = box.adjusted(1.5, 1.5, -1.5, -1.5)
        p.setPen(QPen(QColor(0, 0, 0), 5))
        p.drawRect(inner)
        p.setPen(QPen(BOX_COLOR, 2.5))
        p.drawRect(inner)

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        p = QPainter(self)
        p.fillRect(self.rect(), BG)
        if self._image is not None:
            rect = self.image_rect()
            at = rect.toRect()  # whole pixels: the image made at this size is copied, not sampled
            p.drawImage(at.topLeft(), self._screen.image(self._array, (at.width(), at.height()), lut=self._lut,
                                                         smooth=self.smooth))
            if self.marker is not None:
                mx = rect.left() + self.marker[0] * rect.width()
                my = rect.top() + self.marker[1] * rect.height()
                r = max(4.0, rect.width() / 40)
                p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
                for color, width in ((QColor(0, 0, 0, 200), 3.5), (QColor(120, 220, 255), 1.5)):
                    p.setPen(QPen(color, width))
                    p.drawEllipse(QPointF(mx, my), r, r)
            if self.box is not None:
                self._paint_box(p, rect)
            if self.outline is not None:
                p.setPen(QPen(self.outline, 2))
                p.drawRect(rect.adjusted(1, 1, -1, -1))
        elif self.placeholder:
            p.setPen(QColor(140, 145, 160))
            font, text = self.placeholder_layout()
            p.setFont(font)
            p.drawText(self.rect().adjusted(4, 4, -4, -4), PLACEHOLDER_FLAGS, text)
        for text, top in ((self.caption, True), (self.footer, False)):
            if not text or self._image is None:
                continue
            box, font, flags = self.badge_layout(text, top)
            p.setFont(font)
            p.fillRect(box, QColor(0, 0, 0, 160))
            p.setPen(QColor(235, 235, 235))
            p.drawText(box, flags, text)
        p.end()

    def placeholder_layout(self) -> tuple[QFont, str]:
        """The placeholder's font and text: smaller type in a small canvas, and only its first line (ending in
        an ellipsis) when even that does not fit, so the message is never cut through its letters."""
        from PySide6.QtGui import QFontMetricsF

        room = QRectF(self.rect().adjusted(4, 4, -4, -4))
        font = QFont(self.font())
        font.setItalic(True)
        size = font.pointSizeF()
        text = self.placeholder
        while True:
            fm = QFontMetricsF(font)
            br = fm.boundingRect(room, PLACEHOLDER_FLAGS, text)
            if br.height() <= room.height() + 0.5 and br.width() <= room.width() + 0.5:
                return font, text
            if size <= 6.5:
                break
            size -= 0.5
            font.setPointSizeF(size)
        first = text.split("\n")[0]
        return font, QFontMetricsF(font).elidedText(first, Qt.TextElideMode.ElideRight, room.width())

    def badge_layout(self, text: str, top: bool = True) -> tuple[QRectF, QFont, int]:
        """Where a caption (top) or footer badge goes, in which font: the whole text inside the widget (a narrow
        canvas gets a smaller font, then a second line), never cut at the widget's edge ("step 10/6"). The last
        few layouts are kept: every live frame repaints the same captions at the same size."""
        rect = self.image_rect() if self._image is not None else QRectF(self.rect())
        key = (text, top, self.width(), self.height(), rect.getRect(), self.font().toString())
        hit = self._badges.get(key)
        if hit is None:
            if len(self._badges) >= 8:
                self._badges.clear()
            hit = self._badges[key] = self._badge_layout(text, top, rect)
        return QRectF(hit[0]), QFont(hit[1]), hit[2]

    def _badge_layout(self, text: str, top: bool, rect: QRectF) -> tuple[QRectF, QFont, int]:
        from PySide6.QtGui import QFontMetricsF

        room = max(10.0, self.width() - 4.0)
        font = QFont(self.font())
        size = max(7.0, font.pointSizeF() * 0.9)
        font.setPointSizeF(size)
        while QFontMetricsF(font).horizontalAdvance(text) + 10 > room and size > 6.5:
            size -= 0.5
            font.setPointSizeF(size)
        fm = QFontMetricsF(font)
        flags = int(Qt.AlignmentFlag.AlignCenter)
        if fm.horizontalAdvance(text) + 10 <= room:
            w, h = fm.horizontalAdvance(text) + 10, fm.height() + 4
        else:
            flags |= int(Qt.TextFlag.TextWordWrap)
            br = fm.boundingRect(QRectF(0, 0, room - 10, 1000), flags, text)
            w, h = room, br.height() + 4
        x = min(max(2.0, rect.left() + 4), self.width() - 2.0 - w)
        y = rect.top() + 4 if top else rect.bottom() - h - 2
        y = min(max(0.0, y), max(0.0, self.height() - h))
        return QRectF(max(0.0, x), y, w, h), font, flags
