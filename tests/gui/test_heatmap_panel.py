"""The heat map: the CAM drawn over the Input pane exactly where the map is hot (pixels), for the top class and for
a class clicked in Predictions (the map equals Grad-CAM of that class on that frame); the trust meter shows the
deletion / insertion figures `evaluate.faithfulness` gives for that frame and map; "explain this frame" shows the
slow method's map of the frame it was started on, and cancels; the stability arithmetic on still and moving
frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepvis_app.evaluate.faithfulness import deletion_insertion, random_heat
from deepvis_app.evaluate.sanity import spearman
from deepvis_app.gui.trust import Stability, TrustFigures, rank_correlation, verdict
from deepvis_app.methods.cam import CAM_METHODS
from deepvis_app.methods.registry import explain
from deepvis_app.render import overlay_heat
from deepvis_app.values import ClassTarget, ViewRequest

from .test_window import WAIT, wait_result

LAYER = "_blocks.3"


def _cam(ref_vm, image, layer, cls):
    x = ref_vm.preprocess.to_tensor(image)
    return CAM_METHODS["gradcam"](ref_vm.net, layer, vm=ref_vm).attribute(x, cls).low[0].numpy()


def test_overlay_is_drawn_where_the_map_is_hot_and_follows_a_clicked_class(qtbot, make_window, vm, ref_vm):
    win = make_window("demo", ViewRequest(layer=LAYER))
    win.feature("inspector").set_backprop_mode("off")
    hm, pane = win.feature("heatmap"), win.feature("input").pane
    qtbot.keyClick(win, "c")  # the key cycles the live CAM: off -> Grad-CAM
    assert win.state.overlay == "gradcam" and hm.method_box.currentData() == "gradcam"
    res = wait_result(qtbot, win, lambda r: r.overlay is not None)
    shown, heat = pane.canvas.array, res.overlay.image
    assert shown.shape == res.image.shape and heat.shape == res.image.shape[:2]
    assert np.array_equal(shown, overlay_heat(res.image, heat))
    changed = np.abs(shown.astype(int) - res.image.astype(int)).max(axis=2)
    cold, hot = heat == 0, heat >= 128
    assert cold.any() and hot.sum() > 200
    assert changed[cold].max() == 0  # where the map is zero the frame is untouched
    assert (changed[hot] > 0).mean() > 0.95 and changed[hot].mean() > 20  # where it is hot, the heat covers it
    assert changed[heat > 0].mean() > changed[heat <= 0].mean()
    top = int(res.predictions[0][0])
    assert res.overlay.cls == top and vm.categories[top] in pane.canvas.caption

    # a class clicked in Predictions: the map (and the caption) follow it, and it is that class's Grad-CAM
    other = (top + 500) % vm.num_classes
    win.feature("predictions").choose_class(other)
    assert win.state.overlay_class == other
    res = wait_result(qtbot, win, lambda r: r.overlay is not None and r.overlay.cls == other)
    assert np.array_equal(pane.canvas.array, overlay_heat(res.image, res.overlay.image))
    assert vm.categories[other] in pane.canvas.caption and vm.categories[other] in hm.class_label.text()
    want = _cam(ref_vm, res.image, res.overlay.layer, other)
    assert np.abs(res.overlay.raw - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    top_map = _cam(ref_vm, res.image, res.overlay.layer, int(res.predictions[0][0]))
    assert np.abs(top_map - want).max() > 10 * 1e-4 * max(1.0, float(np.abs(want).max()))  # another map

    hm.top_button.click()  # back to each frame's top class
    assert win.state.overlay_class is None
    res = wait_result(qtbot, win, lambda r: r.overlay is not None)
    assert res.overlay.cls == int(res.predictions[0][0])
    qtbot.keyClick(win, "C")  # and back off
    assert win.state.overlay == ""
    wait_result(qtbot, win, lambda r: r.overlay is None)
    assert np.array_equal(pane.canvas.array, win.live.shown.image)


def test_trust_meter_shows_the_faithfulness_of_the_shown_map(qtbot, make_window, ref_vm):
    win = make_window("demo", ViewRequest(layer=LAYER))
    win.feature("inspector").set_backprop_mode("off")
    qtbot.keyClick(win, "f")  # a still frame: measured once
    hm = win.feature("heatmap")
    next(a for a in win.menus["&Tools"].actions() if a.text().startswith("Heat map")).trigger()
    assert win.state.overlay == "gradcam" and hm.panel.isVisible()
    qtbot.waitUntil(lambda: hm.trust is not None, timeout=WAIT * 4)
    f, res = hm.trust, hm.trust_res
    assert f.frame_id == res.frame_id and f.cls == res.overlay.cls == int(res.predictions[0][0])
    assert f.method == "gradcam" and f.cells == res.overlay.raw.shape
    x = ref_vm.preprocess.to_tensor(res.image)
    heat = torch.from_numpy(res.overlay.raw)[None]
    classes = torch.tensor([f.cls])
    curves = deletion_insertion(ref_vm.net, x, heat, classes, steps=10, fill="blur")
    chance = deletion_insertion(ref_vm.net, x, random_heat(heat, 0), classes, steps=10, fill="blur")
    for got, want in ((f.deletion, curves.deletion_auc), (f.insertion, curves.insertion_auc),
                      (f.deletion_random, chance.deletion_auc), (f.insertion_random, chance.insertion_auc),
                      (f.score, curves.deletion[:, 0])):
        assert abs(got - float(want[0])) < 1e-4
    text = hm.verdict_label.text()
    assert f"insertion {f.insertion:.2f} vs random {f.insertion_random:.2f}" in text
    assert f"deletion {f.deletion:.2f} vs random {f.deletion_random:.2f}" in text
    assert verdict(f)[1] in text and hm.meter.figures is f
    assert f"frame {f.frame_id}" in hm.trust_tag.text
    snap = win.feature("snapshots").state_dict()
    assert snap["trust"]["insertion_auc"] == f.insertion


def test_explain_this_frame_shows_the_methods_map_of_that_frame_and_cancels(qtbot, make_window, ref_vm,
                                                                          monkeypatch):
    from deepvis_app.gui.features import heatmap

    monkeypatch.setitem(heatmap.EXPLAIN_OPTIONS, "ig", {"steps": 4, "baseline": "black"})  # a quick IG
    win = make_window("demo", ViewRequest(layer=LAYER))
    win.feature("inspector").set_backprop_mode("off")
    hm = win.feature("heatmap")
    res = wait_result(qtbot, win, lambda r: bool(r.predictions))
    hm.explain_frame("scorecam")  # slow (one pass per channel of the CAM layer): cancel it
    assert hm.progress.isVisibleTo(hm.panel) and hm.cancel_button.isEnabled()
    hm.cancel_explain()
    assert "cancelled" in hm.explain_info.text() and not hm.cancel_button.isEnabled()
    res = win.live.shown
    hm.explain_frame("ig")
    qtbot.waitUntil(lambda: hm.explained is not None, timeout=WAIT * 4)
    e = hm.explained
    assert e.method == "ig" and e.res is res and e.cls == int(res.predictions[0][0])  # the frame it started on
    assert f"frame {res.frame_id}" in hm.explain_tag.text
    x = ref_vm.preprocess.to_tensor(res.image)
    from deepvis_app.devices import job_threads

    before = torch.get_num_threads()
    torch.set_num_threads(job_threads())  # the job's own thread team: the same summation order as the job
    try:
        want = explain(ref_vm.net, x, "ig", ClassTarget(e.cls, "logit"), vm=ref_vm, steps=4).heat[0].numpy()
    finally:
        torch.set_num_threads(before)
    # (the job's thread team sums gradients in another order than this thread's: float noise of ~1e-3)
    assert np.abs(e.heat - want).max() <= 2e-3 * float(np.abs(want).max())
    assert np.array_equal(hm.explain_canvas.array, e.image) and e.image.shape == res.image.shape
    assert "Integrated Gradients" in hm.explain_info.text() and "insertion" in hm.explain_info.text()


def _figures(deletion, insertion, d_rand, i_rand, score=0.8) -> TrustFigures:
    return TrustFigures(1, "gradcam", "L", 0, score, deletion, insertion, d_rand, i_rand, (7, 7))


def test_verdict_and_stability_arithmetic():
    assert verdict(_figures(0.10, 0.70, 0.40, 0.20))[0] == "good"
    assert verdict(_figures(0.45, 0.70, 0.40, 0.20))[0] == "mixed"
    assert verdict(_figures(0.40, 0.22, 0.40, 0.20))[0] == "bad"
    assert verdict(_figures(0.01, 0.03, 0.02, 0.01, score=0.02))[0] == "unsure"
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    raw = rng.random((7, 7)).astype(np.float32)
    s = Stability()
    s.update(frame, raw, ("gradcam", "L", 0))
    s.update(frame.copy(), raw * 2.0, ("gradcam", "L", 0))  # a still camera, the same ranking: 1
    assert s.value == 1.0 and "over 1 still frame" in s.text()
    s.update(frame.copy(), raw[::-1].copy(), ("gradcam", "L", 0))  # the map jumps while nothing moves
    assert s.value < 0.9 and len(s.values) == 2
    assert s.values[1] == pytest.approx(spearman(torch.from_numpy(raw[::-1].copy()), torch.from_numpy(raw)), abs=1e-12)
    other = rng.random((7, 7)).astype(np.float32)
    assert rank_correlation(raw, other) == pytest.approx(spearman(torch.from_numpy(raw), torch.from_numpy(other)),
                                                         abs=1e-12)
    moved = np.roll(frame, 8, axis=1)
    s.update(moved, raw, ("gradcam", "L", 0))
    assert s.moving and s.value is None and "camera moving" in s.text()
    s.update(moved.copy(), raw, ("gradcam", "L", 5))  # another class: counted afresh
    assert s.value is None
