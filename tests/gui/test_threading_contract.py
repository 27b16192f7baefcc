"""The threading contract of the window: the GUI thread never reads the disk (store tiles, optimized-image cache,
pattern folders, whole images, style images) and never loads a model; background jobs get one private model copy
per job slot, reused by the slot's later jobs and freed when the model changes."""

from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepvis_app.optimize import objectives as O
from deepvis_app.optimize import optimize
from deepvis_app.values import Unit, ViewRequest

from .test_inspector_extras import LAYER, tiny_store  # noqa: F401 - the module's store fixture, reused
from .test_window import WAIT, wait_result

STEPS, SIZE = 2, 32


class GuiReads:
    """Records the disk reads made on the GUI (main) thread while `watching`: image decoding (cv2), numpy files
    and the pathlib calls the app's readers use. Other threads read freely."""

    def __init__(self, monkeypatch) -> None:
        self.reads: list[str] = []
        self.watching = False
        for owner, name in ((cv2, "imread"), (cv2, "imdecode"), (np, "load"), (np, "fromfile"),
                            (Path, "read_text"), (Path, "read_bytes"), (Path, "glob"), (Path, "is_file"),
                            (Path, "iterdir"), (Path, "exists")):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name), f"{owner.__name__}.{name}"))

    def _wrap(self, fn, label: str):
        def read(*args, **kwargs):
            if self.watching and threading.current_thread() is threading.main_thread():
                self.reads.append(f"{label}({str(args[0])[-60:] if args else ''})")
            return fn(*args, **kwargs)
        return read


@pytest.fixture
def tiny_opt(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_STEPS", str(STEPS))
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_SIZE", str(SIZE))


def test_the_gui_thread_reads_no_file(qtbot, make_window, vm, tiny_store, tiny_opt, monkeypatch,  # noqa: F811
                                      tmp_path):
    from deepvis_app.optimize.cache import write_png
    from deepvis_app.topk.store import TopKStore

    made = optimize(vm, O.channel(LAYER, 2), steps=STEPS, size=SIZE).image  # unit 2 has a cached image
    folder = tmp_path / "patterns"
    write_png(folder / "unit_0005.png", np.full((32, 32, 3), 77, np.uint8))
    style = tmp_path / "style.png"
    cv2.imwrite(str(style), np.full((40, 40, 3), 200, np.uint8))
    store = TopKStore.open(tiny_store)

    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 1)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: r.unit == Unit(LAYER, 1))
    gui = GuiReads(monkeypatch)
    gui.watching = True
    store.crop(LAYER, 1, 0, "input")  # the watcher itself: a read here, on the GUI thread, is seen
    assert any(r.startswith("cv2.") for r in gui.reads)
    gui.reads.clear()

    topk, panel = win.feature("topk"), win.feature("topk").panel
    topk.open_store(tiny_store)  # opening, the unit's entries and crops: jobs
    qtbot.waitUntil(lambda: len(panel.tiles) == 3 and not topk.loading, timeout=WAIT)
    assert np.array_equal(panel.tiles[0].array, store.crop(LAYER, 1, 0, "input"))
    gui.reads.clear()  # (the line above read on purpose)
    panel.set_kind("guided")  # lazily rendered crops, then read back
    qtbot.waitUntil(lambda: len(panel.tiles) == 3 and all(t.array is not None for t in panel.tiles), timeout=WAIT)
    panel.set_kind("input")
    win.feature("grid").select_channel(2)  # another unit's tiles, and its cached optimized image
    opt = win.feature("optimize")
    qtbot.waitUntil(lambda: opt.canvas.has_image and not topk.loading, timeout=WAIT)
    assert np.array_equal(opt.canvas.array, made) and opt.canvas.caption == "cached"
    panel.tile_clicked.emit(0)  # the whole image of a tile
    qtbot.waitUntil(lambda: topk.viewer is not None and topk.viewer.canvas.has_image, timeout=WAIT)

    patterns = win.feature("patterns")
    patterns.set_pattern_mode(True)  # the layer's cached images
    qtbot.waitUntil(lambda: not patterns.loading, timeout=WAIT)
    assert patterns.cached_count == 1 and np.array_equal(patterns.images[2], made)
    patterns.open_folder(folder)  # listing the folder, then its images
    qtbot.waitUntil(lambda: win.state.pattern_folder is not None and not patterns.loading
                    and patterns.cached_count == 2, timeout=WAIT)
    assert (patterns.images[5] == 77).all()

    lab = win.feature("imagelab")
    lab.open_style_image(str(style))
    qtbot.waitUntil(lambda: lab.style_image is not None, timeout=WAIT)
    gui.watching = False
    assert gui.reads == [], f"the GUI thread read files: {gui.reads[:8]}"


def test_one_model_copy_per_job_slot_reused_then_freed_on_model_switch(qtbot, make_window, tiny_opt,
                                                                       monkeypatch):
    from deepvis_app.zoo import VisModel

    loads: list[bool] = []  # per copy loaded: was it on the GUI thread?
    real_reload = VisModel.reload

    def counting_reload(self, *args, **kwargs):
        loads.append(threading.current_thread() is threading.main_thread())
        return real_reload(self, *args, **kwargs)

    monkeypatch.setattr(VisModel, "reload", counting_reload)
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 2)))
    win.feature("inspector").set_backprop_mode("off")  # no receptive-field job yet
    opt = win.feature("optimize")
    for channel in (2, 3):  # two optimizations, one after the other: one copy
        win.feature("grid").select_channel(channel)
        opt.button.click()
        qtbot.waitUntil(lambda: opt.running is None and "value" in opt.canvas.caption, timeout=WAIT)
        if channel == 2:
            first = win.live.model_copies["optimize"]
    copies = win.live.model_copies
    assert loads == [False] and set(copies) == {"optimize"} and copies["optimize"] is first

    win.feature("inspector").set_backprop_mode("guided")  # the receptive-field job: a copy of its own slot
    qtbot.waitUntil(lambda: "rf" in win.live.model_copies, timeout=WAIT)
    copies = win.live.model_copies
    assert copies["rf"] is not copies["optimize"] and loads == [False, False]

    gone = [weakref.ref(c) for c in copies.values()]
    del first, copies
    changed: list = []
    win.live.model_changed.connect(changed.append)
    win.feature("models").switch_model("efficientnet_lite0", "random")
    qtbot.waitUntil(lambda: bool(changed), timeout=WAIT)
    assert win.live.model_copies == {}
    qtbot.waitUntil(lambda: gc.collect() >= 0 and all(ref() is None for ref in gone), timeout=WAIT)
