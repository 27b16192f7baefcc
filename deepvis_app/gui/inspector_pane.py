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
from .topk_panel import TopKPanel

BACKPROP_MODES = ("guided", "deconv", "gradient", "all", "off")
BACKPROP_VIEWS = ("raw", "gray", "norm", "normblur")
METHOD_TITLES = {"gradient": "gradient", "deconv": "deconvnet", "guided": "guided backprop"}
MAP_VIEWS = ("activation", "overlay", "ERF")
MAP_VIEW_TIPS = {
    "activation": "the unit's activation map on this frame",
    "overlay": "the activation map drawn over the input frame",
    "ERF": "effective receptive field: mean |gradient| of the unit's channel at the layer centre\n"
           "w.r.t. the input, over the frames seen since the unit was selected",
}


def methods_for(mode: str) -> tuple[str, ...]:
    if mode == "all":
        return ("gradient", "deconv", "guided")
    if mode == "off":
        return ()
    return (mode,)


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
    map_view_changed = Signal(str)
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
        self.map_box = QComboBox()
        for i, view in enumerate(MAP_VIEWS):
            self.map_box.addItem(view)
            self.map_box.setItemData(i, MAP_VIEW_TIPS[view], Qt.ItemDataRole.ToolTipRole)
        self.map_box.setToolTip("activation map / overlay on the frame / effective receptive field (ERF)")
        self.freeze_box = QCheckBox("freeze unit")
        self.freeze_box.setToolTip("keep explaining this unit while browsing other layers")
        self.mode_box.currentTextChanged.connect(self.backprop_mode_changed.emit)
        self.view_box.currentTextChanged.connect(self.view_changed.emit)
        self.map_box.currentTextChanged.connect(self.map_view_changed.emit)
        self.freeze_box.toggled.connect(self.freeze_unit_toggled.emit)
        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(QLabel("backprop"))
        controls.addWidget(self.mode_box)
        controls.addWidget(self.view_box)
        controls.addWidget(self.freeze_box)
        controls.addStretch(1)

        self.unit_map = ImageCanvas("select a unit", smooth=True)
        self.topk = TopKPanel()
        self.optimized = ImageCanvas("Optimized image:\nselect a unit", smooth=True)
        self.optimized_hint = "press optimize to synthesize\nthis unit's preferred image"
        self.attr = {m: ImageCanvas("", smooth=True) for m in ("gradient", "deconv", "guided")}
        self.optimize_button = QPushButton("optimize")
        self.optimize_button.setToolTip("synthesize an image that maximizes this unit (runs in the background)")
        self.optimize_button.clicked.connect(self.optimize_clicked.emit)
        self.optimize_button.setEnabled(False)

        # 3 x 3: the top-k tiles take the upper right 2 x 2 block, the live backprop images the bottom row
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(4)
        map_box = QWidget()
        map_lay = QVBoxLayout(map_box)
        map_lay.setContentsMargins(0, 0, 0, 0)
        map_lay.setSpacing(1)
        map_lay.addWidget(self.map_box, 0, Qt.AlignmentFlag.AlignHCenter)
        map_lay.addWidget(self.unit_map, 1)
        self._boxes = {
            "unit_map": map_box,
            "topk": self.topk,
            "optimized": _titled("optimized image", self.optimized),
        }
        grid.addWidget(map_box, 0, 0)
        opt = self._boxes["optimized"]
        opt.layout().addWidget(self.optimize_button)
        grid.addWidget(opt, 1, 0)
        grid.addWidget(self.topk, 0, 1, 2, 2)
        for i, m in enumerate(("gradient", "deconv", "guided")):
            self._boxes[m] = _titled(METHOD_TITLES[m], self.attr[m])
            grid.addWidget(self._boxes[m], 2, i)
        for c in range(3):
            grid.setColumnStretch(c, 1)
        for r in range(3):
            grid.setRowStretch(r, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(3)
        layout.addWidget(self.header)
        layout.addLayout(controls)
        layout.addLayout(grid, 1)
        self.set_methods(methods_for("guided"))

    def set_modes(self, mode: str, view: str, map_view: str = "activation") -> None:
        for box, text in ((self.mode_box, mode), (self.view_box, view), (self.map_box, map_view)):
            box.blockSignals(True)
            box.setCurrentText(text)
            box.blockSignals(False)

    def set_methods(self, methods: tuple[str, ...]) -> None:
        """Placeholders for methods that are not computed; the computed ones get highlighted titles."""
        for m, canvas in self.attr.items():
            title = self._boxes[m].title_label
            on = m in methods
            title.setProperty("active", on)
            title.setStyleSheet("color: #ffd60a; font-weight: bold;" if on else "")
            if not on:
                canvas.clear(f"{METHOD_TITLES[m]}: off\n(b cycles the backprop mode)")
            elif not canvas.has_image:
                canvas.clear("waiting for the next frame...")

    def set_header(self, html: str) -> None:
        self.header.setText(html)

    def set_optimized_title(self, text: str = "optimized image") -> None:
        """E.g. "optimized image: class goose" while a class from the predictions is shown."""
        self._boxes["optimized"].title_label.setText(text)

    def set_optimized(self, image: np.ndarray | None, message: str, caption: str = "") -> None:
        self.optimized.caption = caption
        if image is not None:
            self.optimized.set_image(image)
        else:
            self.optimized.clear(message)
