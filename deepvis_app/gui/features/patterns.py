"""Pattern mode (p): the grid shows each unit's cached optimized image instead of its live activation (clicks
still select units). "optimize layer" fills the cache for the whole layer unit by unit in the background;
File > Open pattern folder uses a `deepvis optimize-layer --out DIR` folder where the cache has no image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QCheckBox, QFileDialog, QPushButton

from ...optimize.unit_images import cached_unit_image, unit_objective
from ...state import OptimizedImage, PatternContent
from ..feature import Feature, Key, MenuItem, Panel
from ..widgets.panel import small_progress

SLOT = "optimize-layer"


class PatternsFeature(Feature):
    name = "patterns"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        from ...optimize.unit_images import app_settings

        self.steps, self.size = app_settings()
        self.images: list[np.ndarray | None] = []  # per unit of `self.layer`
        self._key: tuple | None = None  # (model, layer) that `images` belongs to
        self.box = QCheckBox("patterns")
        self.box.setToolTip("pattern mode (p): each unit's cached optimized image instead of its live activation")
        self.box.toggled.connect(self.set_pattern_mode)
        self.button = QPushButton("optimize layer")
        self.button.setToolTip("fill the optimized-image cache for every unit of this layer, one by one in the "
                               "background (click again to stop)")
        self.button.clicked.connect(self.toggle_optimize_layer)
        self.progress = small_progress()
        self.mode_action = self.action("Pattern mode  (p)", lambda: self.set_pattern_mode(not self.on),
                                       checkable=True)
        self.layer_action = self.action("Optimize layer (fill the pattern cache)", self.toggle_optimize_layer)
        st = ctx.state
        st.events.pattern_mode.connect(self._mode_changed)
        st.events.layer.connect(lambda *_: self.refresh())
        st.events.pattern_folder.connect(lambda *_: self.refresh(force=True))
        ctx.live.model_changed.connect(lambda _vm: self.refresh())
        ctx.events.optimized_image.connect(self._on_image)

    @property
    def on(self) -> bool:
        return self.ctx.state.pattern_mode

    @property
    def layer_job_running(self) -> bool:
        return self.ctx.jobs.current(SLOT) is not None

    @property
    def cached_count(self) -> int:
        return sum(im is not None for im in self.images)

    def set_pattern_mode(self, on: bool) -> None:
        self.ctx.state.pattern_mode = bool(on)

    def _mode_changed(self, on: bool, *_old) -> None:
        for widget in (self.box, self.mode_action):
            widget.blockSignals(True)
            widget.setChecked(on)
            widget.blockSignals(False)
        self._key = None
        if on:
            self.refresh()
            self.ctx.notify(self.status(), "info", 10)

    def status(self) -> str:
        n, total = self.cached_count, len(self.images)
        layer = self._key[1] if self._key else self.ctx.live.layer
        text = f"pattern mode: {n} of {total} units cached"
        if n < total:
            if self.layer_job_running:
                text += " \u2014 optimizing this layer now (optimize layer again stops it)"
            else:
                model = "" if self.ctx.vm.name == "efficientnet_lite0" else f" --model {self.ctx.vm.name}"
                text += (f" \u2014 run `deepvis optimize-layer{model} --layer {layer} --out DIR` or press "
                         f"'optimize layer'")
        return text

    def refresh(self, force: bool = False) -> None:
        """Look the current layer's images up (only when the layer or model changed, or `force`)."""
        if not self.on:
            return
        ctx = self.ctx
        layer = ctx.live.layer
        key = (ctx.vm.name, layer)
        if key != self._key or force:
            self._key = key
            self.images = [self._cached(layer, c) for c in range(ctx.channels(layer))]
        self._publish()

    def _cached(self, layer: str, channel: int):
        return cached_unit_image(self.ctx.vm, layer, channel, steps=self.steps, size=self.size,
                                 folder=self.ctx.state.pattern_folder)

    def _publish(self) -> None:
        if self._key is None:
            return
        layer = self._key[1]
        labels = tuple(self.ctx.vm.categories) if self.ctx.is_class_layer(layer) else None
        self.ctx.events.patterns.emit(PatternContent(layer, tuple(self.images), labels, self.status()))

    def _on_image(self, made: OptimizedImage) -> None:
        if self._key == (made.model, made.layer) and made.channel < len(self.images):
            self.images[made.channel] = made.image
            self._publish()

    # -- the optimize-layer job
    def toggle_optimize_layer(self) -> None:
        """Start filling the cache for every unit of the current layer, or stop the running job."""
        if self.layer_job_running:
            self.ctx.jobs.cancel(SLOT)
            self._job_finished("optimize layer: stopped")
            return
        self.start_optimize_layer()

    def start_optimize_layer(self, layer: str | None = None) -> None:
        """Optimize the layer's units that have no cached image yet, one by one; each finished unit appears in
        pattern mode (and in the inspector when selected) at once."""
        from ...optimize import Cancelled, optimize

        ctx = self.ctx
        layer = layer or ctx.live.layer
        todo = [c for c in range(ctx.channels(layer)) if self._cached(layer, c) is None]
        if not todo:
            ctx.notify(f"optimize layer: every unit of {layer} is cached already", "info", 6)
            return
        model = ctx.vm.name
        objectives = {c: unit_objective(ctx.vm, layer, c) for c in todo}
        steps, size, total = self.steps, self.size, len(todo)
        load = ctx.live.model_copy_loader()

        def work(abort):
            vm = load()
            done = 0
            for c in todo:
                if abort.is_set():
                    break
                try:
                    res = optimize(vm, objectives[c], steps=steps, size=size, abort=abort, yield_every=10**9)
                except Cancelled:
                    break
                done += 1
                yield c, res.image, done
            return done

        def progress(value) -> None:
            c, image, done = value
            self.progress.setValue(done)
            ctx.notify(f"optimizing {layer}: {done}/{total} units (unit {c} done)", "info", 3)
            ctx.events.optimized_image.emit(OptimizedImage(model, layer, c, image))

        ctx.jobs.start(SLOT, work, on_yield=progress,
                       on_done=lambda done: self._job_finished(f"optimize layer {layer}: {done} of {total} "
                                                               f"units done"),
                       on_error=lambda msg: self._job_finished(f"optimize layer failed: {msg}", "error"))
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.progress.show()
        self.button.setText("stop optimizing")
        ctx.notify(f"optimizing {layer}: 0/{total} units (loading a model copy)...", "info", 5)
        self._publish()

    def _job_finished(self, message: str, level: str = "info") -> None:
        self.progress.hide()
        self.button.setText("optimize layer")
        self.ctx.notify(message, level, 10)
        self._publish()

    # -- pattern folders
    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.box.window(), "Open pattern folder (deepvis optimize-layer "
                                                                   "--out)")
        if path:
            self.open_folder(path)

    def open_folder(self, path: str | Path, layer: str | None = None) -> None:
        """Use an `optimize-layer` folder (unit_NNNN.png) for `layer` (default: the current one) where the cache
        has no image, and turn pattern mode on."""
        folder = Path(path)
        if not any(folder.glob("unit_*.png")):
            self.ctx.notify(f"no unit_NNNN.png images in {folder} (made by deepvis optimize-layer --out)", "error")
            return
        self.ctx.state.pattern_folder = (layer or self.ctx.live.layer, folder)
        self.set_pattern_mode(True)

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return [Panel("patterns-toggle", "", self.box, area="in:grid"),
                Panel("patterns-job", "", self.button, area="in:grid")]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&File", self.action("Open pattern folder...", self.open_folder_dialog)),
                MenuItem("&View", self.mode_action), MenuItem("&View", self.layer_action)]

    def keys(self) -> list[Key]:
        return [Key(("p", "P"), lambda: self.set_pattern_mode(not self.on), "p",
                    "pattern mode: the layer's cached optimized images instead of live activations")]

    def status_widgets(self) -> list:
        return [self.progress]

    def snapshot_state(self) -> dict:
        return {"pattern_mode": self.on, "patterns_cached": self.cached_count if self.on else None}

    def shutdown(self) -> None:
        self.ctx.jobs.cancel(SLOT)
