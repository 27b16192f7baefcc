"""Top-activating images of the selected unit: a grid of receptive-field patches (from a `deepvis scan` store or
the live top-k of camera frames), a kind toggle (patch / deconv / guided backprop), hover details, and a
non-modal viewer that shows a tile's whole image with the receptive-field box.

The panel only displays what the main window hands it; it never reads stores or talks to the worker itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from .canvas import ImageCanvas
from .combo import compact_combo

KIND_TITLES = {"input": "patches", "deconv": "deconvnet", "guided": "guided bp"}
MAX_TILES = 16


@dataclass(frozen=True)
class TileInfo:
    """What hovering / clicking a tile tells: its rank (0 = best), value and where the image came from."""

    rank: int
    value: float
    source: str  # the image's path (store) or "frame N" (live)
    count: int  # tiles of this unit

    def text(self) -> str:
        return f"rank {self.rank + 1} of {self.count}   value {self.value:.4g}\n{self.source}"


class TileCanvas(ImageCanvas):
    """One top-k tile: reports hover (index, or -1 on leave) and left clicks."""

    hovered = Signal(int)
    clicked = Signal(int)

    def __init__(self, index: int, parent: QWidget | None = None) -> None:
        super().__init__("", smooth=False, min_size=28, parent=parent)
        self.index = index
        self.info: TileInfo | None = None
        self.setMouseTracking(True)

    def sizeHint(self):  # noqa: N802 - Qt naming
        from PySide6.QtCore import QSize

        return QSize(96, 96)

    def enterEvent(self, event) -> None:  # noqa: N802
        self.hovered.emit(self.index)
        super().enterEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered.emit(-1)
        super().leaveEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802 - enter events are not sent to offscreen widgets
        self.hovered.emit(self.index)
        super().mouseMoveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton and self.info is not None:
            self.clicked.emit(self.index)
            event.accept()
            return
        super().mousePressEvent(event)


class TopKPanel(QWidget):
    """Controls on top, the tiles (or a message) in the middle, a one-line summary / hover detail below."""

    kind_changed = Signal(str)
    live_toggled = Signal(bool)
    clear_clicked = Signal()
    save_clicked = Signal()
    tile_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("topkPanel")
        self.kind_box = compact_combo()
        for kind, title in KIND_TITLES.items():
            self.kind_box.addItem(title, kind)
        self.kind_box.setToolTip("show the input patches, or their deconvnet / guided-backprop images "
                                 "(stored by `deepvis scan`)")
        self.live_box = QCheckBox("live top-k")
        self.live_box.setToolTip("keep the camera frames that excite this layer's units most\n"
                                 "(what in the room excites this neuron)")
        self.clear_button = QPushButton("clear")
        self.clear_button.setToolTip("forget the live top-k and start collecting again")
        self.save_button = QPushButton("save...")
        self.save_button.setToolTip("save the live top-k as a store (opens like a `deepvis scan` store)")
        for button in (self.clear_button, self.save_button):
            button.setEnabled(False)
        self.kind_box.currentIndexChanged.connect(lambda _i: self.kind_changed.emit(self.kind))
        self.live_box.toggled.connect(self._on_live)
        self.clear_button.clicked.connect(self.clear_clicked.emit)
        self.save_button.clicked.connect(self.save_clicked.emit)

        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        bar.setSpacing(3)
        bar.addWidget(self.kind_box)
        bar.addWidget(self.live_box)
        bar.addWidget(self.clear_button)
        bar.addWidget(self.save_button)
        bar.addStretch(1)

        self.message = ImageCanvas("Top-activating images:\nno store loaded", min_size=40)
        self.tiles_widget = QWidget()
        self._tile_grid = QGridLayout(self.tiles_widget)
        self._tile_grid.setContentsMargins(0, 0, 0, 0)
        self._tile_grid.setSpacing(3)
        self._pool: list[TileCanvas] = []
        self.tiles: list[TileCanvas] = []  # the shown ones, in rank order
        self.stack = QStackedWidget()
        self.stack.addWidget(self.message)
        self.stack.addWidget(self.tiles_widget)
        self.stack.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

        self.info = QLabel("")
        self.info.setObjectName("paneTitle")
        self.info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.summary = ""

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.info)

    # -- state
    @property
    def kind(self) -> str:
        return str(self.kind_box.currentData())

    @property
    def live(self) -> bool:
        return self.live_box.isChecked()

    def _on_live(self, on: bool) -> None:
        self.clear_button.setEnabled(on)
        self.save_button.setEnabled(on)
        self.live_toggled.emit(on)

    def set_live(self, on: bool) -> None:
        """Reflect the window's state without emitting."""
        self.live_box.blockSignals(True)
        self.live_box.setChecked(on)
        self.live_box.blockSignals(False)
        self.clear_button.setEnabled(on)
        self.save_button.setEnabled(on)

    def set_kinds(self, available: list[str] | tuple[str, ...]) -> None:
        """Enable the kinds the current source has (live: patches only); fall back to patches."""
        model = self.kind_box.model()
        for i in range(self.kind_box.count()):
            item = model.item(i)
            item.setEnabled(self.kind_box.itemData(i) in available or i == 0)
        if self.kind not in available:
            self.kind_box.blockSignals(True)
            self.kind_box.setCurrentIndex(0)
            self.kind_box.blockSignals(False)

    def set_kind(self, kind: str) -> None:
        idx = self.kind_box.findData(kind)
        if idx >= 0:
            self.kind_box.setCurrentIndex(idx)

    # -- showing
    def show_message(self, text: str, summary: str = "") -> None:
        self.tiles = []
        for tile in self._pool:
            tile.info = None
            tile.set_image(None)
        self.message.clear(text)
        self.stack.setCurrentWidget(self.message)
        self.set_summary(summary)

    @property
    def message_text(self) -> str:
        """The message shown instead of tiles ("" while tiles are shown)."""
        return self.message.placeholder if self.stack.currentWidget() is self.message else ""

    def show_tiles(self, images: list[np.ndarray | None], infos: list[TileInfo], summary: str = "",
                   missing: str = "not stored") -> None:
        """Tiles in rank order (3 columns up to 9, then 4); a None image shows `missing` in its tile."""
        n = min(len(images), MAX_TILES)
        while len(self._pool) < n:
            tile = TileCanvas(len(self._pool))
            tile.hovered.connect(self._on_hover)
            tile.clicked.connect(self.tile_clicked.emit)
            self._pool.append(tile)
        cols = 3 if n <= 9 else 4
        if [self._tile_grid.itemAt(i).widget() for i in range(self._tile_grid.count())] != self._pool[:n] \
                or getattr(self, "_cols", None) != cols:
            for tile in self._pool:
                self._tile_grid.removeWidget(tile)
                tile.hide()
            for i in range(n):
                self._tile_grid.addWidget(self._pool[i], i // cols, i % cols)
                self._pool[i].show()
            rows = (n + cols - 1) // cols
            for r in range(4):
                self._tile_grid.setRowStretch(r, 1 if r < max(rows, 3) else 0)
            for c in range(4):
                self._tile_grid.setColumnStretch(c, 1 if c < cols else 0)
            self._cols = cols
        self.tiles = self._pool[:n]
        for tile, img, info in zip(self.tiles, images, infos, strict=False):
            tile.info = info
            tile.setToolTip(info.text())
            tile.setCursor(Qt.CursorShape.PointingHandCursor)
            tile.caption = f"{info.rank + 1}"
            if img is None:
                tile.clear(missing)
            else:
                tile.set_image(img)
        self.stack.setCurrentWidget(self.tiles_widget)
        self.set_summary(summary)

    def set_summary(self, text: str) -> None:
        self.summary = text
        self.info.setText(text)

    def _on_hover(self, index: int) -> None:
        tile = self._pool[index] if 0 <= index < len(self._pool) else None
        if tile is None or tile.info is None:
            self.info.setText(self.summary)
            return
        self.info.setText(tile.info.text().replace("\n", "   "))


class ImageViewer(QDialog):
    """A non-modal window with one tile's whole image (as the network saw it) and its receptive-field box.

    Never blocks: `show()` (not `exec()`), so capture and inference go on while it is open.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("topkViewer")
        self.setModal(False)
        self.setWindowTitle("Top-activating image")
        self.canvas = ImageCanvas("loading...", smooth=True, min_size=320)
        self.details = QLabel("")
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QPushButton("close")
        close.clicked.connect(self.close)
        row = QHBoxLayout()
        row.addWidget(self.details, 1)
        row.addWidget(close)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(row)
        self.resize(480, 540)

    def show_image(self, image: np.ndarray | None, box: tuple[int, int, int, int] | None, title: str,
                   details: str, missing: str = "image not available") -> None:
        self.setWindowTitle(title)
        self.details.setText(details)
        self.canvas.box = box
        if image is None:
            self.canvas.clear(missing)
        else:
            self.canvas.set_image(image)
        self.show()
        self.raise_()
