"""The optimized image in the inspector: the selected unit's cached image at once, or "optimize" to synthesize
it in the background (the image evolves on screen); a class clicked in the predictions gets its class image.
Selecting another unit cancels the running job. Finished images are announced (`AppEvents.optimized_image`), so
pattern mode fills the tile; images other jobs finish appear here when they are the selected unit's. The cache is
read by a job of the same slot (the GUI thread never reads the disk), so starting an optimization replaces it."""

from __future__ import annotations

from collections import deque

from PySide6.QtWidgets import QPushButton

from ...optimize.unit_images import app_settings, cached_unit_image, unit_objective
from ...rectifiers import clip_of
from ...state import OptimizedImage
from ..feature import Feature, Panel
from ..widgets.canvas import ImageCanvas
from ..widgets.inspector_pane import titled

SLOT = "optimize"  # the cache look-up and the optimization (and its model copy)
TITLE = "optimized image"
HINT = "press optimize to synthesize\nthis unit's preferred image"


def final_caption(value: float, result) -> str:
    """What the finished image reached. On a capped rectifier (ReLU6) the optimized value is the one before the
    clip, so the caption says so: "pre-clip value 14.2 (clipped 6)" -- a bare "value 6" would hide why."""
    if getattr(result, "pre_clip", False):
        return f"pre-clip value {value:.3g} (clipped {result.clipped_value:.3g})"
    return f"value {value:.3g}"


