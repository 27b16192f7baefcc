"""Pattern mode (p): the grid shows each unit's cached optimized image instead of its live activation (clicks
still select units). "optimize layer" fills the cache for the whole layer unit by unit in the background;
File > Open pattern folder uses a `deepvis optimize-layer --out DIR` folder where the cache has no image.
Every cache and folder read runs as a job (the GUI thread never touches the disk); the tiles fill in when the
layer's images have been read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QCheckBox, QFileDialog, QPushButton

from ...optimize.unit_images import cached_unit_image, unit_objective
from ...state import OptimizedImage, PatternContent
from ...zoo import DEFAULT_MODEL
from ..feature import Feature, Key, MenuItem, Panel
from ..widgets.panel import small_progress

SLOT = "optimize-layer"  # the optimize-layer job (and its model copy)
READ_SLOT = "pattern-images"  # reading the shown layer's cached images
FOLDER_SLOT = "pattern-folder"  # checking a folder the user opened


class PatternsFeature(Feature):
    name = "patterns"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        from ...optimize.unit_images import app_settings

        self.steps, self.size = app_settings()
        self.images: list[np.ndarray | None] = []  # per unit of `self.layer`
        self._key: tuple | None = None  # (model, layer, folder) that `images` belongs to
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
        st.events.pattern_folder.connect(lambda *_: self.refresh())
        ctx.live.model_changed.connect(lambda _vm: self.refresh())
        ctx.events.optimized_image.connect(self._on_image)

    @property
    def on(self) -> bool:
        return self.ctx.state.pattern_mode

    @property
    def layer_job_running(self) -> bool:
        return self.ctx.jobs.current(SLOT) is not None

    @property
    def loading(self) -> bool:
        """The shown layer's cached images are being read."""
        return self.ctx.jobs.current(READ_SLOT) is not None

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
        else:
            self.ctx.jobs.cancel(READ_SLOT)

    def status(self) -> str:
        n, total = self.cached_count, len(self.images)
        layer = self._key[1] if self._key else self.ctx.state.layer
        if self.loading:
            return f"pattern mode: reading the cached images of {layer}..."
        text = f"pattern mode: {n} of {total} units have an optimized image"
        if n < total:
            text += " (the others show their live activation)"
            if self.layer_job_running:
                text += " \u2014 optimizing this layer now (optimize layer again stops it)"
            else:
                model = "" if self.ctx.vm.name == DEFAULT_MODEL else f" --model {self.ctx.vm.name}"
                text += (f" \u2014 run `deepvis optimize-layer{model} --layer {layer} --out DIR` or press "
                         f"'optimize layer'")
        return text

    def _reader(self, layer: str):
        """A function (for a job) that reads `layer`'s cached image of every unit: the model, settings and folder
        are taken now, on the GUI thread; only the reads happen in the job."""
        vm, steps, size, folder = self.ctx.vm, self.steps, self.size, self.ctx.state.pattern_folder

        def read(channel: int):
            return cached_unit_image(vm, layer, channel, steps=steps, size=size, folder=folder)
        return read

    def refresh(self) -> None:
        """Read the current layer's images in the background when the model, layer or opened folder changed (the
        tiles show the live activations meanwhile). How many are cached is said once, above the grid (not also
        in the banner and the status bar)."""
        if not self.on:
            return
        ctx = self.ctx
        layer = ctx.state.layer
        key = (ctx.vm.name, layer, ctx.state.pattern_folder)
        if key == self._key:
            self._publish()
            return
        self._key = key
        channels = ctx.vm.channels(layer)
        self.images = [None] * channels
        read = self._reader(layer)

        def work(abort):
            images = []
            for c in range(channels):
                if abort.is_set():
                    return None
                images.append(read(c))
            return images

        def done(images) -> None:
            if images is None or self._key != key:
                return
            # an image another job finished while we read stays (the cache may have been read before it was made)
            self.images = [new if new is not None else old for new, old in zip(images, self.images, strict=True)]
            self._publish()

        ctx.jobs.start(READ_SLOT, work, on_done=done,
                       on_error=lambda msg: ctx.notify(f"pattern mode: cannot read the cache: {msg}", "error"))
        self._publish()

    def _publish(self) -> None:
        if self._key is None:
            return
        layer = self._key[1]
        labels = tuple(self.ctx.vm.categories) if self.ctx.vm.is_class_layer(layer) else None
        self.ctx.events.patterns.emit(PatternContent(layer, tuple(self.images), labels, self.status()))

    def _on_image(self, made: OptimizedImage) -> None:
        if self._key is not None and self._key[:2] == (made.model, made.layer) and made.channel < len(self.images):
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
        pattern mode (and in the inspector when selected) at once. The job finds which units are missing."""
        from ...optimize import Cancelled, optimize

        ctx = self.ctx
        layer = layer or ctx.state.layer
        model = ctx.vm.name
        channels = ctx.vm.channels(layer)
        read = self._reader(layer)
        steps, size = self.steps, self.size
        load = ctx.live.model_copy_loader(SLOT)
        plan: dict = {}

        def work(abort):
            todo = [c for c in range(channels) if not abort.is_set() and read(c) is None]
            yield ("plan", len(todo))
            if not todo or abort.is_set():
                return 0, len(todo)
            vm = load()
            done = 0
            for c in todo:
                if abort.is_set():
                    break
                try:
                    res = optimize(vm, unit_objective(vm, layer, c), steps=steps, size=size, abort=abort,
                                   yield_every=10**9)
                except Cancelled:
                    break
                done += 1
                yield c, res.image, done
            return done, len(todo)

        def progress(value) -> None:
            if value[0] == "plan":
                plan["total"] = total = value[1]
                self.progress.setRange(0, max(1, total))
                if total:
                    ctx.notify(f"optimizing {layer}: 0/{total} units (loading a model copy)...", "info", 5)
                return
            c, image, done = value
            self.progress.setValue(done)
            ctx.notify(f"optimizing {layer}: {done}/{plan.get('total', '?')} units (unit {c} done)", "info", 3)
            ctx.events.optimized_image.emit(OptimizedImage(model, layer, c, image))

        def finished(result) -> None:
            done, total = result
            if total == 0:
                self._job_finished(f"optimize layer: every unit of {layer} is cached already", seconds=6)
            else:
                self._job_finished(f"optimize layer {layer}: {done} of {total} units done")

        ctx.jobs.start(SLOT, work, on_yield=progress, on_done=finished,
                       on_error=lambda msg: self._job_finished(f"optimize layer failed: {msg}", "error"))
        self.progress.setRange(0, 0)  # busy until the job knows how many units are missing
        self.progress.show()
        self.button.setText("stop optimizing")
        ctx.notify(f"optimize layer {layer}: looking for units without an image...", "info", 5)
        self._publish()

    def _job_finished(self, message: str, level: str = "info", seconds: float = 10) -> None:
        self.progress.hide()
        self.button.setText("optimize layer")
        self.ctx.notify(message, level, seconds)
        self._publish()

    # -- pattern folders
    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.box.window(), "Open pattern folder (deepvis optimize-layer "
                                                                   "--out)")
        if path:
            self.open_folder(path)

    def open_folder(self, path: str | Path, layer: str | None = None) -> None:
        """Use an `optimize-layer` folder (unit_NNNN.png) for `layer` (default: the current one) where the cache
        has no image, and turn pattern mode on (once a job has checked that the folder holds such images)."""
        folder = Path(path)
        layer = layer or self.ctx.state.layer

        def opened(found: bool) -> None:
            if not found:
                self.ctx.notify(f"no unit_NNNN.png images in {folder} (made by deepvis optimize-layer --out)",
                                "error")
                return
            self.ctx.state.pattern_folder = (layer, folder)
            self.set_pattern_mode(True)

        self.ctx.jobs.start(FOLDER_SLOT, lambda _abort: any(folder.glob("unit_*.png")), on_done=opened,
                            on_error=lambda msg: self.ctx.notify(f"cannot open {folder}: {msg}", "error"))

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
        for slot in (SLOT, READ_SLOT, FOLDER_SLOT):
            self.ctx.jobs.cancel(slot)
