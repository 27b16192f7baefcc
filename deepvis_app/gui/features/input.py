"""The input pane: the frame exactly as the network saw it, with the inference rate and latency."""

from __future__ import annotations

from ...pipeline import FrameResult
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
        return "  ".join(parts)

    def paint(self, res: FrameResult) -> None:
        self.pane.show_frame(res.image, res.frame_id, self.caption(),
                             f"frame {res.frame_id}  {res.latency * 1000:.0f} ms")

    def panels(self) -> list[Panel]:
        return [Panel("input", "Input", self.pane, area="left")]

    def snapshot_images(self) -> dict:
        res = self.ctx.live.shown
        return {"input": res.image} if res is not None else {}
