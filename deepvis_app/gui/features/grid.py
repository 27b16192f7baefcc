"""The activation grid (central): every channel of the shown layer as a tile; click or arrows select a unit,
t/T change the boosts, z zooms. In pattern mode it shows what the patterns feature publishes instead.

The units of a layer are the model's (`vm.channels(layer)`: a channels-last ConvNeXt map has its last dimension's
units, a token layer its features); painting only draws (the first unit is chosen by the live session when the
first result of a layer arrives with none selected)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from ...interventions import title_note
from ...pipeline import FrameResult
from ...state import COLORMAPS, GAMMAS, NORM_MODES, PatternContent, clamp_unit, cycle
from ..feature import Feature, Key, Panel
from ..labels import layer_label
from ..widgets.grid_pane import GridPane

SETTINGS_CMAP = "grid/colormap"


class GridFeature(Feature):
    name = "grid"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.pane = GridPane()
        self.pane.layer_title = lambda layer: layer_label(ctx.vm, layer)  # the layer list's title and the name
        st = ctx.state
        saved = ctx.settings.value(SETTINGS_CMAP)
        if saved in COLORMAPS:  # a stale or edited settings file is ignored, not an error
            st.colormap = saved
        self.pane.set_cmap(st.colormap)
        self.pane.set_modes(st.norm, st.gamma)
        self.pane.unit_clicked.connect(self.on_tile_clicked)
        self.pane.norm_changed.connect(lambda n: setattr(st, "norm", n))
        self.pane.gamma_changed.connect(lambda g: setattr(st, "gamma", g))
        self.pane.cmap_changed.connect(lambda c: setattr(st, "colormap", c))
        st.events.norm.connect(self._sync_modes)
        st.events.gamma.connect(self._sync_modes)
        st.events.colormap.connect(self.pane.set_cmap)
        st.events.unit.connect(self._sync_selection)
        st.events.layer.connect(self._sync_selection)
        st.events.pattern_mode.connect(self.pane.set_pattern_mode)
        ctx.events.patterns.connect(self._show_patterns)
        ctx.live.painted.connect(self.paint)
        self._sync_selection()  # a unit chosen on the command line (--select) is outlined from the first frame

    # -- choices
    def select_channel(self, channel: int) -> None:
        """Select `channel` of the shown layer (clamped to the layer's units)."""
        layer = self.ctx.state.layer
        self.ctx.state.unit = clamp_unit(layer, channel, self.ctx.vm.channels(layer))

    def on_tile_clicked(self, channel: int) -> None:
        if self.pane.layer == self.ctx.state.layer:  # not a click on the previous layer's grid, still on screen
            self.select_channel(channel)

    def move_selection(self, dx: int, dy: int) -> None:
        lay = self.pane.layout_
        unit = self.ctx.state.unit
        cols = lay.cols if lay is not None else 1
        if unit is None or unit.layer != self.ctx.state.layer:
            self.select_channel(0)
            return
        self.select_channel(unit.channel + dx + dy * cols)

    def cycle_boost(self, step: int) -> None:
        st = self.ctx.state
        if step == 1:  # t: whole layer <-> per channel
            st.norm = cycle(NORM_MODES, st.norm, 1)
        else:  # T: next gamma
            st.gamma = cycle(GAMMAS, st.gamma, 1)

    def toggle_zoom(self) -> None:
        unit = self.ctx.state.unit
        self.pane.toggle_zoom(unit.channel if unit is not None and unit.layer == self.ctx.state.layer else None)

    def reset(self) -> None:
        self.pane.reset_zoom()
        self.ctx.state.reset("norm", "gamma")

    # -- drawing
    def _sync_modes(self, *_args) -> None:
        self.pane.set_modes(self.ctx.state.norm, self.ctx.state.gamma)

    def _sync_selection(self, *_args) -> None:
        unit = self.ctx.state.unit
        self.pane.set_selected(unit.channel if unit is not None and unit.layer == self.ctx.state.layer else None)

    def _labels(self, layer: str) -> list[str] | None:
        return self.ctx.vm.categories if self.ctx.vm.is_class_layer(layer) else None

    def paint(self, res: FrameResult) -> None:
        self.pane.note = title_note(res.interventions)  # an intervened network is never taken for the real one
        self.pane.show_grid(res.grid, res.layer, self._labels(res.layer))

    def _show_patterns(self, content: PatternContent | None) -> None:
        if content is None:
            return
        self.pane.show_patterns(content.layer, list(content.images), list(content.labels or []) or None,
                                content.status)
        self._sync_selection()

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return [Panel("grid", "Activations", self.pane, area="central")]

    def keys(self) -> list[Key]:
        arrows = ((Qt.Key.Key_Left, -1, 0), (Qt.Key.Key_Right, 1, 0), (Qt.Key.Key_Up, 0, -1),
                  (Qt.Key.Key_Down, 0, 1))
        keys = [Key((k,), lambda dx=dx, dy=dy: self.move_selection(dx, dy)) for k, dx, dy in arrows]
        keys[0].label, keys[0].help = "arrows", "move the selected unit in the grid"
        return keys + [
            Key(("t",), lambda: self.cycle_boost(1), "t / T",
                "boosts: toggle whole-layer / per-channel normalization; cycle gamma"),
            Key(("T",), lambda: self.cycle_boost(-1)),
            Key(("z", "Z"), self.toggle_zoom, "z", "zoom the grid to the selected unit (again: whole grid)"),
        ]

    def snapshot_images(self) -> dict:
        res = self.ctx.live.shown
        out: dict = {}
        if self.pane.shown_kind == "pattern":
            img = self.pane.grid_image()
            if img is not None and img.ndim == 3:
                out["patterns"] = np.ascontiguousarray(img[..., :3])
        if res is not None:
            lut = self.pane.image.lut
            rgb = lut[res.grid.image] if lut is not None and len(lut) == 256 else res.grid.image
            out["grid"] = np.ascontiguousarray(rgb[..., :3]) if rgb.ndim == 3 else rgb
        return out

    def shutdown(self) -> None:
        self.ctx.settings.setValue(SETTINGS_CMAP, self.pane.cmap)
