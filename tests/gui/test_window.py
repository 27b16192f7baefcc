"""The live window, offscreen: frames arrive, clicks and keys select units and layers, models switch (or fail
without stopping the app), sources fail mid-run, snapshots are written."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from PySide6.QtCore import Qt

from deepvis_app.pipeline import Unit, ViewRequest
from deepvis_app.sources import FrameSource

WAIT = 30_000  # ms; generous: the CI machine is shared


def wait_result(qtbot, win, pred, timeout=WAIT):
    """Wait until a painted result satisfies `pred` (and is made for the current request)."""
    def ok():
        res = win.live.shown
        return res is not None and res.request_id >= win.live.request.request_id and pred(res)
    qtbot.waitUntil(ok, timeout=timeout)
    return win.live.shown


def test_video_frames_then_click_selects_unit(qtbot, make_window, video_path):
    win = make_window(video_path, ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 2)))
    first = wait_result(qtbot, win, lambda r: r.unit == Unit("_blocks.3", 2))
    assert first.image.shape == (224, 224, 3)
    assert win.feature("input").pane.canvas.has_image
    before = win.feature("inspector").pane.unit_map.array.copy()
    assert win.feature("grid").pane.layout_.channels == 40

    pos = win.feature("grid").pane.tile_center(17)
    qtbot.mouseClick(win.feature("grid").pane.view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert win.live.request.unit == Unit("_blocks.3", 17)
    assert win.feature("grid").pane.sel_rect.isVisible()
    res = wait_result(qtbot, win, lambda r: r.unit == Unit("_blocks.3", 17))
    assert res.unit_map is not None
    after = win.feature("inspector").pane.unit_map.array
    assert after.shape == before.shape and np.abs(after.astype(int) - before.astype(int)).mean() > 1.0
    state = win.feature("snapshots").state_dict()
    assert state["unit"] == "_blocks.3:17" and state["shown_unit"] == "_blocks.3:17"
    assert win.live.click_latencies  # time from the click to the first painted result for it was recorded
    # hover text names the unit and its max activation
    pane = win.feature("grid").pane
    qtbot.mouseMove(pane.view.viewport(), pane.tile_center(17))
    pane.view.scene().sigMouseMoved.emit(pane.vb.mapViewToScene(pane.tile_rect(17).center()))
    assert win.feature("grid").pane.info.text().startswith("unit 17 ") and "max" in win.feature("grid").pane.info.text()


def test_keyboard_navigation(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    wait_result(qtbot, win, lambda r: r.layer == "_blocks.3")
    cols = win.feature("grid").pane.layout_.cols
    target = win.feature("layers").pane.tree  # keys work even when the layer list has focus
    target.setFocus()
    qtbot.keyClick(target, Qt.Key.Key_Right)
    assert win.live.request.unit == Unit("_blocks.3", 1)
    qtbot.keyClick(target, Qt.Key.Key_Down)
    assert win.live.request.unit == Unit("_blocks.3", 1 + cols)
    qtbot.keyClick(target, Qt.Key.Key_Left)
    assert win.live.request.unit.channel == cols
    wait_result(qtbot, win, lambda r: r.unit == Unit("_blocks.3", cols))

    qtbot.keyClick(win, "o")  # next curated layer
    assert win.live.request.layer == "_blocks.7" and win.live.request.unit == Unit("_blocks.7", cols)
    res = wait_result(qtbot, win, lambda r: r.layer == "_blocks.7")
    assert res.grid.layout.channels == 80
    assert win.feature("layers").pane.tree.currentItem().data(0, Qt.ItemDataRole.UserRole) == "_blocks.7"
    qtbot.keyClick(win, "u")
    assert win.live.request.layer == "_blocks.3"

    qtbot.keyClick(win, "t")
    assert win.live.request.norm == "channel"
    qtbot.keyClick(win, "T", Qt.KeyboardModifier.ShiftModifier)
    assert win.live.request.gamma != 1.0
    mode = win.state.backprop_mode
    qtbot.keyClick(win, "b")
    assert win.state.backprop_mode != mode
    view = win.state.backprop_view
    qtbot.keyClick(win, "m")
    assert win.state.backprop_view != view and win.live.request.attribution_view == win.state.backprop_view

    qtbot.keyClick(win, "f")
    assert win.state.camera_frozen and win.live.source.frozen
    frozen_id = win.live.shown.frame_id
    qtbot.keyClick(win, Qt.Key.Key_Right)  # browsing keeps working on the frozen frame
    wait_result(qtbot, win, lambda r: r.frame_id > frozen_id and r.unit == win.live.request.unit)

    x_range = win.feature("grid").pane.vb.viewRange()[0]
    qtbot.keyClick(win, "z")
    zoomed = win.feature("grid").pane.vb.viewRange()[0]
    assert zoomed[1] - zoomed[0] < x_range[1] - x_range[0]

    qtbot.keyClick(win, "h")
    assert win.feature("help").visible
    qtbot.keyClick(win, "h")
    assert not win.feature("help").visible

    qtbot.keyClick(win, Qt.Key.Key_Escape)
    assert not win.state.camera_frozen and win.live.request.norm == "layer" and win.live.request.gamma == 1.0
    assert win.state.backprop_mode == "guided"


def test_freeze_unit_while_browsing_layers(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 4)))
    wait_result(qtbot, win, lambda r: r.unit is not None)
    win.feature("inspector").pane.freeze_box.setChecked(True)
    assert win.state.unit_frozen
    win.feature("layers").set_layer("_blocks.10")
    assert win.live.request.layer == "_blocks.10" and win.live.request.unit == Unit("_blocks.3", 4)
    res = wait_result(qtbot, win, lambda r: r.layer == "_blocks.10")
    assert res.unit == Unit("_blocks.3", 4) and res.unit_map is not None
    assert not win.feature("grid").pane.sel_rect.isVisible()  # the explained unit is not in the shown layer
    assert "[frozen]" in win.feature("inspector").pane.header.text()


def test_layer_list_and_class_layer(qtbot, make_window, vm):
    win = make_window("demo")
    wait_result(qtbot, win, lambda r: True)
    tree = win.feature("layers").pane.tree
    bold = [tree.topLevelItem(i) for i in range(len(vm.shown_layers))]
    assert all(item.font(0).bold() for item in bold)
    assert tree.topLevelItemCount() == len(vm.shown_layers) + 1 + len(vm.layers)
    fc = next(item for item in bold if item.data(0, Qt.ItemDataRole.UserRole) == "_fc")
    tree.setCurrentItem(fc)
    assert win.live.request.layer == "_fc"
    res = wait_result(qtbot, win, lambda r: r.layer == "_fc")
    assert res.grid.layout.channels == 1000
    top = res.predictions[0][0]
    assert vm.categories[top] in win.feature("grid").pane.describe(top)
    win.feature("grid").select_channel(top)
    wait_result(qtbot, win, lambda r: r.unit == Unit("_fc", top))
    assert vm.categories[top] in win.feature("inspector").pane.header.text()
    assert not win.feature("inspector").pane.unit_map.has_image  # a class unit has no spatial map: a message instead


def test_model_switch_and_bad_model(qtbot, make_window, tmp_path):
    win = make_window("demo")
    wait_result(qtbot, win, lambda r: True)
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nbuilder = "no_such_package:build"\ninput_size = 64\n')
    win.feature("models").switch_model(str(bad))
    qtbot.waitUntil(lambda: "model not loaded" in win.banner.text, timeout=WAIT)
    assert "no_such_package" in win.banner.text and win.live.vm.name == "efficientnet_lite0"
    painted = win.live.paint_count
    qtbot.waitUntil(lambda: win.live.paint_count > painted + 1, timeout=WAIT)  # still running

    spec = tmp_path / "lite_copy.toml"
    spec.write_text('name = "lite_copy"\nbuilder = "deepvis_app.builders:efficientnet_lite0"\ninput_size = 224\n'
                    'mean = [0.498, 0.498, 0.498]\nstd = [0.502, 0.502, 0.502]\n'
                    'default_layer = "_blocks.7"\n[[layers]]\nname = "_blocks.7"\ntitle = "block 7"\n')
    win.feature("models").switch_model(str(spec))
    qtbot.waitUntil(lambda: win.live.vm.name == "lite_copy", timeout=WAIT)
    res = wait_result(qtbot, win, lambda r: r.model == "lite_copy")
    assert res.layer == "_blocks.7" and win.feature("status").labels["model"].text() == "model lite_copy"
    assert win.feature("layers").pane.tree.topLevelItem(0).text(0) == "block 7"


class DyingSource(FrameSource):
    """Delivers a few frames, then nothing (an unplugged camera); reopening fails."""

    name = "dying"
    native_fps = 20.0

    def __init__(self, frames: int = 3) -> None:
        import skimage.data

        self.img = skimage.data.astronaut()
        self.left = frames
        self.opened = True

    def open(self) -> None:
        from deepvis_app.errors import SourceError

        raise SourceError("gone")

    def read(self):
        if self.left <= 0:
            return None
        self.left -= 1
        return self.img


def test_source_fails_mid_run_then_recovers(qtbot, make_window, video_path):
    win = make_window(DyingSource(3))
    qtbot.waitUntil(lambda: "dying: lost" in win.banner.text, timeout=WAIT)
    assert "lost" in win.statusBar().currentMessage() and win.live.worker.is_alive()
    win.feature("sources").open_source_text(video_path)
    qtbot.waitUntil(lambda: win.live.source.name == "photos.avi", timeout=WAIT)
    n = win.live.paint_count
    qtbot.waitUntil(lambda: win.live.paint_count > n, timeout=WAIT)
    win.feature("sources").open_source_text(str(video_path) + ".missing.mp4")
    qtbot.waitUntil(lambda: "cannot open source" in win.banner.text, timeout=WAIT)
    assert win.live.source.name == "photos.avi"


def test_stale_results_are_dropped(qtbot, make_window):
    win = make_window("demo")
    res = wait_result(qtbot, win, lambda r: True)
    win.feature("grid").select_channel(3)
    stale = dataclasses.replace(res, request_id=win.live.request.request_id - 1)
    win.live.latest = None
    win.live.on_result(stale)
    assert win.live.latest is None
    fresh = dataclasses.replace(res, request_id=win.live.request.request_id)
    win.live.on_result(fresh)
    assert win.live.latest is fresh


def test_snapshot_and_layout_saved(qtbot, make_window, tmp_path):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5)))
    wait_result(qtbot, win, lambda r: r.unit == Unit("_blocks.3", 5))
    paths = win.feature("snapshots").save(tmp_path / "snap")
    names = {p.name for p in paths}
    assert {"window.png", "pane_grid.png", "pane_input.png", "pane_inspector.png", "pane_layers.png",
            "pane_predictions.png", "state.json", "input.png", "grid.png"} <= names
    assert all(p.stat().st_size > 100 for p in paths)
    state = json.loads((tmp_path / "snap" / "state.json").read_text())
    assert state["model"] == "efficientnet_lite0" and state["unit"] == "_blocks.3:5"
    assert state["frame_id"] is not None and len(state["predictions"]) == 5
    import cv2

    shot = cv2.imread(str(tmp_path / "snap" / "window.png"))
    assert shot.shape[0] > 400 and shot.std() > 10  # not blank
    win.close()
    assert win.settings.value("window/state") is not None


def test_drop_file_opens_it(qtbot, make_window, video_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    win = make_window("demo")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(video_path)])
    event = QDropEvent(QPointF(100, 100), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    win.dropEvent(event)
    qtbot.waitUntil(lambda: win.live.source.name == "photos.avi", timeout=WAIT)


def test_ctrl_s_snapshot_without_dialog(qtbot, make_window, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_SNAPSHOTS", str(tmp_path / "snaps"))
    win = make_window("demo")
    wait_result(qtbot, win, lambda r: True)
    qtbot.keyClick(win, "s", Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: "snapshot saved" in win.banner.text, timeout=WAIT)
    (folder,) = list((tmp_path / "snaps").iterdir())
    assert (folder / "window.png").stat().st_size > 1000 and (folder / "state.json").is_file()


def test_failing_backprop_does_not_stall_the_live_view(qtbot, make_window, monkeypatch):
    from deepvis_app import attribution

    def broken(*_args, **_kw):
        raise RuntimeError("backward exploded")

    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 1)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: r.unit is not None and not r.attributions)
    monkeypatch.setattr(attribution.AttributionContext, "explain", broken)
    win.feature("inspector").set_backprop_mode("deconv")
    assert win.live.request.attribution == ("deconv",)
    qtbot.waitUntil(lambda: "backprop turned off" in win.banner.text, timeout=WAIT)
    assert "backward exploded" in win.banner.text and win.live.request.attribution == ()
    n = win.live.paint_count
    qtbot.waitUntil(lambda: win.live.paint_count > n + 1, timeout=WAIT)


def test_layout_remembered_between_runs(qtbot, make_window):
    win = make_window("demo")
    win.docks["predictions"].hide()
    win.close()
    again = make_window("demo")
    assert again.docks["predictions"].isHidden() and not again.docks["inspector"].isHidden()
    again.docks["weights"].show()
    again.reset_layout()
    assert not again.docks["predictions"].isHidden()
    assert again.docks["weights"].isHidden()  # tool panels are hidden in the default layout


def test_attribution_images_live(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.7", unit=Unit("_blocks.7", 3)))
    win.state.backprop_crop = False  # whole images here; cropping to the receptive field: test below
    assert win.live.request.attribution == ("guided",)
    res = wait_result(qtbot, win, lambda r: set(r.attributions) == {"guided"})
    attr = win.feature("inspector").pane.attr
    assert attr["guided"].has_image and not attr["deconv"].has_image
    assert res.unit_position is not None and win.feature("inspector").pane.unit_map.marker is not None
    win.feature("inspector").set_backprop_mode("all")
    res = wait_result(qtbot, win, lambda r: set(r.attributions) == {"gradient", "deconv", "guided"})
    shown = {m: win.feature("inspector").pane.attr[m].array for m in ("gradient", "deconv", "guided")}
    assert all(a is not None and a.shape == (224, 224, 3) for a in shown.values())
    assert np.abs(shown["gradient"].astype(int) - shown["deconv"].astype(int)).mean() > 0.5  # different rules
    assert win.state.backprop_view == "norm"
    qtbot.keyClick(win, "m")  # -> normblur: the worker renders the new view
    assert win.live.request.attribution_view == "normblur"
    wait_result(qtbot, win, lambda r: "guided" in r.attributions)
    pane = win.feature("inspector").pane
    qtbot.waitUntil(lambda: "normblur" in pane.method_boxes["guided"].title_label.text(), timeout=WAIT)
    assert pane.attr["guided"].caption == ""  # the view is named in the title, not over the image
    assert win.feature("snapshots").state_dict()["attribution"] == ["gradient", "deconv", "guided"]


def test_backprop_images_cropped_to_a_small_receptive_field(qtbot, make_window, ref_vm):
    from deepvis_app.receptive_field import rf_box

    ref = ref_vm  # never probe the live window's model from the test

    win = make_window("demo", ViewRequest(layer="_blocks.1", unit=Unit("_blocks.1", 3, 28, 30)))
    assert win.state.backprop_crop  # the default
    pane = win.feature("inspector").pane
    qtbot.waitUntil(lambda: "RF" in pane.method_boxes["guided"].title_label.text(), timeout=2 * WAIT)
    res = win.live.shown
    y, x = res.unit_position
    assert (y, x) == (28, 30)
    top, left, bottom, right = rf_box(ref.net, "_blocks.1", y, x, 224)
    top, left, bottom, right = max(0, top), max(0, left), min(224, bottom), min(224, right)
    qtbot.waitUntil(lambda: pane.attr["guided"].array.shape[:2] == (bottom - top, right - left),
                    timeout=2 * WAIT)
    shown = pane.attr["guided"].array
    assert shown.shape[:2] != (224, 224)
    assert np.array_equal(shown, win.live.shown.attributions["guided"][top:bottom, left:right])
    assert f"RF {bottom - top}x{right - left} px" in pane.method_boxes["guided"].title_label.text()
    pane.crop_box.setChecked(False)  # off: the whole input again
    assert not win.state.backprop_crop
    qtbot.waitUntil(lambda: pane.attr["guided"].array.shape[:2] == (224, 224), timeout=WAIT)
