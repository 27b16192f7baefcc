"""Optimized images: the cache lookup of a unit's image and the background jobs (inspector optimize,
class optimize, "optimize layer") with their progress and cancellation."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DeepVisError
from .model_control import model_copy_loader

if TYPE_CHECKING:
    from .main_window import MainWindow


def follow_selection(win: MainWindow) -> None:
    """After a request change: enable the optimize button and, when the selected unit changed, cancel the
    running optimization and show the new unit's cached image (or the hint)."""
    req = win.request
    can_optimize = req.unit is not None
    win.inspector.optimize_button.setEnabled(can_optimize)
    current = (win.vm.name, str(req.unit))
    if win._opt_anchor != current:
        if win._opt_abort is not None:
            win._opt_abort.set()  # the user moved on: stop spending CPU on the old unit / class
            win._opt_abort = None
        win._opt_anchor, win._opt_key = current, None
        win.inspector.set_optimized_title()
        cached = win.cached_unit_image(req.unit.layer, req.unit.channel) if can_optimize else None
        if cached is not None:  # revisiting a unit: its cached image at once, no network run
            win.inspector.set_optimized(cached, "", "cached")
        else:
            win.inspector.set_optimized(None, win.inspector.optimized_hint if can_optimize
                                        else "Optimized image:\nselect a unit")


def unit_objective(win: MainWindow, layer: str, channel: int):
    """The objective a unit's optimized image maximizes: its channel mean (spatial layers) or the unit
    (vectors), as `deepvis optimize-layer` does, so the GUI and the CLI share cache entries."""
    from ..optimize import objectives

    shape = win.vm.info(layer).shape
    return objectives.channel(layer, channel) if len(shape) == 3 else objectives.neuron(layer, channel)


def lookup_settings(win: MainWindow) -> list[dict]:
    """Settings whose cache entries count as a unit's optimized image: the GUI's own (steps/size, see
    DEEPVIS_OPTIMIZE_STEPS / _SIZE), then the preset's defaults (plain `deepvis optimize-layer`)."""
    return [{"steps": win.optimize_steps, "size": win.optimize_size}, {}]


def cached_unit_image(win: MainWindow, layer: str, channel: int) -> np.ndarray | None:
    """A unit's optimized image from the cache (or the opened pattern folder); never runs the net."""
    from ..optimize import cached_result

    try:
        obj = win.unit_objective(layer, channel)
        for settings in win._lookup_settings():
            img = cached_result(win.vm, obj, **settings)
            if img is not None:
                return img
    except (DeepVisError, OSError, ValueError):
        return None
    if win.pattern_folder is not None and win.pattern_folder[0] == layer:
        from ..optimize.cache import read_png

        return read_png(win.pattern_folder[1] / f"unit_{channel:04d}.png")
    return None


def toggle_optimize_layer(win: MainWindow) -> None:
    """Start filling the cache for every unit of the current layer, or stop the running job."""
    if win._layer_abort is not None:
        win._layer_abort.set()
        win._layer_abort = None
        win._layer_job = None
        win.progress.hide()
        win.grid_pane.optimize_layer_button.setText("optimize layer")
        win.status.showMessage("optimize layer: stopped", 5000)
        return
    win.start_optimize_layer()


def start_optimize_layer(win: MainWindow, layer: str | None = None) -> None:
    """Optimize the layer's units that have no cached image yet, one by one on a background job; each
    finished unit appears in pattern mode (and in the inspector when selected) at once."""
    from ..optimize import Cancelled, optimize

    layer = layer or win.layer
    todo = [c for c in range(win.channels(layer)) if win.cached_unit_image(layer, c) is None]
    if not todo:
        win.status.showMessage(f"optimize layer: every unit of {layer} is cached already", 6000)
        return
    abort = threading.Event()
    win._layer_abort = abort
    job = (win.vm.name, layer)
    win._layer_job = job
    objectives = {c: win.unit_objective(layer, c) for c in todo}
    steps, size = win.optimize_steps, win.optimize_size
    load = model_copy_loader(win)
    bridge = win.bridge
    total = len(todo)
    win.progress.setRange(0, total)
    win.progress.setValue(0)
    win.progress.show()
    win.grid_pane.optimize_layer_button.setText("stop optimizing")
    win.status.showMessage(f"optimizing {layer}: 0/{total} units (loading a model copy)...")

    def run() -> object:
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
            bridge.job_done.emit(lambda v: win._layer_progress(job, *v), (c, res.image, done, total))
        return done

    def finished(done: object) -> None:
        if win._layer_job != job:
            return
        win._layer_abort = None
        win._layer_job = None
        win.progress.hide()
        win.grid_pane.optimize_layer_button.setText("optimize layer")
        win.messages.append(f"optimize layer {layer}: {done} units done")
        win.status.showMessage(f"optimize layer {layer}: {done} of {total} units done", 10000)

    def failed(msg: str) -> None:
        finished(0)
        win.notify(f"optimize layer failed: {msg}", "error")

    bridge.run_job(run, finished, failed, name="deepvis-optimize-layer")


