"""Input pane: the frame exactly as the network saw it (after crop/resize), with an fps overlay."""

from __future__ import annotations

from PySide6.QtWidgets import QVBoxLayout, QWidget

from .canvas import ImageCanvas


class InputPane(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inputPane")
        self.canvas = ImageCanvas("waiting for the first frame...", smooth=True, min_size=160)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.canvas)
        self.frame_id: int | None = None

    def show_frame(self, image, frame_id: int, caption: str, footer: str = "") -> None:
        self.frame_id = frame_id
        self.canvas.caption = caption
        self.canvas.footer = footer
        self.canvas.set_image(image)

    def set_caption(self, caption: str, footer: str | None = None) -> None:
        self.canvas.caption = caption
        if footer is not None:
            self.canvas.footer = footer
        self.canvas.update()
