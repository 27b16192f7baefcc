"""Unit inspector pane: a header, the backprop controls, the unit's map and its live gradient / deconvnet /
guided-backprop images, and free sections where other features put their parts (top-k images, the optimized
image, ...) via `add_section`. The pane owns only its widgets; the inspector feature fills them.
"""

from __future__ import annotations

import html

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...state import BACKPROP_MODES, BACKPROP_VIEWS, MAP_VIEWS
from .canvas import ImageCanvas
from .combo import compact_combo
from .flow import FlowLayout
from .opaque import LiveLabel

METHOD_TITLES = {"gradient": "gradient", "deconv": "deconvnet", "guided": "guided backprop"}
METHOD_TIPS = {
    "gradient": "d unit / d input: how each input pixel would change the unit (exact gradient, signed)",
    "deconv": "deconvnet (Zeiler & Fergus): ReLUs pass only positive signals backwards, ignoring the forward "
              "mask. Deep units often show a checkerboard: strided convolutions, run backwards, spread the signal "
              "unevenly over the input grid (their kernels overlap unevenly). It is the method's artifact, not "
              "the unit's; guided backprop suppresses it. Without max-pooling switches (EfficientNet-Lite, MobileNet "
              "without gating) deconvnet never looks at the image: the map depends only on the unit and its "
              "position, so the window computes it once per position and reuses it",
    "guided": "guided backprop (Springenberg et al.): the gradient where both the forward activation and the "
              "backward signal are positive; the sharpest picture of what in this frame drives the unit",
}
MAP_VIEW_TIPS = {
    "activation": "the unit's activation map on this frame",
    "overlay": "the activation map drawn over the input frame",
    "ERF": "effective receptive field: mean |gradient| of the unit's channel at the layer centre\n"
           "w.r.t. the input, over the frames seen since the unit was selected",
}



VALUE_SAMPLE = "max -0.000e+00"  # the widest live value the header shows

