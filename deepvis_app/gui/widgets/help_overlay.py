"""The help overlay: a translucent panel over the window listing the shortcuts it is given; a click closes it."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter
from PySide6.QtWidgets import QWidget


class HelpOverlay(QWidget):
    """A translucent panel over the whole window; any key or click closes it."""

    def __init__(self, parent: QWidget, shortcuts: list[tuple[str, str]] | None = None) -> None:
        super().__init__(parent)
        self.shortcuts: list[tuple[str, str]] = list(shortcuts or [])
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, False)
        self.hide()

    def toggle(self) -> None:
        if self.isVisible():
            self.hide()
        else:
            self.setGeometry(self.parentWidget().rect())
            self.raise_()
            self.show()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self.hide()
        event.accept()

    def paintEvent(self, _event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0, 190))
        title = QFont(self.font())
        title.setPointSizeF(title.pointSizeF() * 1.6)
        title.setBold(True)
        body = QFont(self.font())
        body.setPointSizeF(body.pointSizeF() * 1.15)
        p.setFont(body)
        line = p.fontMetrics().height() * 1.45
        key_w = 130
        desc_w = min(640, self.width() - key_w - 40)
        wrap = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter | Qt.TextFlag.TextWordWrap
        # a long description takes more lines rather than running off the panel
        heights = [max(line, p.fontMetrics().boundingRect(QRectF(0, 0, desc_w, 1000).toRect(), wrap,
                                                          desc).height() + line * 0.45)
                   for _keys, desc in self.shortcuts]
        h = sum(heights) + line * 2.5
        x0 = max(10, (self.width() - key_w - desc_w) / 2)
        y0 = max(10, (self.height() - h) / 2)
        p.fillRect(QRectF(x0 - 20, y0 - 16, key_w + desc_w + 40, h + 24), QColor(28, 30, 38, 235))
        p.setFont(title)
        p.setPen(QColor(255, 214, 10))
        p.drawText(QRectF(x0, y0, key_w + desc_w, line * 1.5), Qt.AlignmentFlag.AlignLeft, "DeepVis shortcuts")
        p.setFont(body)
        y = y0 + line * 1.8
        for (keys, desc), row_h in zip(self.shortcuts, heights, strict=True):
            p.setPen(QColor(255, 214, 10))
            p.drawText(QRectF(x0, y, key_w, row_h), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, keys)
            p.setPen(QColor(235, 235, 235))
            p.drawText(QRectF(x0 + key_w, y, desc_w, row_h), wrap, desc)
            y += row_h
        p.end()
