"""Unit inspector: the selected unit's activation map, its gradient / deconvnet / guided-backprop images
(live every frame), its top-activating images from a `deepvis scan` store and its optimized image.

Top-k and optimization come from optional modules (deepvis_app.topk, deepvis_app.optimize); they are
imported lazily so the inspector degrades to a labelled placeholder when one is missing.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .canvas import ImageCanvas

BACKPROP_MODES = ("guided", "deconv", "gradient", "all", "off")
BACKPROP_VIEWS = ("raw", "gray", "norm", "normblur")
METHOD_TITLES = {"gradient": "gradient", "deconv": "deconvnet", "guided": "guided backprop"}


def methods_for(mode: str) -> tuple[str, ...]:
    if mode == "all":
        return ("gradient", "deconv", "guided")
    if mode == "off":
        return ()
    return (mode,)


def mosaic(images: list[np.ndarray], cols: int = 3, pad: int = 2, size: int = 96) -> np.ndarray:
    """Tile RGB images (resized to `size`) into one image, for the top-k strip."""
    import cv2

    rows = (len(images) + cols - 1) // cols
    out = np.full((rows * (size + pad) + pad, cols * (size + pad) + pad, 3), 20, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        tile = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        y, x = pad + r * (size + pad), pad + c * (size + pad)
        out[y:y + size, x:x + size] = tile
    return out


def _titled(title: str, canvas: ImageCanvas) -> QWidget:
    box = QWidget()
    lay = QVBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(1)
    label = QLabel(title)
    label.setObjectName("paneTitle")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    lay.addWidget(label)
    lay.addWidget(canvas, 1)
    box.title_label = label  # type: ignore[attr-defined]
    return box


class InspectorPane(QWidget):
    backprop_mode_changed = Signal(str)
    view_changed = Signal(str)
    freeze_unit_toggled = Signal(bool)
    overlay_toggled = Signal(bool)
    optimize_clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspectorPane")
        self.header = QLabel("no unit selected: click a tile")
        self.header.setObjectName("inspectorHeader")
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.header.setTextFormat(Qt.TextFormat.RichText)

        self.mode_box = QComboBox()
        self.mode_box.addItems(BACKPROP_MODES)
        self.mode_box.setToolTip("backprop mode: which methods are computed live (b)")
        self.view_box = QComboBox()
        self.view_box.addItems(BACKPROP_VIEWS)
        self.view_box.setToolTip("backprop view: raw / gray / norm / norm-blur (m)")
        self.overlay_box = QCheckBox("overlay")
        self.overlay_box.setToolTip("draw the activation map over the input frame")
        self.freeze_box = QCheckBox("freeze unit")
        self.freeze_box.setToolTip("keep explaining this unit while browsing other layers")
        self.mode_box.currentTextChanged.connect(self.backprop_mode_changed.emit)
        self.view_box.currentTextChanged.connect(self.view_changed.emit)
        self.overlay_box.toggled.connect(self.overlay_toggled.emit)
        self.freeze_box.toggled.connect(self.freeze_unit_toggled.emit)
        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QLabel("backprop"))
        controls.addWidget(self.mode_box)
        controls.addWidget(self.view_box)
        controls.addWidget(self.overlay_box)
        controls.addWidget(self.freeze_box)
        controls.addStretch(1)

        self.unit_map = ImageCanvas("select a unit", smooth=True)
        self.topk = ImageCanvas("Top-activating images:\nnot available yet")
        self.optimized = ImageCanvas("Optimized image:\nnot available yet", smooth=True)
        self.optimized_hint = "press optimize to synthesize\nthis unit's preferred image"
        self.attr = {m: ImageCanvas("", smooth=True) for m in ("gradient", "deconv", "guided")}
        self.optimize_button = QPushButton("optimize")
        self.optimize_button.setToolTip("synthesize an image that maximizes this unit (runs in the background)")
        self.optimize_button.clicked.connect(self.optimize_clicked.emit)
        self.optimize_button.setEnabled(False)

        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(4)
        self._boxes = {
            "unit_map": _titled("activation map", self.unit_map),
            "topk": _titled("top-activating images", self.topk),
            "optimized": _titled("optimized image", self.optimized),
        }
        grid.addWidget(self._boxes["unit_map"], 0, 0)
        grid.addWidget(self._boxes["topk"], 0, 1)
        opt = self._boxes["optimized"]
        opt.layout().addWidget(self.optimize_button)
        grid.addWidget(opt, 0, 2)
        for i, m in enumerate(("gradient", "deconv", "guided")):
            self._boxes[m] = _titled(METHOD_TITLES[m], self.attr[m])
            grid.addWidget(self._boxes[m], 1, i)
        for c in range(3):
            grid.setColumnStretch(c, 1)
        grid.setRowStretch(0, 1)
        grid.setRowStretch(1, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(3)
        layout.addWidget(self.header)
        layout.addLayout(controls)
        layout.addLayout(grid, 1)
        self.set_methods(methods_for("guided"), available=True)

    def set_modes(self, mode: str, view: str) -> None:
        for box, text in ((self.mode_box, mode), (self.view_box, view)):
            box.blockSignals(True)
            box.setCurrentText(text)
            box.blockSignals(False)

    def set_methods(self, methods: tuple[str, ...], *, available: bool) -> None:
        """Placeholders for methods that are not computed; the computed ones get highlighted titles."""
        for m, canvas in self.attr.items():
            title = self._boxes[m].title_label
            on = m in methods and available
            title.setProperty("active", on)
            title.setStyleSheet("color: #ffd60a; font-weight: bold;" if on else "")
            if not available:
                canvas.clear("attribution not available yet")
            elif not on:
                canvas.clear(f"{METHOD_TITLES[m]}: off\n(b cycles the backprop mode)")
            elif not canvas.has_image:
                canvas.clear("waiting for the next frame...")

    def set_header(self, html: str) -> None:
        self.header.setText(html)

    def set_topk(self, images: list[np.ndarray] | None, message: str) -> None:
        if images:
            self.topk.set_image(mosaic(images))
        else:
            self.topk.clear(message)

    def set_optimized(self, image: np.ndarray | None, message: str, caption: str = "") -> None:
        self.optimized.caption = caption
        if image is not None:
            self.optimized.set_image(image)
        else:
            self.optimized.clear(message)
