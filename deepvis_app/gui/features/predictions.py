"""Predictions: the top-5 classes with bars and their probabilities over time. Clicking a class selects that
class's unit on the class layer (the inspector explains it) and asks for its optimized image."""

from __future__ import annotations

import time

from ...interventions import title_note
from ...pipeline import FrameResult
from ...values import Unit
from ..feature import Feature, Panel
from ..widgets.predictions_pane import PredictionsPane

PLOT_EVERY_S = 0.1  # the bars
CURVES_EVERY_S = 0.2  # the history plot (15 s wide: a 5 Hz redraw moves it a few pixels; ~3 ms each)


class PredictionsFeature(Feature):
    name = "predictions"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.pane = PredictionsPane()
        self._last_plot = self._last_curves = 0.0
        self.pane.class_clicked.connect(lambda idx, _name: self.choose_class(idx))
        ctx.live.painted.connect(self.paint)
        ctx.live.model_changed.connect(lambda _vm: self.pane.clear())

    def choose_class(self, index: int) -> None:
        layer = self.ctx.vm.class_layer
        if layer is not None and 0 <= index < self.ctx.vm.channels(layer):
            self.ctx.state.unit = Unit(layer, index)
        self.ctx.events.class_chosen.emit(index)

    def paint(self, res: FrameResult) -> None:
        self.pane.set_note(title_note(res.interventions))  # these are the intervened network's classes
        self.pane.add(res.predictions, res.t_done)
        now = time.perf_counter()
        if now - self._last_plot > PLOT_EVERY_S:
            self._last_plot = now
            curves = now - self._last_curves > CURVES_EVERY_S
            if curves:
                self._last_curves = now
            self.pane.refresh(curves=curves)

    def panels(self) -> list[Panel]:
        return [Panel("predictions", "Predictions", self.pane, area="right", pinned=True)]

    def snapshot_state(self) -> dict:
        res = self.ctx.live.shown
        return {"predictions": [{"index": i, "name": n, "prob": p} for i, n, p in (res.predictions if res else [])]}
