"""Activation grid pane: every channel of the selected layer as a tile (pyqtgraph, zoom and pan).

The grid image (uint8, border pixels 0) is shown with fixed levels (0, 255) through a LUT, so repainting a
new frame is one texture upload; hovering maps the cursor through `GridLayout.channel_at`, clicking selects.

The tile borders are also drawn over the image at the screen's resolution (`TileSeparators`): a grid shown
smaller than 1:1 is sampled nearest-neighbour, which drops most 1-px borders (384 ConvNeXt tiles read as 20
stripes); the overlay keeps every border one screen pixel wide at any size.

Pattern mode (the old toolbox's "p") shows each unit's cached optimized image instead, as an RGB grid with
the live grid's rows and columns, so hit-testing and selection work the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...render import Grid, GridLayout, grid_layout
from ...state import COLORMAPS, GAMMAS
from .colorbar import ColorBar
from .combo import compact_combo
from .flow import FlowLayout
from .images import BORDER_RGB, SIGNED_COLORMAP, make_lut
from .opaque import make_opaque
from .screen_item import ScreenImageItem
from .shortened_label import ShortenedLabel

SELECT_COLOR = QColor(255, 214, 10)
HOVER_COLOR = QColor(120, 200, 255)
PATTERN_TILE = 96  # pixels per pattern tile (the GUI's default optimized image size: shown 1:1)
PATTERN_PAD = 2
PLACEHOLDER_RGB = (34, 36, 46)  # a unit with no cached optimized image
MIN_SEPARATED_PITCH = 4.0  # screen pixels per tile (border included) below which no separators are drawn


def pattern_tile(image: np.ndarray | None, size: int = PATTERN_TILE) -> np.ndarray:
    """A cached optimized image as shown in pattern mode: resized to size x size (area filter when
    shrinking, bilinear when enlarging); None -> the dark placeholder tile."""
    if image is None:
        return np.broadcast_to(np.array(PLACEHOLDER_RGB, np.uint8), (size, size, 3)).copy()
    if image.shape[:2] == (size, size):
        return np.ascontiguousarray(image[:, :, :3])
    interp = cv2.INTER_AREA if max(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image[:, :, :3]), (size, size), interpolation=interp)


def pattern_grid(images: list[np.ndarray | None], layout: GridLayout,
                 live: Callable[[int, int], np.ndarray | None] | None = None) -> np.ndarray:
    """RGB grid of the units' optimized images in `layout`; borders 0. A unit without an image shows
    `live(channel, size)` (its live activation tile) when given, else the dark placeholder."""
    out = np.zeros((layout.height, layout.width, 3), np.uint8)
    for c in range(layout.channels):
        y, x = layout.tile_origin(c)
        image = images[c] if c < len(images) else None
        tile = live(c, layout.tile_h) if image is None and live is not None else None
        out[y:y + layout.tile_h, x:x + layout.tile_w] = tile if tile is not None else pattern_tile(image,
                                                                                                  layout.tile_h)
    return out


class TileSeparators(QGraphicsItem):
    """The grid's tile borders, drawn in screen pixels over the scaled grid image (in the image's coordinates).

    Shown 1:1 or larger every border pixel of the image reaches the screen and nothing is drawn. Shown smaller,
    the image is sampled nearest-neighbour and most 1-px borders fall between the sampled pixels; this item then
    fills, for every border, the screen column (row) its centre falls in: the pixel the sampling would show if
    it kept the border, so a kept border and the drawn one coincide (one pixel, not two). Cost per paint: one
    filled rectangle per row and column of tiles. Tiles under MIN_SEPARATED_PITCH screen pixels get no
    separators (they would cover the tiles; zoom in to tell them apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.layout_: GridLayout | None = None
        self.color = QColor(*BORDER_RGB)
        self.drawn = 0  # separators drawn by the newest paint (0: the image's own borders show, or none fit)

    def set_layout(self, layout: GridLayout | None, color: QColor) -> None:
        if layout != self.layout_:
            self.prepareGeometryChange()
            self.layout_ = layout
        if color != self.color:
            self.color = color
            self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt naming
        lay = self.layout_
        return QRectF() if lay is None else QRectF(0, 0, lay.width, lay.height)

    def paint(self, p: QPainter, _option, _widget=None) -> None:
        lay = self.layout_
        self.drawn = 0
        if lay is None:
            return
        t = p.worldTransform()
        sx, sy = t.m11(), t.m22()
        if t.isRotating() or sx <= 0 or sy <= 0 or (sx >= 1 and sy >= 1):
            return
        pitch_x, pitch_y = lay.tile_w + lay.pad, lay.tile_h + lay.pad
        if min(pitch_x * sx, pitch_y * sy) < MIN_SEPARATED_PITCH:
            return
        dx, dy = t.dx(), t.dy()
        top, bottom = math.floor(dy), math.ceil(dy + lay.height * sy)
        left, right = math.floor(dx), math.ceil(dx + lay.width * sx)
        wx, wy = max(1, round(lay.pad * sx)), max(1, round(lay.pad * sy))
        half = lay.pad / 2
        # the screen column (row) each border's centre falls in
        height, width = bottom - top, right - left
        rects = [QRect(math.floor(dx + (k * pitch_x + half) * sx), top, wx, height) for k in range(lay.cols + 1)]
        rects += [QRect(left, math.floor(dy + (k * pitch_y + half) * sy), width, wy) for k in range(lay.rows + 1)]
        p.save()
        p.resetTransform()  # device pixels from here on
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(self.color)
        p.drawRects(rects)  # one call for all of them
        p.restore()
        self.drawn = lay.cols + lay.rows + 2


class GridPane(QWidget):
    unit_clicked = Signal(int)
    norm_changed = Signal(str)
    gamma_changed = Signal(float)
    cmap_changed = Signal(str)

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
        self.pattern_on = False
        self.pattern_images: list[np.ndarray | None] = []
        self.pattern_status = ""
        self._shown = ""  # "live" or "pattern": what the view holds now
        self._live_layer = ""  # the layer of `self.grid` (the newest live grid)
        self._luts = {name: make_lut(name) for name in (*COLORMAPS, SIGNED_COLORMAP)}
        self.layer_title: Callable[[str], str] = str  # how the footer names a layer (the feature sets it)
        self.note = ""  # appended to the footer, e.g. "[intervened: ...]" (the feature sets it)
        self._footer = ""  # the footer text last shown (refreshed when it changes)

        # controls
        self.norm_box = compact_combo()
        self.norm_box.addItems(["whole layer", "per channel"])
        self.norm_box.setToolTip("normalization: scale by the whole layer (t) or by each channel")
        self.gamma_box = compact_combo()
        for g in GAMMAS:
            self.gamma_box.addItem(f"gamma {g:g}", float(g))
        self.gamma_box.setToolTip("gamma boost (< 1 lifts faint activity) (T)")
        self.cmap_box = compact_combo()
        self.cmap_box.addItems(COLORMAPS)
        self.cmap_box.setCurrentText(self.cmap)
        self.cmap_box.setToolTip("colormap (signed layers always use a blue-white-red map, zero = white)")
        self.fit_button = QPushButton("fit")
        self.fit_button.setToolTip("show the whole grid (z zooms to the selected unit)")
        self.pattern_label = QLabel("")  # pattern mode's "N of C units cached - run ..." line
        self.pattern_label.setObjectName("patternStatus")
        self.pattern_label.setWordWrap(True)
        self.pattern_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.pattern_label.setStyleSheet("color: #ffd60a; padding: 2px 4px;")
        self.pattern_label.hide()
        self.info = ShortenedLabel("")  # a narrow footer is shortened in its middle (full text: tooltip)
        self.info.setMinimumWidth(40)
        self.norm_box.currentIndexChanged.connect(lambda i: self.norm_changed.emit(("layer", "channel")[i]))
        self.gamma_box.currentIndexChanged.connect(lambda i: self.gamma_changed.emit(self.gamma_box.itemData(i)))
        self.cmap_box.currentTextChanged.connect(self._on_cmap)
        self.fit_button.clicked.connect(self.reset_zoom)
        self.colorbar = ColorBar()
        self.bar = bar = FlowLayout(spacing=4)  # wraps rather than widening a small window
        for w in (self.norm_box, self.gamma_box, self.cmap_box, self.fit_button):
            bar.addWidget(w)
        foot = QHBoxLayout()  # under the grid: what the pointer is on, and the colour scale
        foot.setContentsMargins(2, 0, 2, 0)
        foot.addWidget(self.info, 1)
        foot.addWidget(self.colorbar)

        # the view
        self.view = pg.GraphicsView()
        self.view.setBackground(QColor(14, 15, 19))
        # the view paints every pixel of its viewport (the background brush, then the grid): nothing behind it
        # needs painting first (`opaque`)
        make_opaque(self.view.viewport())
        self.vb = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.vb.setDefaultPadding(0.01)
        self.view.setCentralItem(self.vb)
        self.image = ScreenImageItem(axisOrder="row-major")  # painted as a copy (`screen_item`)
        self.image.setLevels((0, 255))
        self.image.setLookupTable(self._luts[self.cmap])
        self.vb.addItem(self.image)
        self.separators = TileSeparators()  # every tile border visible at any zoom (see the module's docstring)
        self.separators.setZValue(5)
        self.vb.addItem(self.separators, ignoreBounds=True)
        self.sel_rect = self._outline(SELECT_COLOR, 2.5, 10)
        self.hover_rect = self._outline(HOVER_COLOR, 1.5, 9)
        self.view.scene().sigMouseMoved.connect(self._on_move)
        self.view.viewport().installEventFilter(self)  # hover outline and text go when the pointer leaves
        self.view.scene().sigMouseClicked.connect(self._on_click)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.pattern_label)
        layout.addWidget(self.view, 1)
        layout.addLayout(foot)

    def add_section(self, widget: QWidget, **_place: object) -> None:
        """A control another feature puts in the grid's toolbar."""
        self.bar.addWidget(widget)

    def lut(self, name: str) -> np.ndarray:
        """The grid's colour table `name` (a colormap, or the signed diverging map)."""
        return self._luts[name]

    @property
    def shown_kind(self) -> str:
        """"live" (activations) or "pattern" (optimized images): what the view holds now."""
        return self._shown

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt naming
        from PySide6.QtCore import QEvent

        if event.type() == QEvent.Type.Leave:
            self.hover = None
            self._place(self.hover_rect, None)
            self.info.setText(self.default_info())
            self.view.setToolTip("")
        return False

    # -- showing

    def _outline(self, color, width: float, z: int) -> QGraphicsRectItem:
        """A hidden tile outline (cosmetic pen: same width at any zoom) in the grid's view box."""
        rect = QGraphicsRectItem()
        pen = QPen(color, 0)
        pen.setCosmetic(True)
        pen.setWidthF(width)
        rect.setPen(pen)
        rect.setZValue(z)
        rect.hide()
        self.vb.addItem(rect, ignoreBounds=True)
        return rect
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
        if self.pattern_on:  # keep the newest live grid (its layout is reused), but show the patterns
            self.grid = grid
            self._live_layer = layer
            lay = self.layout_
            if (self._shown == "pattern" and layer == self.layer and lay is not None
                    and ((lay.rows, lay.cols) != (grid.layout.rows, grid.layout.cols)
                         or any(im is None for im in self.pattern_images))):
                # match the live layout; units without an image show their live tile, so redraw them
                self.show_patterns(layer, self.pattern_images, self.labels, self.pattern_status)
            return
        new_shape = (self.grid is None or self.grid.image.shape != grid.image.shape or layer != self.layer
                     or self._shown != "live")
        self._shown = "live"
        self.grid, self.layout_, self.layer = grid, grid.layout, layer
        self._live_layer = layer
        self.labels = labels or []
        self.image.setLookupTable(self._luts[SIGNED_COLORMAP if grid.signed else self.cmap], update=False)
        self.image.setImage(grid.image, autoLevels=False, levels=(0, 255))
        self.separators.set_layout(grid.layout, QColor(*BORDER_RGB))
        self._update_scale()
        if new_shape:
            self._zoomed = False
            self.vb.setRange(QRectF(0, 0, grid.image.shape[1], grid.image.shape[0]), padding=0.01)
            self._place(self.sel_rect, self.selected)
            self._place(self.hover_rect, None)
            self.hover = None
        if self.hover is not None:
            self.info.setText(self.describe(self.hover))
        else:
            text = self.default_info()  # also when only the note changed (an intervention switched on or off)
            if new_shape or text != self._footer:
                self.info.setText(text)
        self._footer = self.default_info()

    def set_pattern_mode(self, on: bool) -> None:
        self.pattern_on = bool(on)
        self.pattern_label.setVisible(self.pattern_on)
        if not on and self.grid is not None:
            self.show_grid(self.grid, self._live_layer, self.labels)

    def show_patterns(self, layer: str, images: list[np.ndarray | None], labels: list[str] | None = None,
                      status: str = "") -> None:
        """Show the units' optimized images (None: placeholder) as the grid, laid out like the live grid."""
        channels = len(images)
        live = self.grid.layout if self.grid is not None and self._live_layer == layer else None
        if live is not None and live.channels == channels:
            lay = GridLayout(channels, live.rows, live.cols, PATTERN_TILE, PATTERN_TILE, PATTERN_PAD)
        else:
            lay = grid_layout(channels, PATTERN_TILE, PATTERN_TILE, pad=PATTERN_PAD)
        new_shape = self.layout_ != lay or layer != self.layer or self._shown != "pattern"
        self._shown = "pattern"
        self.layout_, self.layer = lay, layer
        self.labels = labels or []
        self.pattern_images = list(images)
        self.pattern_status = status
        self.pattern_label.setText(status)
        self.image.setLookupTable(None, update=False)
        live = self.live_tile if self.grid is not None and self._live_layer == layer else None
        self.image.setImage(pattern_grid(self.pattern_images, lay, live), autoLevels=False, levels=(0, 255))
        self.separators.set_layout(lay, QColor(0, 0, 0))  # pattern grids' borders are black
        self._update_scale()
        if new_shape:
            self._zoomed = False
            self.vb.setRange(QRectF(0, 0, lay.width, lay.height), padding=0.01)
            self._place(self.sel_rect, self.selected)
            self._place(self.hover_rect, None)
            self.hover = None
        self.info.setText(self.describe(self.hover) if self.hover is not None else self.default_info())

    def live_tile(self, channel: int, size: int) -> np.ndarray | None:
        """The newest live activation tile of `channel`, coloured as the live grid and enlarged (nearest) to
        size x size: what pattern mode shows for a unit until its optimized image exists."""
        grid = self.grid
        if grid is None or channel >= grid.layout.channels:
            return None
        y, x = grid.layout.tile_origin(channel)
        tile = grid.image[y:y + grid.layout.tile_h, x:x + grid.layout.tile_w]
        rgb = self._luts[SIGNED_COLORMAP if grid.signed else self.cmap][tile]
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_NEAREST)

    def set_selected(self, channel: int | None) -> None:
        self.selected = channel
        self._place(self.sel_rect, channel)

    def tile_rect(self, channel: int) -> QRectF | None:
        lay = self.layout_
        if lay is None or channel is None or not 0 <= channel < lay.channels:
            return None
        y, x = lay.tile_origin(channel)
        return QRectF(x, y, lay.tile_w, lay.tile_h)

    def _place(self, item: QGraphicsRectItem, channel: int | None) -> None:
        rect = self.tile_rect(channel) if channel is not None else None
        if rect is None:
            item.hide()
        else:
            item.setRect(rect.adjusted(-0.5, -0.5, 0.5, 0.5))
            item.show()

    def default_info(self) -> str:
        if self.layout_ is None:
            return ""
        name = self.layer_title(self.layer)
        if self._shown == "pattern":
            n = sum(im is not None for im in self.pattern_images)
            return f"{name}: {n} of {self.layout_.channels} optimized images"
        kind = "classes" if self.labels else "units"
        return f"{name}: {self.layout_.channels} {kind}" + (f"  {self.note}" if self.note else "")

    def describe(self, channel: int) -> str:
        if self._shown == "pattern":
            name = f"  {self.labels[channel]}" if channel < len(self.labels) else ""
            have = channel < len(self.pattern_images) and self.pattern_images[channel] is not None
            return f"unit {channel}{name}   {'optimized image' if have else 'not optimized yet: live activation'}"
        if self.grid is None:
            return ""
        value = float(self.grid.channel_max[channel]) if channel < len(self.grid.channel_max) else float("nan")
        name = f"  {self.labels[channel]}" if channel < len(self.labels) else ""
        return f"unit {channel}{name}   max {value:.3g}"

    # -- zoom
    def zoom_to(self, channel: int | None) -> None:
        rect = self.tile_rect(channel) if channel is not None else None
        if rect is None:
            return
        lay = self.layout_
        m = 0.2 * max(lay.tile_w, lay.tile_h)  # the tile fills the view: a real zoom even on a small grid
        self.vb.setRange(rect.adjusted(-m, -m, m, m), padding=0)
        self._zoomed = True

    def toggle_zoom(self, channel: int | None) -> None:
        if self._zoomed:
            self.reset_zoom()
        else:
            self.zoom_to(channel)

    def reset_zoom(self) -> None:
        self._zoomed = False
        if self._shown == "pattern" and self.layout_ is not None:
            self.vb.setRange(QRectF(0, 0, self.layout_.width, self.layout_.height), padding=0.01)
        elif self.grid is not None:
            self.vb.setRange(QRectF(0, 0, self.grid.image.shape[1], self.grid.image.shape[0]), padding=0.01)

    # -- mouse
    def channel_at_scene(self, scene_pos: QPointF) -> int | None:
        if self.layout_ is None:
            return None
        p = self.vb.mapSceneToView(scene_pos)
        return self.layout_.channel_at(p.y(), p.x())

    def tile_center(self, channel: int) -> QPoint:
        """The tile's centre in `self.view.viewport()` coordinates (for tests and scripted clicks)."""
        rect = self.tile_rect(channel)
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

    def _update_scale(self) -> None:
        """The colour bar and the colormap box say how the live grid is coloured (signed layers: diverging); in
        pattern mode too while some tiles are live activations."""
        grid = self.grid
        live_tiles = self._shown == "pattern" and any(im is None for im in self.pattern_images)
        if grid is None or (self._shown != "live" and not live_tiles):
            self.colorbar.setVisible(False)
            return
        self.colorbar.setVisible(True)
        top = float(np.max(np.abs(grid.channel_max))) if len(grid.channel_max) else 0.0
        per_channel = self.norm_box.currentIndex() == 1
        hi = "tile max" if per_channel else f"{top:.3g}"
        if grid.signed:
            self.colorbar.set_scale(self._luts[SIGNED_COLORMAP], (f"-{hi}", "0", f"+{hi}"),
                                    "signed layer (no ReLU after it): blue < 0 < red, white = 0; the colormap box "
                                    "applies to non-negative layers")
        else:
            self.colorbar.set_scale(self._luts[self.cmap], ("0", hi), f"{self.cmap}: 0 .. "
                                    f"{'each tile' if per_channel else 'the layer'}'s max")
        self.cmap_box.setEnabled(not grid.signed)
        self.cmap_box.setToolTip("signed layer: drawn blue-white-red (zero = white); the colormap applies to "
                                 "non-negative layers" if grid.signed else "colormap of the grid and unit map")

    def set_cmap(self, name: str) -> None:
        if name not in self._luts or name == self.cmap and self.cmap_box.currentText() == name:
            return
        self.cmap = name
        self.cmap_box.blockSignals(True)
        self.cmap_box.setCurrentText(name)
        self.cmap_box.blockSignals(False)
        if self.grid is not None and not self.grid.signed and self._shown == "live":
            self.image.setLookupTable(self._luts[name])
        self._update_scale()

    def _on_cmap(self, name: str) -> None:
        self.set_cmap(name)
        self.cmap_changed.emit(name)

    def grid_image(self) -> np.ndarray | None:
        """What the view shows: the live grid (uint8 HxW) or, in pattern mode, the RGB pattern grid."""
        if self._shown == "pattern":
            return self.image.image
        return None if self.grid is None else self.grid.image