class OptimizeFeature(Feature):
    name = "optimize"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.steps, self.size = app_settings()
        self.canvas = ImageCanvas("Optimized image:\nselect a unit", smooth=True, min_size=40)
        self.hint = HINT
        self.button = QPushButton("optimize")
        self.button.setToolTip("synthesize an image that maximizes this unit (runs in the background)")
        self.button.clicked.connect(self.start_unit)
        self.button.setEnabled(False)
        self.box = titled(TITLE, self.canvas)
        self.box.layout().addWidget(self.button)
        self.running: str | None = None  # what the canvas is being filled with ("LAYER:UNIT" or "class:N")
        self.log: deque[tuple[str, int, int]] = deque(maxlen=200)  # (what, step, steps) shown in the canvas
        self._anchor: tuple | None = None  # (model, unit) selected when the shown image was chosen
        ctx.state.events.unit.connect(self.follow_selection)
        ctx.live.model_changed.connect(lambda _vm: self.follow_selection())
        ctx.events.class_chosen.connect(self.start_class)
        ctx.events.optimized_image.connect(self._on_image)
        self.follow_selection()

    @property
    def title(self) -> str:
        return self.box.title_label.text()

    @property
    def job(self):
        """The running optimization job (None when idle)."""
        return self.ctx.jobs.current(SLOT)

    @property
    def looking_up(self) -> bool:
        """The selected unit's cached image is being read."""
        return self.running is None and self.ctx.jobs.current(SLOT) is not None

    def follow_selection(self, *_args) -> None:
        """Enable the button; when the selected unit changed, cancel the running optimization and show the new
        unit's cached image (read in the background; the hint until it is found)."""
        ctx = self.ctx
        unit = ctx.state.unit
        self.button.setEnabled(unit is not None)
        current = (ctx.vm.name, str(unit))
        if self._anchor == current:
            return
        ctx.jobs.cancel(SLOT)  # the user moved on: stop spending CPU on the old unit / class
        self._anchor, self.running = current, None
        self.box.title_label.setText(TITLE)
        self.canvas.caption = ""
        self.canvas.clear(self.hint if unit is not None else "Optimized image:\nselect a unit")
        if unit is None:
            return
        vm, steps, size, folder = ctx.vm, self.steps, self.size, ctx.state.pattern_folder
        layer, channel = unit.layer, unit.channel

        def found(image) -> None:
            if image is not None and self._anchor == current and self.running is None:
                self.canvas.caption = "cached"  # revisiting a unit: its cached image, no network run
                self.canvas.set_image(image)

        ctx.jobs.start(SLOT, lambda _abort: cached_unit_image(vm, layer, channel, steps=steps, size=size,
                                                              folder=folder),
                       on_done=found)

    def start_unit(self) -> None:
        """Synthesize the selected unit's preferred image, previewing as it evolves."""
        unit = self.ctx.state.unit
        if unit is not None:
            clip = clip_of(self.ctx.vm.net, unit.layer)  # a module lookup, no forward
            message = f"optimizing {unit}" + (f"\nbefore its {clip}..." if clip is not None else "...")
            self._run(unit_objective(self.ctx.vm, unit.layer, unit.channel), str(unit), message,
                      target=(unit.layer, unit.channel))

    def start_class(self, index: int) -> None:
        """A class's optimized image (class logit), labelled with its name; selecting another unit cancels it."""
        vm = self.ctx.vm
        if not 0 <= index < len(vm.categories):
            return
        from ...optimize import objectives

        name = vm.categories[index]
        self._run(objectives.class_logit(index), f"class:{index}", f"optimizing class {name}...", label=name)
        self.box.title_label.setText(f"{TITLE}: class {name}")

    def _run(self, objective, what: str, message: str, *, label: str = "",
             target: tuple[str, int] | None = None) -> None:
        from ...optimize import iter_optimize

        ctx = self.ctx
        self._anchor = (ctx.vm.name, str(ctx.state.unit))
        self.running = what
        self.box.title_label.setText(TITLE)
        steps, size = self.steps, self.size
        load = ctx.live.model_copy_loader(SLOT)
        model = ctx.vm.name
        self.canvas.caption = ""
        self.canvas.clear(message)

        def work(abort):
            vm = load()
            last = None
            for prog in iter_optimize(vm, objective, steps=steps, size=size, abort=abort,
                                      yield_every=max(1, steps // 12)):
                last = prog
                if prog.image is not None and not prog.done:
                    yield prog
            return None if abort.is_set() else last

        def done(prog) -> None:
            if prog is not None:
                self._show(what, prog, final=True, label=label)
                if target is not None:  # pattern mode fills the tile (we are still `running`: not shown twice)
                    ctx.events.optimized_image.emit(OptimizedImage(model, target[0], target[1], prog.image))
            self.running = None

        def failed(msg: str) -> None:
            self.running = None
            self.canvas.clear(f"optimization failed: {msg}")

        ctx.jobs.start(SLOT, work, on_yield=lambda p: self._show(what, p, label=label), on_done=done,
                       on_error=failed)

    def _show(self, what: str, prog, *, final: bool = False, label: str = "") -> None:
        step, steps = getattr(prog, "step", 0), getattr(prog, "steps", 0)
        result = getattr(prog, "result", None)
        caption = f"step {step}/{steps}" if not final else final_caption(prog.value, result)
        if final and getattr(result, "cached", False):
            caption += " (cached)"
        self.canvas.caption = f"{label}  {caption}" if label else caption
        self.log.append((what, step, steps))
        if prog.image is not None:
            self.canvas.set_image(prog.image)

    def _on_image(self, made: OptimizedImage) -> None:
        """An image finished by another job (e.g. optimize layer): show it if it is the selected unit's."""
        unit = self.ctx.state.unit
        if (unit is not None and self.running is None and (made.model, made.layer, made.channel)
                == (self.ctx.vm.name, unit.layer, unit.channel)):
            self.canvas.caption = "cached"
            self.canvas.set_image(made.image)

    def panels(self) -> list[Panel]:
        return [Panel("optimized", "Optimized image", self.box, area="in:inspector", place={"row": 1, "col": 0})]

    def snapshot_state(self) -> dict:
        return {"optimizing": self.running, "optimize_steps": self.steps, "optimize_size": self.size}

    def shutdown(self) -> None:
        self.ctx.jobs.cancel(SLOT)
