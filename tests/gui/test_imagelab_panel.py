"""The image lab on the shown frame: feature inversion at the shown layer evolves in the panel and reports the
relative code error the core computes; style needs a style image and paints the frame; live dream keeps dreaming
new frames with a rate."""

from __future__ import annotations

import numpy as np

from deepvis_app.optimize.invert import invert
from deepvis_app.pipeline import Unit, ViewRequest

from .test_window import WAIT, wait_result


def test_invert_style_and_live_dream(qtbot, make_window, ref_vm, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    qtbot.keyClick(win, "f")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    lab = win.feature("imagelab")
    next(a for a in win.menus["&Tools"].actions() if a.text() == "Feature inversion").trigger()
    assert win.docks["imagelab"].isVisible() and lab.technique.currentText() == "invert"
    lab.steps.setValue(6)
    lab.run_button.click()
    qtbot.waitUntil(lambda: lab.last_step is not None and lab.last_step.done, timeout=WAIT * 2)
    qtbot.waitUntil(lambda: "code error" in lab.info.text(), timeout=WAIT)
    frame = win.live.shown.image
    ref = invert(ref_vm, frame, "_blocks.3", steps=6, yield_every=1)
    assert f"relative code error {ref.code_error:.3f}" in lab.info.text()  # the same run (seeded, cached)
    assert np.array_equal(lab.result.array, ref.image) and np.array_equal(lab.source.array, frame)

    lab.technique.setCurrentText("style")
    lab.run_button.click()
    assert "choose a style image" in lab.info.text()
    import skimage.data

    lab.set_style_image(skimage.data.coffee(), "coffee")
    lab.steps.setValue(3)
    lab.last_step = None
    lab.run_button.click()
    qtbot.waitUntil(lambda: lab.last_step is not None and lab.last_step.done, timeout=WAIT * 2)
    assert "style" in lab.last_step.losses and lab.result.array.ndim == 3

    lab.technique.setCurrentText("dream")
    qtbot.keyClick(win, "f")  # live again
    lab.live_box.setChecked(True)
    qtbot.waitUntil(lambda: lab.live_rate > 0, timeout=WAIT * 2)
    assert "live dream" in lab.result.caption and lab.result.array.shape == frame.shape
