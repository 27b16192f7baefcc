"""Live top-k ("what in my room excites this neuron") and the effective-receptive-field view, driven by a real
video through the live window."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt

from deepvis_app.pipeline import Unit, ViewRequest

from .test_inspector_extras import box_pixel_found, hover
from .test_window import WAIT, wait_result


def test_live_topk_tiles_clear_and_save(qtbot, make_window, video_path, tmp_path):
    from deepvis_app.topk.store import TopKStore

    unit = Unit("_blocks.3", 2)
    win = make_window(video_path, ViewRequest(layer="_blocks.3", unit=unit))
    win.feature("inspector").set_backprop_mode("off")
    panel = win.feature("topk").panel
    assert "no store loaded" in panel.message_text and not panel.clear_button.isEnabled()
    qtbot.mouseClick(panel.live_box, Qt.MouseButton.LeftButton)
    assert win.live.request.live_topk and win.live.request.live_topk_k == 9 and panel.clear_button.isEnabled()
    res = wait_result(qtbot, win, lambda r: r.live_topk is not None and len(r.live_topk) >= 3)
    qtbot.waitUntil(lambda: len(panel.tiles) >= 3, timeout=WAIT)
    shown = win.feature("topk").live_tiles
    assert len(panel.tiles) == len(shown) and res.live_topk_frames >= 1
    values = [t.value for t in shown]
    assert values == sorted(values, reverse=True)
    for tile, t in zip(panel.tiles, shown, strict=True):
        assert np.array_equal(tile.array, t.patch)
    hover(panel.tiles[0])
    assert f"frame {shown[0].frame_id}" in panel.info.text() and f"{shown[0].value:.4g}" in panel.info.text()

    qtbot.mouseClick(panel.tiles[0], Qt.MouseButton.LeftButton)  # the whole frame with the box
    viewer = win.feature("topk").viewer
    assert viewer.isVisible() and not viewer.isModal()
    assert np.array_equal(viewer.canvas.array, shown[0].frame) and viewer.canvas.box == shown[0].box
    assert box_pixel_found(viewer.canvas)
    viewer.close()

    last = win.live.shown.frame_id
    qtbot.mouseClick(panel.clear_button, Qt.MouseButton.LeftButton)
    assert win.live.request.live_topk_epoch == 1
    assert not panel.tiles and "no frames yet" in panel.message_text
    res = wait_result(qtbot, win, lambda r: bool(r.live_topk))
    assert all(t.frame_id > last for t in res.live_topk)  # only frames seen after the clear

    out = tmp_path / "live_store"
    win.feature("topk").save_live(str(out))
    qtbot.waitUntil(lambda: any("live top-k saved" in m for m in win.ctx.message_texts()), timeout=WAIT)
    assert str(out) in win.statusBar().currentMessage()
    store = TopKStore.open(out)
    entries = store.entries("_blocks.3", 2)
    assert 1 <= len(entries) <= 9 and store.layers == ["_blocks.3"]
    crop = store.crop("_blocks.3", 2, 0, "input")
    assert crop is not None and crop.shape[:2] == (entries[0].box[2] - entries[0].box[0],
                                                  entries[0].box[3] - entries[0].box[1])

    qtbot.mouseClick(panel.live_box, Qt.MouseButton.LeftButton)  # off: the saved store opens like a scan
    assert not win.live.request.live_topk
    win.feature("topk").open_store(str(out))
    qtbot.waitUntil(lambda: len(panel.tiles) == len(entries), timeout=WAIT)
    assert len(panel.tiles) == len(entries)
    assert np.array_equal(panel.tiles[0].array, crop)


def test_erf_view(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5)))
    win.feature("inspector").set_backprop_mode("off")
    canvas = win.feature("inspector").pane.unit_map
    wait_result(qtbot, win, lambda r: r.unit_map is not None)
    qtbot.waitUntil(lambda: canvas.has_image, timeout=WAIT)
    activation = canvas.array.copy()
    assert not win.live.request.erf

    win.feature("inspector").pane.map_box.setCurrentText("ERF")
    assert win.live.request.erf and win.feature("snapshots").state_dict()["map_view"] == "ERF"
    res = wait_result(qtbot, win, lambda r: r.erf_frames >= 3)
    qtbot.waitUntil(lambda: "ERF" in canvas.caption, timeout=WAIT)
    erf = canvas.array
    assert erf.shape == activation.shape and np.abs(erf.astype(int) - activation.astype(int)).mean() > 5
    assert f"{win.live.shown.erf_frames} frames" in canvas.caption
    y, x = np.unravel_index(int(res.erf_map.argmax()), res.erf_map.shape)
    assert abs(y - 112) < 40 and abs(x - 112) < 40  # the centre unit's gradient peaks near the centre

    before = win.live.shown.erf_frames
    win.feature("grid").select_channel(6)  # a new unit restarts the accumulation
    res = wait_result(qtbot, win, lambda r: r.unit == Unit("_blocks.3", 6) and r.erf_frames >= 1)
    assert res.erf_frames < before

    win.feature("inspector").pane.map_box.setCurrentText("overlay")
    assert not win.live.request.erf and win.state.map_view == "overlay"
    wait_result(qtbot, win, lambda r: r.erf_map is None)
    qtbot.waitUntil(lambda: canvas.caption == "overlay", timeout=WAIT)
