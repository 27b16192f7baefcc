"""Layers pane: the curated layers (bold, with titles) first, then every probe-able layer with its shape."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from ...zoo import VisModel

ROLE_LAYER = Qt.ItemDataRole.UserRole
NARROW = 230  # pane width (px) below which the shape column is hidden


def shape_text(shape: tuple[int, ...]) -> str:
    if len(shape) == 3:
        return f"{shape[0]} @ {shape[1]}x{shape[2]}"
    return " x ".join(str(s) for s in shape) if shape else "-"


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
            item = QTreeWidgetItem([title, shape_text(vm.info(ls.name).shape)])
            item.setData(0, ROLE_LAYER, ls.name)
            info = vm.info(ls.name)
            item.setToolTip(0, f"{ls.title}: {ls.name} ({shape_text(info.shape)}: {info.describe()})")
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
            item = QTreeWidgetItem([info.name, shape_text(info.shape)])
            item.setData(0, ROLE_LAYER, info.name)
            item.setToolTip(0, f"{info.name} ({info.kind}, {shape_text(info.shape)}: {info.describe()})")
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
