"""The class layer and predictions (entering it selects the top-1 class; a clicked class becomes the explained
unit; rows hold still under the pointer), readable grid views (a colour bar that says how tiles are coloured, a
real z zoom, hover marks that go when the pointer leaves) and honest model titles."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QPoint, Qt
from PySide6.QtWidgets import QApplication

from deepvis_app.pipeline import Unit, ViewRequest

from .test_window import WAIT, wait_result


def test_entering_the_class_layer_selects_the_top_class(qtbot, make_window, vm):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 7)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    win.feature("layers").set_layer("_fc")
    top = win.live.shown.predictions[0][0]
    assert win.state.unit == Unit("_fc", top)  # not unit 7 of the old layer: the class the network sees
    res = wait_result(qtbot, win, lambda r: r.layer == "_fc" and r.unit is not None)
    assert vm.categories[res.unit.channel] in win.feature("inspector").pane.header.text()


def test_clicked_class_becomes_the_explained_unit_and_rows_hold_still(qtbot, make_window, vm, monkeypatch,
                                                                       tmp_path):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_STEPS", "2")
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_SIZE", "32")
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    bars = win.feature("predictions").pane.bars
    qtbot.waitUntil(lambda: len(bars.painted_rows) == 5, timeout=WAIT)  # a click acts on the rows on screen
    idx = bars.painted_rows[2][0]
    qtbot.mouseClick(bars, Qt.MouseButton.LeftButton, pos=QPoint(*bars.row_center(2)))
    assert win.state.unit == Unit("_fc", idx)  # the inspector explains that class
    assert win.feature("optimize").running == f"class:{idx}"
    wait_result(qtbot, win, lambda r: r.unit == Unit("_fc", idx))
    assert vm.categories[idx] in win.feature("inspector").pane.header.text()

    # hovering holds the order: new predictions in another order keep the rows where they were
    QApplication.sendEvent(bars, QEvent(QEvent.Type.Enter))
    held = [i for i, _n, _p in bars.rows]
    shuffled = [(i, n, p) for i, n, p in reversed(bars.rows[:4])] + [(999, "not held", 0.001)]
    bars.set_rows(shuffled, {})
    assert [i for i, _n, _p in bars.rows] == held
    dimmed = [p for i, _n, p in bars.rows if i == held[4]]
    assert dimmed and dimmed[0] < 0  # out of the newest top 5: shown with its last value, dimmed
    QApplication.sendEvent(bars, QEvent(QEvent.Type.Leave))
    bars.set_rows(shuffled, {})
    assert [i for i, _n, _p in bars.rows] == [i for i, _n, _p in shuffled]


def test_colour_bar_zoom_and_hover(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 4)))
    win.feature("inspector").set_backprop_mode("off")
    pane = win.feature("grid").pane
    res = wait_result(qtbot, win, lambda r: r.layer == "_blocks.3")
    assert res.grid.signed  # a linear bottleneck: negative values
    qtbot.waitUntil(lambda: pane.colorbar.labels[1:2] == ("0",), timeout=WAIT)
    assert pane.colorbar.labels[0].startswith("-") and not pane.cmap_box.isEnabled()
    win.feature("layers").set_layer("_swish@0")  # after the stem's ReLU6-style activation: non-negative
    res = wait_result(qtbot, win, lambda r: r.layer == "_swish@0")
    assert not res.grid.signed
    qtbot.waitUntil(lambda: pane.colorbar.labels[0] == "0", timeout=WAIT)
    assert pane.cmap_box.isEnabled() and len(pane.colorbar.labels) == 2
    # z: the selected tile fills most of the view
    win.feature("grid").select_channel(4)
    full = pane.vb.viewRange()[0]
    qtbot.keyClick(win, "z")
    zoomed = pane.vb.viewRange()[0]
    assert (zoomed[1] - zoomed[0]) < 0.5 * (full[1] - full[0])
    # hover marks go when the pointer leaves the grid
    pane.view.scene().sigMouseMoved.emit(pane.vb.mapViewToScene(pane.tile_rect(4).center()))
    assert pane.hover_rect.isVisible() and pane.info.text().startswith("unit 4")
    QApplication.sendEvent(pane.view.viewport(), QEvent(QEvent.Type.Leave))
    assert not pane.hover_rect.isVisible() and not pane.info.text().startswith("unit 4")


def test_random_weights_are_named_as_such(qtbot, make_window):
    win = make_window("demo")
    win.feature("models").switch_model("efficientnet_lite0", "random")
    qtbot.waitUntil(lambda: str(win.live.vm.weights) == "random", timeout=WAIT)
    assert "random weights" in win.windowTitle() and "ImageNet" not in win.windowTitle()
    assert "random weights" in win.feature("status").labels["model"].text()
    checked = [k for k, a in win.feature("models").model_actions.items() if a.isChecked()]
    assert checked == [("efficientnet_lite0", "random")]
