"""Weights: the filters of the shown layer's convolution, trained next to the same architecture freshly
initialised (seeded) — Gabor-like edges and colour blobs against noise, the contrast students learn most from.
The first layer's filters are colour pictures (they live in pixel space); deeper filters are grey tiles per
(filter, input channel), with the lecture's caveat. Deeper layers show the selected unit's filter first."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout

from ... import filters as F
from ...errors import DeepVisError
from ..feature import TOOLS, Feature, MenuItem, Panel
from ..widgets.canvas import ImageCanvas
from ..widgets.inspector_pane import titled
from ..widgets.panel import ToolPanel

SLOT = "weights-twin"
MAX_DEEP_FILTERS = 8  # rows of grey tiles for a deeper layer (the selected unit first)


class WeightsFeature(Feature):
    name = "weights"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._twin = None  # the random-weights twin of the current model (loaded in the background)
        self._twin_of: str | None = None
        self.trained = ImageCanvas("no conv layer here", smooth=False)
        self.random = ImageCanvas("loading the random twin...", smooth=False)
        self.first_box = QCheckBox("first layer")
        self.first_box.setToolTip("show the first convolution (the one that sees pixels) whatever layer is shown")
        self.first_box.setChecked(True)
        self.first_box.toggled.connect(lambda _on: self.refresh())
        self.header = QLabel("")
        self.header.setWordWrap(True)
        self.caveat = QLabel("")
        self.caveat.setWordWrap(True)
        self.caveat.setStyleSheet("color: #a9b0c0;")
        w = self.panel = ToolPanel()
        w.shown.connect(self.refresh)
        lay = QVBoxLayout(w)
        lay.setContentsMargins(4, 2, 4, 2)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.first_box)
        lay.addLayout(top)
        pics = QHBoxLayout()
        self.trained_box = titled("trained", self.trained)
        self.random_box = titled("random init (seed 0)", self.random)
        pics.addWidget(self.trained_box, 1)
        pics.addWidget(self.random_box, 1)
        lay.addLayout(pics, 1)
        lay.addWidget(self.caveat)
        st = ctx.state
        st.events.layer.connect(lambda *_: self.refresh())
        st.events.unit.connect(lambda *_: self.refresh())
        ctx.live.model_changed.connect(self._model_changed)

    def _model_changed(self, _vm) -> None:
        self._twin, self._twin_of = None, None  # the old model's twin is freed with it
        self.ctx.jobs.cancel(SLOT)
        self.refresh()

    def _conv(self) -> str | None:
        vm = self.ctx.vm
        return F.first_conv(vm) if self.first_box.isChecked() else F.conv_for_layer(vm, self.ctx.state.layer)

    def _filters(self, conv: str) -> list[int] | None:
        """Deeper layers: the selected unit's filter first (when it is this conv's), then the next ones."""
        _name, w, _groups = F.conv_weight(self.ctx.vm, conv)
        if w.shape[1] == 3:
            return None  # the stem: every filter, in colour
        unit = self.ctx.state.unit
        first = unit.channel if unit is not None and unit.layer.partition("@")[0] in (conv, self.ctx.state.layer) \
            and unit.channel < w.shape[0] else 0
        return [(first + k) % w.shape[0] for k in range(min(MAX_DEEP_FILTERS, w.shape[0]))]

    def refresh(self) -> None:
        if not self.panel.isVisible():
            return
        try:
            conv = self._conv()
            if conv is None:
                self.header.setText(f"{self.ctx.state.layer}: no convolution in this layer (no filters to show)")
                self.trained.clear("no filters")
                self.random.clear("no filters")
                return
            chosen = self._filters(conv)
            tiles = F.filter_tiles(self.ctx.vm, conv, filters=chosen)
        except DeepVisError as err:
            self.header.setText(str(err))
            return
        self.trained.set_image(tiles.image)
        shape = "x".join(str(s) for s in tiles.weight_shape)
        what = "colour filters (RGB weights)" if tiles.kind == "rgb" else \
            f"filters {tiles.filters[0]}.. as rows, input channels as columns"
        note = tiles.extra.get("note", "")
        self.header.setText(f"<b>{conv}</b> weights {shape}: {what}; grey = 0, each filter scaled to its own "
                            f"max |w|{'; ' + note if note else ''}{' (first ones shown)' if tiles.truncated else ''}")
        self.caveat.setText(tiles.caveat or "")
        self.caveat.setVisible(bool(tiles.caveat))
        self._show_twin(conv, chosen)

    def _show_twin(self, conv: str, chosen: list[int] | None) -> None:
        vm = self.ctx.vm
        key = f"{vm.name}:{vm.weights}"
        if self._twin is not None and self._twin_of == key:
            self.random.set_image(F.filter_tiles(self._twin, conv, filters=chosen).image)
            return
        self.random.clear("loading the random twin...")

        def loaded(twin) -> None:
            self._twin, self._twin_of = twin, key
            self.refresh()

        self.ctx.jobs.start(SLOT, lambda _abort: F.random_twin(vm, seed=0), on_done=loaded,
                            on_error=lambda msg: self.random.clear(f"random twin failed:\n{msg}"))

    def open(self) -> None:
        self.show_panel("weights")
        self.refresh()

    def panels(self) -> list[Panel]:
        return [Panel("weights", "Weights", self.panel, area="right", visible=False, tab_with=TOOLS)]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Weights (filters, trained vs random)", self.open))]

    def snapshot_images(self) -> dict:
        out = {}
        if self.panel.isVisible() and self.trained.array is not None:
            out["weights_trained"] = self.trained.array
            if self.random.array is not None:
                out["weights_random"] = self.random.array
        return out