def layer_progress(win: MainWindow, job: tuple, channel: int, image: np.ndarray, done: int, total: int) -> None:
    if win._layer_job == job:
        win.progress.setValue(done)
        win.status.showMessage(f"optimizing {job[1]}: {done}/{total} units (unit {channel} done)")
    if win._pattern_key == job and channel < len(win._pattern_images):
        win._pattern_images[channel] = image
        win._show_patterns()
    unit = win.request.unit
    if (unit is not None and (win.vm.name, unit.layer, unit.channel) == (job[0], job[1], channel)
            and win._opt_key is None):
        win.inspector.set_optimized(image, "", "cached")


def start_optimize(win: MainWindow) -> None:
    """Synthesize the selected unit's preferred image (inspector button), previewing as it evolves."""
    unit = win.request.unit
    if unit is None:
        return
    win._run_optimize(win.unit_objective(unit.layer, unit.channel), str(unit), f"optimizing {unit}...")


def start_class_optimize(win: MainWindow, index: int) -> None:
    """A class clicked in the predictions: its optimized image (class logit) evolves in the inspector's
    canvas, labelled with the class name; selecting another unit cancels it."""
    if not 0 <= index < len(win.vm.categories):
        return
    from ..optimize import objectives

    name = win.vm.categories[index]
    win.inspector.set_optimized_title(f"optimized image: class {name}")
    win._run_optimize(objectives.class_logit(index), f"class:{index}", f"optimizing class {name}...",
                      label=name)


def run_optimize(win: MainWindow, objective, what: str, message: str, label: str = "") -> None:
    """Run `iter_optimize` on a private model copy in a background job, previewing every few steps in
    the inspector's canvas; a new run or a selection change aborts it (`_opt_abort`)."""
    from ..optimize import iter_optimize

    if win._opt_abort is not None:
        win._opt_abort.set()
    abort = threading.Event()
    win._opt_abort = abort
    win._opt_anchor = (win.vm.name, str(win.request.unit))
    key = win._opt_key = (win.vm.name, what)
    if not label:
        win.inspector.set_optimized_title()
    steps, size = win.optimize_steps, win.optimize_size
    load = model_copy_loader(win)
    win.inspector.set_optimized(None, message)
    bridge = win.bridge

    def run() -> object:
        vm = load()
        last = None
        for prog in iter_optimize(vm, objective, steps=steps, size=size, abort=abort,
                                  yield_every=max(1, steps // 12)):
            last = prog
            if prog.image is not None and not prog.done:
                bridge.job_done.emit(lambda p, k=key: win._opt_progress(k, p, label=label), prog)
        return None if abort.is_set() else last

    def failed(msg: str) -> None:
        if win._opt_key == key:
            win.inspector.set_optimized(None, f"optimization failed: {msg}")

    bridge.run_job(run, lambda p: win._opt_progress(key, p, final=True, label=label), failed,
                   name="deepvis-optimize")


def opt_progress(win: MainWindow, key: tuple, prog: object, final: bool = False, label: str = "") -> None:
    if key != win._opt_key or prog is None:
        return
    image = getattr(prog, "image", None)
    step, steps = getattr(prog, "step", 0), getattr(prog, "steps", 0)
    caption = f"step {step}/{steps}" if not final else f"value {prog.value:.3g}"
    if final and getattr(getattr(prog, "result", None), "cached", False):
        caption += " (cached)"
    if label:
        caption = f"{label}  {caption}"
    win.opt_log.append((key[1], step, steps))
    win.inspector.set_optimized(image, "optimizing...", caption)
    if final:
        win._opt_abort = None
        if win.pattern_on and key[1] == str(win.request.unit):  # a unit run also fills its pattern tile
            unit = win.request.unit
            if win._pattern_key == (win.vm.name, unit.layer) and unit.channel < len(win._pattern_images):
                win._pattern_images[unit.channel] = image
                win._show_patterns()


def env_int(name: str, default: int) -> int:
    """A positive integer from the environment (e.g. DEEPVIS_OPTIMIZE_STEPS=4 in tests), else `default`."""
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default
