"""The layer list (curated layers with titles first, then all layers with shapes); u/o step through it.

Entering a layer keeps the selected unit's number (clamped) unless the unit is frozen; entering the class layer
selects the top-1 class of the newest frame instead (a unit number of another layer means nothing there)."""

from __future__ import annotations

from ...state import clamp_unit
from ...values import Unit
from ..feature import Feature, Key, Panel
from ..widgets.layers_pane import LayersPane


class LayersFeature(Feature):
    name = "layers"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.pane = LayersPane()
        self.pane.set_model(ctx.vm)
        self.pane.set_current(ctx.state.layer)
        self.pane.layer_chosen.connect(self.set_layer)
        ctx.state.events.layer.connect(lambda *_: self.pane.set_current(ctx.state.layer))
        ctx.live.model_changed.connect(self._model_changed)

    def _model_changed(self, vm) -> None:
        self.pane.set_model(vm)
        self.pane.set_current(self.ctx.state.layer)

    def set_layer(self, layer: str) -> None:
        ctx = self.ctx
        if layer == ctx.state.layer:
            return
        st = ctx.state
        unit = st.unit
        if not st.unit_frozen:
            shown = ctx.live.shown
            if ctx.vm.is_class_layer(layer) and shown is not None and shown.predictions:
                unit = Unit(layer, int(shown.predictions[0][0]))  # the class the network sees now
            elif unit is not None:
                unit = clamp_unit(layer, unit.channel, ctx.vm.channels(layer))
        st.update(layer=layer, unit=unit)

    def step_layer(self, step: int) -> None:
        self.set_layer(self.pane.neighbour(self.ctx.state.layer, step))

    def panels(self) -> list[Panel]:
        return [Panel("layers", "Layers", self.pane, area="left")]

    def keys(self) -> list[Key]:
        return [Key(("u",), lambda: self.step_layer(-1), "u / o", "previous / next layer"),
                Key(("o",), lambda: self.step_layer(1))]
