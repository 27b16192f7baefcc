"""Image lab: the lecture's images made by optimizing the image itself, on the camera frame.

- Invert: reconstruct the frame from its code at the shown layer (Mahendran & Vedaldi): how much of the picture
  the layer still holds.
- Dream: amplify what the shown layer already sees in the frame (DeepDream, octaves); "live dream" dreams every
  new frame a few steps, carrying the previous dream over, with the rate shown.
- Style: paint the frame in the style of a chosen image (Gatys et al.; L-BFGS).
Each runs in the background on a private model copy, the image evolving in the panel; Stop (or a new run)
cancels it. Results are cached by the core, so repeating a run is instant.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
)

from ...pipeline import FrameResult
from ...sources import read_image
from ..feature import TOOLS, Feature, MenuItem, Panel
from ..widgets.canvas import ImageCanvas
from ..widgets.frame_tag import FrameTag
from ..widgets.inspector_pane import titled
from ..widgets.panel import ToolPanel, assemble, control_row

SLOT, LIVE_SLOT, STYLE_SLOT = "imagelab", "dream-live", "style-image"
TECHNIQUES = ("invert", "dream", "style")
DEFAULT_STEPS = {"invert": 120, "dream": 10, "style": 60}
# what the steps box counts: DeepDream's steps are per octave (the caption counts all of them)
STEPS_LABELS = {"invert": "steps", "dream": "steps/octave", "style": "evaluations"}
HINTS = {
    "invert": "reconstruct the frame from its code at the shown layer: deeper layers keep less of the picture",
    "dream": "amplify what the shown layer sees in the frame (lower layers: strokes and edges; higher: parts)",
    "style": "paint the frame in the style of the chosen image (L-BFGS, the model's style layers)",
}


class ImageLabFeature(Feature):
    name = "imagelab"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.style_image: np.ndarray | None = None
        self.style_name = ""
        self.last_step = None  # the newest ImageStep shown
        self.live_rate = 0.0  # dreamed frames per second in live dream
        self._previous: np.ndarray | None = None  # the last live dream (carried into the next frame)
        self._live_t: list[float] = []
        self.panel = self._build()
        ctx.live.painted.connect(self._on_frame)
        ctx.live.painted.connect(self.tag.refresh)

    def _build(self) -> ToolPanel:
        w = ToolPanel()
        self.technique = QComboBox()
        self.technique.addItems(TECHNIQUES)
        self.technique.currentTextChanged.connect(self._technique_changed)
        self.steps = QSpinBox()
        self.steps.setRange(1, 2000)
        self.steps.setValue(DEFAULT_STEPS["invert"])
        self.steps.setToolTip("optimizer steps (dream: per octave; style: function evaluations)")
        self.steps_label = QLabel(STEPS_LABELS["invert"])
        self.run_button = QPushButton("run on this frame")
        self.run_button.clicked.connect(self.run)
        self.stop_button = QPushButton("stop")
        self.stop_button.clicked.connect(self.stop)
        self.style_button = QPushButton("style image...")
        self.style_button.setToolTip("choose the image whose style (textures, colours) is painted onto the frame")
        self.style_button.clicked.connect(self.choose_style_dialog)
        self.live_box = QCheckBox("live dream")
        self.live_box.setToolTip("dream every new frame a few steps at the shown layer (the dream builds up on a "
                                 "steady camera)")
        self.live_box.toggled.connect(self._live_toggled)
        self.progress = QProgressBar()
        self.progress.setMaximumHeight(12)
        self.source = ImageCanvas("the frame", smooth=True)
        self.result = ImageCanvas("press run", smooth=True)
        self.style_canvas = ImageCanvas("no style image", smooth=True)
        self.hint = QLabel(HINTS["invert"])
        self.hint.setWordWrap(True)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.tag = FrameTag("made from")
        grid = self.grid = QGridLayout()
        grid.addWidget(titled("frame", self.source), 0, 0)
        grid.addWidget(titled("result", self.result), 0, 1)
        self.style_box = titled("style", self.style_canvas)
        grid.addWidget(self.style_box, 0, 2)
        for c in range(3):
            grid.setColumnStretch(c, 1)
        assemble(w, [control_row(self.technique, self.steps_label, self.steps, self.run_button, self.stop_button,
                                 self.live_box, self.style_button)], grid, [self.progress, self.tag, self.info])
        w.layout().insertWidget(1, self.hint)
        self._technique_changed("invert")
        return w

    # -- choices
    def _technique_changed(self, name: str) -> None:
        self.steps.setValue(DEFAULT_STEPS[name])
        self.steps_label.setText(STEPS_LABELS[name])
        self.hint.setText(HINTS[name])
        style = name == "style"
        self.style_box.setVisible(style)
        self.grid.setColumnStretch(2, 1 if style else 0)  # no empty third column beside frame and result
        self.style_button.setVisible(style)
        self.live_box.setVisible(name == "dream")

    def set_style_image(self, rgb: np.ndarray, name: str = "") -> None:
        self.style_image, self.style_name = rgb, name
        self.style_canvas.set_image(rgb)
        self.style_canvas.caption = name

    def choose_style_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.panel.window(), "Style image", "",
                                              "Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)")
        if path:
            self.open_style_image(path)

    def open_style_image(self, path: str) -> None:
        """Read a style image in the background (the GUI thread never reads the disk), then use it."""
        name = Path(path).name
        self.ctx.jobs.start(STYLE_SLOT, lambda _abort: read_image(path),
                            on_done=lambda rgb: self.set_style_image(rgb, name),
                            on_error=lambda msg: self.ctx.notify(msg, "error"))

    # -- runs
    def run(self) -> None:
        res = self.ctx.live.shown
        if res is None:
            self.info.setText("no frame yet")
            return
        self.live_box.setChecked(False)
        technique = self.technique.currentText()
        if technique == "style" and self.style_image is None:
            self.info.setText("choose a style image first (style image...)")
            return
        frame, layer, steps = res.image, self.ctx.state.layer, int(self.steps.value())
        style = self.style_image
        load = self.ctx.live.model_copy_loader(SLOT)
        self.source.set_image(frame)
        self.tag.set_frame(res)
        self.result.clear(f"{technique}: starting...")
        self.progress.setRange(0, steps)
        self.progress.setValue(0)

        def work(abort):
            vm = load()
            if technique == "invert":
                from ...optimize.invert import iter_invert

                gen = iter_invert(vm, frame, layer, steps=steps, abort=abort, yield_every=max(1, steps // 30))
            elif technique == "dream":
                from ...optimize.dream import iter_dream

                gen = iter_dream(vm, frame, layer, steps=steps, abort=abort)
            else:
                from ...optimize.style import iter_style

                gen = iter_style(vm, frame, style, steps=steps, abort=abort, size=224)
            last = None
            for step in gen:
                last = step
                yield step
            if technique == "invert" and last is not None and last.result is not None:
                from ...optimize.invert import top1

                return last, top1(vm, last.result.image)  # on the private copy, never the live model
            return last, None

        self.ctx.jobs.start(SLOT, work, on_yield=lambda s: self._show(technique, layer, s),
                            on_done=lambda out: self._done(technique, layer, *out),
                            on_error=lambda msg: self.info.setText(f"{technique} failed: {msg}"))

    def stop(self) -> None:
        self.ctx.jobs.cancel(SLOT)
        self.live_box.setChecked(False)
        self.info.setText("stopped")

    def _show(self, technique: str, layer: str, step) -> None:
        self.last_step = step
        self.result.set_image(step.image)
        self.result.caption = self.step_caption(technique, step)
        self.progress.setRange(0, max(1, step.steps))
        self.progress.setValue(step.step)
        losses = ", ".join(f"{k} {v:.3g}" for k, v in step.losses.items())
        self.info.setText(f"{technique} at {layer}: {losses}")

    def step_caption(self, technique: str, step) -> str:
        """The result's badge: DeepDream counts steps over all octaves, so it says how they add up to the box's
        steps per octave ("step 25/40: 10 per octave x 4")."""
        if step.steps == 0:
            return "cached"  # a finished result read back: no steps were run
        text = f"step {step.step}/{step.steps}"
        per = int(self.steps.value())
        if technique == "dream" and per > 0 and step.steps > per and step.steps % per == 0:
            text += f": {per} per octave \u00d7 {step.steps // per}"
        return text

    def _done(self, technique: str, layer: str, step, top: tuple[int, float] | None) -> None:
        if step is None:
            return
        self._show(technique, layer, step)
        result = step.result
        extra = ""
        if technique == "invert" and result is not None and top is not None:
            cls, prob = top
            extra = (f"; relative code error {result.code_error:.3f}; the reconstruction is classified "
                     f"{self.ctx.vm.categories[cls]} ({prob * 100:.0f}%)")
        if getattr(result, "cached", False):
            extra += " (cached)"
        self.info.setText(self.info.text() + extra)

    # -- live dream
    def _live_toggled(self, on: bool) -> None:
        self._previous, self._live_t = None, []
        if not on:
            self.ctx.jobs.cancel(LIVE_SLOT)

    def _on_frame(self, res: FrameResult) -> None:
        if not self.live_box.isChecked() or not self.panel.isVisible():
            return
        if self.ctx.jobs.current(LIVE_SLOT) is not None:
            return  # still dreaming the previous frame: frames in between are skipped
        from ...optimize.dream import dream_frame

        load = self.ctx.live.model_copy_loader(LIVE_SLOT)
        frame, layer, previous = res.image, self.ctx.state.layer, self._previous

        def work(_abort):
            return dream_frame(load(), frame, layer, steps=2, previous=previous, carry=0.5)

        self.ctx.jobs.start(LIVE_SLOT, work, on_done=lambda img: self._live_done(layer, img, res),
                            on_error=lambda msg: (self.live_box.setChecked(False),
                                                  self.info.setText(f"live dream failed: {msg}")))

    def _live_done(self, layer: str, image: np.ndarray, res: FrameResult) -> None:
        self._previous = image
        self.source.set_image(res.image)  # frame and dream side by side from the same frame
        self.result.set_image(image)
        self.tag.set_frame(res)
        now = time.monotonic()
        self._live_t = [t for t in self._live_t if now - t < 5.0] + [now]
        span = self._live_t[-1] - self._live_t[0]
        self.live_rate = (len(self._live_t) - 1) / span if span > 0 else 0.0
        self.result.caption = f"live dream {self.live_rate:.1f} frames/s"
        self.info.setText(f"live dream at {layer}: 2 steps per frame, half of the previous dream carried over")

    # -- what the window gathers
    def open(self, technique: str | None = None) -> None:
        if technique:
            self.technique.setCurrentText(technique)
        self.show_panel("imagelab")

    def panels(self) -> list[Panel]:
        return [Panel("imagelab", "Image lab", self.panel, area="right", visible=False, tab_with=TOOLS)]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Feature inversion", lambda: self.open("invert"))),
                MenuItem("&Tools", self.action("DeepDream", lambda: self.open("dream"))),
                MenuItem("&Tools", self.action("Neural style", lambda: self.open("style")))]

    def snapshot_images(self) -> dict:
        return {"imagelab": self.result.array} if self.panel.isVisible() and self.result.array is not None else {}

    def shutdown(self) -> None:
        self.ctx.jobs.cancel(SLOT)
        self.ctx.jobs.cancel(LIVE_SLOT)
