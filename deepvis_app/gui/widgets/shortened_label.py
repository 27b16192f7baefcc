"""An `ElidedLabel` shortened where its text says least: in the middle (a grid footer keeps the layer's title and
"208 units"), or at the start (a file name keeps its name and extension: "...chelsea.png")."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QWidget

from .elided_label import ElidedLabel


class ShortenedLabel(ElidedLabel):
    def __init__(self, text: str = "", parent: QWidget | None = None,
                 mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle) -> None:
        super().__init__(text, parent)
        self.mode = mode

    def shown_text(self) -> str:
        return self.fontMetrics().elidedText(self.text(), self.mode, self.contentsRect().width())
