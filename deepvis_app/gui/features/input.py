"""The input pane: the frame exactly as the network saw it, with the inference rate and latency; with a heat map on
(`state.overlay`), the frame's CAM drawn over it (inferno, opacity growing with the value, as `deepvis attribute
--overlay` draws it)."""

from __future__ import annotations

from ...methods.cam import CAM_METHODS
from ...pipeline import FrameResult
from ...render import overlay_heat
from ..feature import Feature, Panel
from ..widgets.input_pane import InputPane


class InputFeature(Feature):
    name = "input"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.pane = InputPane()
        ctx.live.painted.connect(self.paint)
        ctx.live.stats_changed.connect(lambda _s: self.pane.set_caption(self.caption()))
        ctx.state.events.camera_frozen.connect(lambda *_: self.pane.set_caption(self.caption()))

    def caption(self) -> str:
        parts = [f"{self.ctx.live.stats['inference_fps']:.1f} fps"]
        if self.ctx.state.camera_frozen:
            parts.append("FROZEN")
        res = self.ctx.live.shown
        if res is not None and res.interventions:
            parts.append("INTERVENED")
        ov = res.overlay if res is not None else None
        if ov is not None:
            cats = self.ctx.vm.categories
            parts.append(f"{CAM_METHODS[ov.method].title}: {cats[ov.cls] if ov.cls < len(cats) else ov.cls}")
        return "  ".join(parts)

    def paint(self, res: FrameResult) -> None:
        # the blend costs about 1.5 ms at 224 px (measured in the window): the map itself came from the worker
        image = res.image if res.overlay is None else overlay_heat(res.image, res.overlay.image)
        self.pane.show_frame(image, res.frame_id, self.caption(), f"frame {res.frame_id}  {res.latency * 1000:.0f} ms")

    def panels(self) -> list[Panel]:
        return [Panel("input", "Input", self.pane, area="left")]

    def snapshot_images(self) -> dict:
        res = self.ctx.live.shown
        if res is None:
            return {}
        return {"input": res.image} | ({"input_heat": self.pane.canvas.array} if res.overlay is not None else {})
