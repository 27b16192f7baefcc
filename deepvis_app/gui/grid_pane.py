"""Activation grid pane: every channel of the selected layer as a tile (pyqtgraph, zoom and pan).

The grid image (uint8, border pixels 0) is shown with fixed levels (0, 255) through a LUT, so repainting a
new frame is one texture upload; hovering maps the cursor through `GridLayout.channel_at`, clicking selects.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..render import Grid, GridLayout
from .images import COLORMAPS, SIGNED_COLORMAP, make_lut

GAMMAS = (1.0, 0.7, 0.5, 0.35)
SELECT_COLOR = QColor(255, 214, 10)
HOVER_COLOR = QColor(120, 200, 255)


class GridPane(QWidget):
    unit_clicked = Signal(int)
    norm_changed = Signal(str)
    gamma_changed = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("gridPane")
        self.layout_: GridLayout | None = None
        self.grid: Grid | None = None
        self.layer = ""
        self.labels: list[str] = []  # class names when the layer is the class layer
        self.selected: int | None = None
        self.hover: int | None = None
        self._zoomed = False
        self.cmap = "viridis"
        self._luts = {name: make_lut(name) for name in (*COLORMAPS, SIGNED_COLORMAP)}

        # controls
        self.norm_box = QComboBox()
        self.norm_box.addItems(["whole layer", "per channel"])
        self.norm_box.setToolTip("normalization: scale by the whole layer (t) or by each channel")
        self.gamma_box = QComboBox()
        for g in GAMMAS:
            self.gamma_box.addItem(f"gamma {g:g}", float(g))
        self.gamma_box.setToolTip("gamma boost (< 1 lifts faint activity) (T)")
        self.cmap_box = QComboBox()
        self.cmap_box.addItems(COLORMAPS)
        self.cmap_box.setCurrentText(self.cmap)
        self.cmap_box.setToolTip("colormap (signed layers always use a blue-white-red map, zero = white)")
        self.fit_button = QPushButton("fit")
        self.fit_button.setToolTip("show the whole grid (z zooms to the selected unit)")
        self.info = QLabel("")
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.info.setMinimumWidth(40)
        self.norm_box.currentIndexChanged.connect(lambda i: self.norm_changed.emit(("layer", "channel")[i]))
        self.gamma_box.currentIndexChanged.connect(lambda i: self.gamma_changed.emit(self.gamma_box.itemData(i)))
        self.cmap_box.currentTextChanged.connect(self._on_cmap)
        self.fit_button.clicked.connect(self.reset_zoom)
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        for w in (self.norm_box, self.gamma_box, self.cmap_box, self.fit_button):
            bar.addWidget(w)
        bar.addWidget(self.info, 1)

        # the view
        self.view = pg.GraphicsView()
        self.view.setBackground(QColor(14, 15, 19))
        self.vb = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setDefaultPadding(0.01)
        self.view.setCentralItem(self.vb)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLevels((0, 255))
        self.image.setLookupTable(self._luts[self.cmap])
        self.vb.addItem(self.image)
        self.sel_rect = QGraphicsRectItem()
        pen = QPen(SELECT_COLOR, 0)
        pen.setCosmetic(True)
        pen.setWidthF(2.5)
        self.sel_rect.setPen(pen)
        self.sel_rect.setZValue(10)
        self.sel_rect.hide()
        self.vb.addItem(self.sel_rect, ignoreBounds=True)
        self.hover_rect = QGraphicsRectItem()
        hpen = QPen(HOVER_COLOR, 0)
        hpen.setCosmetic(True)
        hpen.setWidthF(1.5)
        self.hover_rect.setPen(hpen)
        self.hover_rect.setZValue(9)
        self.hover_rect.hide()
        self.vb.addItem(self.hover_rect, ignoreBounds=True)
        self.view.scene().sigMouseMoved.connect(self._on_move)
        self.view.scene().sigMouseClicked.connect(self._on_click)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)

    # -- showing
    def gamma_index(self, gamma: float) -> int:
        """The gamma combo's item for `gamma`; a value it does not list (e.g. --gamma 0.6) is added."""
        for i in range(self.gamma_box.count()):
            if abs(float(self.gamma_box.itemData(i)) - gamma) < 1e-9:
                return i
        self.gamma_box.blockSignals(True)
        self.gamma_box.addItem(f"gamma {gamma:g}", float(gamma))
        self.gamma_box.blockSignals(False)
        return self.gamma_box.count() - 1

    def set_modes(self, norm: str, gamma: float) -> None:
        for box, idx in ((self.norm_box, 0 if norm == "layer" else 1), (self.gamma_box, self.gamma_index(gamma))):
            box.blockSignals(True)
            box.setCurrentIndex(idx)
            box.blockSignals(False)

    def show_grid(self, grid: Grid, layer: str, labels: list[str] | None = None) -> None:
        new_shape = self.grid is None or self.grid.image.shape != grid.image.shape or layer != self.layer
        self.grid, self.layout_, self.layer = grid, grid.layout, layer
        self.labels = labels or []
        self.image.setLookupTable(self._luts[SIGNED_COLORMAP if grid.signed else self.cmap], update=False)
        self.image.setImage(grid.image, autoLevels=False, levels=(0, 255))
        if new_shape:
            self._zoomed = False
            self.vb.setRange(QRectF(0, 0, grid.image.shape[1], grid.image.shape[0]), padding=0.01)
            self._place(self.sel_rect, self.selected)
            self._place(self.hover_rect, None)
            self.hover = None
        if self.hover is not None:
            self.info.setText(self.describe(self.hover))
        elif new_shape:
            self.info.setText(self.default_info())

    def set_selected(self, channel: int | None) -> None:
        self.selected = channel
        self._place(self.sel_rect, channel)

    def _tile_rect(self, channel: int) -> QRectF | None:
        lay = self.layout_
        if lay is None or channel is None or not 0 <= channel < lay.channels:
            return None
        y, x = lay.tile_origin(channel)
        return QRectF(x, y, lay.tile_w, lay.tile_h)

    def _place(self, item: QGraphicsRectItem, channel: int | None) -> None:
        rect = self._tile_rect(channel) if channel is not None else None
        if rect is None:
            item.hide()
        else:
            item.setRect(rect.adjusted(-0.5, -0.5, 0.5, 0.5))
            item.show()

    def default_info(self) -> str:
        if self.layout_ is None:
            return ""
        kind = "classes" if self.labels else "units"
        return f"{self.layer}: {self.layout_.channels} {kind}"

    def describe(self, channel: int) -> str:
        if self.grid is None:
            return ""
        value = float(self.grid.channel_max[channel]) if channel < len(self.grid.channel_max) else float("nan")
        name = f"  {self.labels[channel]}" if channel < len(self.labels) else ""
        return f"unit {channel}{name}   max {value:.3g}"

    # -- zoom
    def zoom_to(self, channel: int | None) -> None:
        rect = self._tile_rect(channel) if channel is not None else None
        if rect is None:
            return
        lay = self.layout_
        m = 2.5 * max(lay.tile_w, lay.tile_h)
        self.vb.setRange(rect.adjusted(-m, -m, m, m), padding=0)
        self._zoomed = True

    def toggle_zoom(self, channel: int | None) -> None:
        if self._zoomed:
            self.reset_zoom()
        else:
            self.zoom_to(channel)

    def reset_zoom(self) -> None:
        self._zoomed = False
        if self.grid is not None:
            self.vb.setRange(QRectF(0, 0, self.grid.image.shape[1], self.grid.image.shape[0]), padding=0.01)

    # -- mouse
    def channel_at_scene(self, scene_pos: QPointF) -> int | None:
        if self.layout_ is None:
            return None
        p = self.vb.mapSceneToView(scene_pos)
        return self.layout_.channel_at(p.y(), p.x())

    def tile_center(self, channel: int) -> QPoint:
        """The tile's centre in `self.view.viewport()` coordinates (for tests and scripted clicks)."""
        rect = self._tile_rect(channel)
        if rect is None:
            raise ValueError(f"no tile {channel}")
        scene = self.vb.mapViewToScene(rect.center())
        return self.view.mapFromScene(scene)

    def _on_move(self, scene_pos: QPointF) -> None:
        ch = self.channel_at_scene(scene_pos)
        self.hover = ch
        self._place(self.hover_rect, ch)
        text = self.describe(ch) if ch is not None else ""
        self.info.setText(text or self.default_info())
        self.view.setToolTip(text)

    def _on_click(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            return
        ch = self.channel_at_scene(ev.scenePos())
        if ch is not None:
            ev.accept()
            self.unit_clicked.emit(ch)

    def _on_cmap(self, name: str) -> None:
        self.cmap = name
        if self.grid is not None and not self.grid.signed:
            self.image.setLookupTable(self._luts[name])

    def grid_image(self) -> np.ndarray | None:
        return None if self.grid is None else self.grid.image