class TitleLabel(QLabel):
    """A word-wrapped title (never cut: a long one takes another line) that asks for the height its text needs at
    its current width instead of announcing height-for-width: in a grid of images (the inspector), one
    height-for-width item would undo the rows' equal stretch and shrink the unit map to a stamp."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)
        self._h = -1

    def hasHeightForWidth(self) -> bool:  # noqa: N802 - Qt naming
        return False

    def _needed(self) -> int:
        width = self.width() if self.width() > 10 else super().sizeHint().width()
        return max(self.fontMetrics().height(), self.heightForWidth(width))

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(super().sizeHint().width(), self._needed())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(super().minimumSizeHint().width(), self._needed())

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._needed() != self._h:  # another width, another number of lines: tell the layout
            self._h = self._needed()
            self.updateGeometry()

    def setText(self, text: str) -> None:  # noqa: N802
        if text == self.text():
            return  # set on every frame: the same title asks for no new layout
        super().setText(text)
        self._h = -1
        self.updateGeometry()


def titled(title: str, widget: QWidget) -> QWidget:
    """`widget` under a small centred title; the title label is `box.title_label`."""
    box = QWidget()
    lay = QVBoxLayout(box)
    lay.setContentsMargins(0, 4, 0, 0)  # a gap above the title: it belongs to the image below, not above
    lay.setSpacing(1)
    label = TitleLabel(title)
    label.setObjectName("paneTitle")
    label.setAlignment(Qt.AlignmentFlag.AlignCenter)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # a long title never widens it
    lay.addWidget(label)
    lay.addWidget(widget, 1)
    box.title_label = label  # type: ignore[attr-defined]
    return box


class InspectorPane(QWidget):
    backprop_mode_changed = Signal(str)
    view_changed = Signal(str)
    freeze_unit_toggled = Signal(bool)
    map_view_changed = Signal(str)
    crop_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspectorPane")
        self.header = QLabel("no unit selected: click a tile")
        self.header.setObjectName("inspectorHeader")
        self.header.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setWordWrap(True)  # a narrow dock wraps the layer's title and name instead of cutting them

        self.mode_box = compact_combo()
        self.mode_box.addItems(BACKPROP_MODES)
        self.mode_box.setToolTip("backprop mode: which methods are computed live (b)")
        self.view_box = compact_combo()
        self.view_box.addItems(BACKPROP_VIEWS)
        self.view_box.setToolTip("backprop view: raw / gray / norm / norm-blur (m)")
        self.map_box = compact_combo()
        for i, view in enumerate(MAP_VIEWS):
            self.map_box.addItem(view)
            self.map_box.setItemData(i, MAP_VIEW_TIPS[view], Qt.ItemDataRole.ToolTipRole)
        self.map_box.setToolTip("activation map / overlay on the frame / effective receptive field (ERF)")
        self.crop_box = QCheckBox("crop to RF")
        self.crop_box.setToolTip("show the backprop images cropped to the unit's receptive field (when it covers "
                                 "less than half of the input), so a small field is not a blob in a big canvas")
        self.crop_box.toggled.connect(self.crop_toggled.emit)
        self.freeze_box = QCheckBox("freeze unit")
        self.freeze_box.setToolTip("keep explaining this unit while browsing other layers (x)")
        self.mode_box.currentTextChanged.connect(self.backprop_mode_changed.emit)
        self.view_box.currentTextChanged.connect(self.view_changed.emit)
        self.map_box.currentTextChanged.connect(self.map_view_changed.emit)
        self.freeze_box.toggled.connect(self.freeze_unit_toggled.emit)
        controls = FlowLayout(spacing=4)  # wraps in a narrow dock instead of widening the window
        controls.addWidget(QLabel("backprop"))
        controls.addWidget(self.mode_box)
        controls.addWidget(self.view_box)
        controls.addWidget(self.crop_box)
        controls.addWidget(self.freeze_box)

        # small minimums: on a short screen the images shrink before the window grows past it
        self.unit_map = ImageCanvas("select a unit", smooth=True, min_size=40)
        self.attr = {m: ImageCanvas("", smooth=True, min_size=40) for m in ("gradient", "deconv", "guided")}

        # 3 x 3: the unit map upper left; sections fill the rest (top-k: upper right 2 x 2, optimized image:
        # middle left); the live backprop images take the bottom row
        self.grid = QGridLayout()
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(4)
        map_box = QWidget()
        map_lay = QVBoxLayout(map_box)
        map_lay.setContentsMargins(0, 0, 0, 0)
        map_lay.setSpacing(1)
        map_lay.addWidget(self.map_box, 0, Qt.AlignmentFlag.AlignHCenter)
        map_lay.addWidget(self.unit_map, 1)
        self.grid.addWidget(map_box, 0, 0)
        self.method_boxes = {}
        for i, m in enumerate(("gradient", "deconv", "guided")):
            self.method_boxes[m] = titled(METHOD_TITLES[m], self.attr[m])
            self.method_boxes[m].setToolTip(METHOD_TIPS[m])
            # the method on the first line, what is shown (view, crop) on the second: never cut, and the three
            # images stay level whatever their details say
            self.method_boxes[m].title_label.setTextFormat(Qt.TextFormat.RichText)
            self.set_method_title(m, "")
            self.grid.addWidget(self.method_boxes[m], 2, i)
        for c in range(3):
            self.grid.setColumnStretch(c, 1)
        for r in range(3):
            self.grid.setRowStretch(r, 1)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(3)
        # The unit's value changes every frame: a label of fixed size beside the header, so setting it asks for no
        # new layout (a changed header text re-laid the dock and the main window out on every frame).
        self.value = LiveLabel("")
        self.value.setObjectName("inspectorValue")
        fm = self.value.fontMetrics()
        self.value.setFixedSize(fm.horizontalAdvance(VALUE_SAMPLE) + 6, fm.height() + 2)
        self.value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top = QHBoxLayout()
        top.setSpacing(4)
        top.addWidget(self.header, 1)
        top.addWidget(self.value, 0, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(top)
        layout.addLayout(controls)
        layout.addLayout(self.grid, 1)

    def add_section(self, widget: QWidget, *, row: int, col: int, rowspan: int = 1, colspan: int = 1) -> None:
        """Place another feature's part in the pane's 3 x 3 grid."""
        self.grid.addWidget(widget, row, col, rowspan, colspan)

    def set_modes(self, mode: str, view: str, map_view: str = "activation") -> None:
        for box, text in ((self.mode_box, mode), (self.view_box, view), (self.map_box, map_view)):
            box.blockSignals(True)
            box.setCurrentText(text)
            box.blockSignals(False)

    def set_frozen(self, frozen: bool, crop: bool = True) -> None:
        for box, on in ((self.freeze_box, frozen), (self.crop_box, crop)):
            box.blockSignals(True)
            box.setChecked(on)
            box.blockSignals(False)

    def set_method_title(self, method: str, detail: str) -> None:
        """The method's title with what is shown (view, crop) on a second line, kept off the image itself."""
        second = html.escape(detail) if detail else "&nbsp;"
        label = self.method_boxes[method].title_label
        label.setText(f"{METHOD_TITLES[method]}<br><span style='font-weight:normal; font-size:10px'>{second}</span>")
        label.setToolTip(f"{METHOD_TITLES[method]} ({detail})" if detail else METHOD_TITLES[method])

    def set_methods(self, methods: tuple[str, ...]) -> None:
        """Placeholders for methods that are not computed; the computed ones get highlighted titles."""
        for m, canvas in self.attr.items():
            title = self.method_boxes[m].title_label
            on = m in methods
            title.setProperty("active", on)
            title.setStyleSheet("color: #ffd60a; font-weight: bold;" if on else "")
            if not on:
                canvas.footer = ""
                self.set_method_title(m, "off")
                canvas.clear(f"{METHOD_TITLES[m]}: off\n(b cycles the backprop mode)")
            elif not canvas.has_image:
                self.set_method_title(m, "")
                canvas.clear("waiting for the next frame...")

    def set_header(self, html: str, value: str = "") -> None:
        """The unit's title (set only when it changes) and its live value ("max 0.784", every frame)."""
        if html != self.header.text():
            self.header.setText(html)
        if value != self.value.text():
            self.value.setText(value)
