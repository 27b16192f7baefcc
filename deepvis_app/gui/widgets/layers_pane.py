"""Layers pane: the curated layers (bold, with titles) first, then every probe-able layer with its shape.

The shape column says what the grid shows, from the model's `LayerInfo` (not the raw tensor shape): a ConvNeXt
channels-last 56x56x384 layer reads "384 @ 56x56", a ViT token layer "768 @ 14x14 +1" (its patch grid, plus the
class token; kept short so the names keep their room). Long module names are shortened at their start
("...layer_11.mlp.3"): their tails tell the rows apart; curated titles ("block 3 MLP GELU") at their end. Every
row's tooltip has the full name, the raw output shape and what it holds.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...values import LayerInfo, Layout
from ...zoo import VisModel

ROLE_LAYER = Qt.ItemDataRole.UserRole
ROLE_ELIDE = Qt.ItemDataRole.UserRole + 1  # a row's elide mode for its name (module names: from the left)
NARROW = 230  # pane width (px) below which the shape column is hidden


def shape_text(shape: tuple[int, ...]) -> str:
    """A raw (channels-first) shape: "96 @ 56x56", "1000", "2 x 3 x 4 x 5"."""
    if len(shape) == 3:
        return f"{shape[0]} @ {shape[1]}x{shape[2]}"
    return " x ".join(str(s) for s in shape) if shape else "-"


def layer_shape_text(info: LayerInfo) -> str:
    """Units @ positions, as the grid draws the layer: "384 @ 56x56" (channels-last too), "768 @ 14x14 +1" (a ViT
    token layer: its patch grid, +N extra tokens: class, distillation, registers), "64 @ 50 tokens" (tokens
    without a grid), "1000" (a vector)."""
    grid = info.grid
    if info.layout is Layout.TOKENS and len(info.shape) == 2:
        tail = f" +{info.prefix_tokens}" if info.prefix_tokens else ""
        if info.token_grid is None:
            return f"{info.channels} @ {info.shape[0]} tokens"
        return f"{info.channels} @ {grid[0]}x{grid[1]}{tail}"
    if info.layout is Layout.CHANNELS_LAST and grid is not None:
        return f"{info.channels} @ {grid[0]}x{grid[1]}"
    if info.layout is Layout.VECTOR and info.shape:
        return str(info.channels)
    return shape_text(info.shape)


def raw_shape(shape: tuple[int, ...]) -> str:
    """The output tensor's shape as it is (batch left out): "56 x 56 x 384"."""
    return " x ".join(str(s) for s in shape) if shape else "-"


class ElideByRow(QStyledItemDelegate):
    """Each row's own elide mode (ROLE_ELIDE): a module name loses its start, a curated title its end."""

    def initStyleOption(self, option: QStyleOptionViewItem, index) -> None:  # noqa: N802 - Qt naming
        super().initStyleOption(option, index)
        mode = index.siblingAtColumn(0).data(ROLE_ELIDE)
        if mode is not None:
            option.textElideMode = Qt.TextElideMode(mode)


class LayersPane(QWidget):
    layer_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("layersPane")
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["layer", "output"])
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setItemDelegate(ElideByRow(self.tree))  # "...layer_11.mlp.3": the tail tells the rows apart
        self.tree.headerItem().setToolTip(1, "units @ positions, as the grid shows them; +N: extra tokens (class, "
                                             "distillation, register) besides a ViT's patch grid")
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.tree.header().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.header().setStretchLastSection(False)
        self.tree.itemSelectionChanged.connect(self._on_selection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.tree)
        self.shown: list[str] = []
        self.all: list[str] = []
        self._items: dict[str, QTreeWidgetItem] = {}  # first item per layer (the curated one if any)
        self._mute = False

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        """A narrow pane (small screens) drops the shape column rather than eliding every name to "blo..."; the
        shape stays in each row's tooltip."""
        super().resizeEvent(event)
        self.tree.setColumnHidden(1, self.width() < NARROW)

    def set_model(self, vm: VisModel) -> None:
        self._mute = True
        self.tree.clear()
        self._items.clear()
        bold = QFont(self.tree.font())
        bold.setBold(True)
        self.shown = [ls.name for ls in vm.shown_layers]
        self.all = list(vm.layers)
        for ls in vm.shown_layers:
            title = ls.title.split(" (")[0] if ls.title.endswith(")") else ls.title  # shape has its own column
            info = vm.info(ls.name)
            item = QTreeWidgetItem([title, layer_shape_text(info)])
            item.setData(0, ROLE_LAYER, ls.name)
            item.setData(0, ROLE_ELIDE, Qt.TextElideMode.ElideRight.value)
            tip = f"{ls.title}: {ls.name} (output {raw_shape(info.shape)}: {info.describe()})"
            item.setToolTip(0, tip)
            item.setToolTip(1, tip)
            item.setFont(0, bold)
            item.setFont(1, bold)
            self.tree.addTopLevelItem(item)
            self._items.setdefault(ls.name, item)
        if self.shown:
            sep = QTreeWidgetItem([f"all {len(vm.layers)} layers", ""])
            sep.setFlags(Qt.ItemFlag.NoItemFlags)
            sep.setForeground(0, QBrush(QColor(130, 135, 150)))
            self.tree.addTopLevelItem(sep)
        for info in vm.layer_info:
            item = QTreeWidgetItem([info.name, layer_shape_text(info)])
            item.setData(0, ROLE_LAYER, info.name)
            item.setData(0, ROLE_ELIDE, Qt.TextElideMode.ElideLeft.value)
            tip = f"{info.name} ({info.kind}, output {raw_shape(info.shape)}: {info.describe()})"
            item.setToolTip(0, tip)
            item.setToolTip(1, tip)
            self.tree.addTopLevelItem(item)
            self._items.setdefault(info.name, item)
        self._mute = False

    def set_current(self, layer: str) -> None:
        item = self._items.get(layer)
        if item is None or self.tree.currentItem() is item:
            return
        self._mute = True
        self.tree.setCurrentItem(item)
        self.tree.scrollToItem(item)
        self._mute = False

    def neighbour(self, layer: str, step: int) -> str:
        """The previous/next layer for u/o: within the curated list when `layer` is in it, else all layers."""
        seq = self.shown if layer in self.shown else self.all
        if not seq:
            return layer
        if layer not in seq:
            return seq[0]
        return seq[max(0, min(len(seq) - 1, seq.index(layer) + step))]

    def _on_selection(self) -> None:
        if self._mute:
            return
        item = self.tree.currentItem()
        layer = item.data(0, ROLE_LAYER) if item is not None else None
        if layer:
            self.layer_chosen.emit(layer)
