"""Views that said nothing or the wrong thing (issue 30, Misleading views): a click in Predictions acts on the row
the user saw and held rows say they are held; a ReLU6 unit at its cap says why its gradient is blank; deconvnet
says when it cannot depend on the image; pattern mode without a cache says so once and shows the live tiles."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QColor, QCursor, QMouseEvent
from PySide6.QtWidgets import QApplication
from torch import nn

from deepvis_app.gui.backprop_facts import deconv_static_at, rectifier_cap
from deepvis_app.gui.widgets.predictions_pane import HELD_COLOR, PredictionsPane
from deepvis_app.values import Unit, ViewRequest

from .test_window import WAIT, wait_result

LAYER = "_blocks.3._swish@1"  # ReLU6: many units sit at 6 on real photos

CAT = [(285, "Egyptian cat", 0.62), (281, "tabby", 0.2), (282, "tiger cat", 0.1), (287, "lynx", 0.05),
       (904, "window screen", 0.01)]
ESPRESSO = [(967, "espresso", 0.88), (657, "missile", 0.05), (968, "cup", 0.03), (504, "coffee mug", 0.02),
            (925, "consomme", 0.01)]


def press(widget, pos: QPoint) -> None:
    for kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease):
        QApplication.sendEvent(widget, QMouseEvent(kind, QPointF(pos), QPointF(widget.mapToGlobal(pos)),
                                                   Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton,
                                                   Qt.KeyboardModifier.NoModifier))


def test_a_click_acts_on_the_row_on_screen_and_held_rows_say_so(qtbot):
    pane = PredictionsPane()
    qtbot.addWidget(pane)
    pane.resize(320, 260)
    pane.move(300, 300)
    QCursor.setPos(5, 5)  # the pointer away from the rows (it holds them when it is over them)
    pane.show()
    qtbot.waitExposed(pane)
    bars = pane.bars
    clicked = []
    bars.class_clicked.connect(lambda index, _name: clicked.append(index))
    QApplication.sendEvent(bars, QEvent(QEvent.Type.Leave))  # the pointer is elsewhere: rows follow the frames
    bars.set_rows(CAT, {})
    qtbot.waitUntil(lambda: bars.painted_rows == CAT)  # the cat's rows are on screen
    bars.set_rows(ESPRESSO, {})  # a new frame's rows arrive; they are drawn at the next paint
    press(bars, QPoint(*bars.row_center(0)))
    assert clicked == [285]  # the row the user saw ("Egyptian cat"), not the one that just replaced it
    qtbot.waitUntil(lambda: bars.painted_rows == ESPRESSO)
    press(bars, QPoint(*bars.row_center(1)))
    assert clicked == [285, 657]

    # under the pointer the rows hold still; when the newest frame's top 5 differ, the rows say they are held
    QApplication.sendEvent(bars, QEvent(QEvent.Type.Enter))
    bars.set_rows(ESPRESSO, {})
    assert not bars.held  # the same rows: nothing held back
    bars.set_rows(CAT, {})
    assert bars.held and [i for i, _n, _p in bars.rows] == [i for i, _n, _p in ESPRESSO]
    img = bars.grab().toImage()
    badge = bars.held_rect().toRect()
    colors = {img.pixelColor(x, y).rgb() for x in range(badge.left() + 1, badge.right())
              for y in range(badge.top() + 1, badge.bottom())}
    assert QColor(HELD_COLOR).rgb() in colors  # the "held" badge is drawn
    QApplication.sendEvent(bars, QEvent(QEvent.Type.Leave))
    assert not bars.held
    bars.set_rows(CAT, {})
    assert [i for i, _n, _p in bars.rows] == [i for i, _n, _p in CAT]


def test_backprop_facts_of_a_model():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU6(),
                        nn.Hardtanh(0.0, 2.0), nn.Hardtanh(-1.0, 1.0)).eval()
    vm = SimpleNamespace(net=net, device=torch.device("cpu"))
    assert [rectifier_cap(net, name) for name in ("1", "4", "5", "6", "0")] == [None, 6.0, 2.0, None, None]
    assert deconv_static_at(vm, "1", 32)  # before the max-pooling: deconvnet never reads the image
    assert not deconv_static_at(vm, "4", 32)  # after it: the pooling switches come from the image


def test_saturated_unit_says_why_its_gradient_is_blank_and_deconv_says_it_is_static(qtbot, make_window, ref_vm):
    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 0)))
    qtbot.keyClick(win, "f")  # one frame
    win.feature("inspector").set_backprop_mode("all")
    res = wait_result(qtbot, win, lambda r: r.unit is not None and "gradient" in r.attributions)
    capped = [int(c) for c in np.flatnonzero(res.grid.channel_max >= 6.0)]
    below = [int(c) for c in np.flatnonzero((res.grid.channel_max > 1.0) & (res.grid.channel_max < 5.9))]
    assert capped and below
    pane = win.feature("inspector").pane
    win.state.unit = Unit(LAYER, capped[0])
    res = wait_result(qtbot, win, lambda r: r.unit == Unit(LAYER, capped[0]) and "gradient" in r.attributions)
    grad = res.attributions["gradient"]
    assert res.unit_value == 6.0 and grad.min() == grad.max()  # the core's gradient is exactly zero
    qtbot.waitUntil(lambda: not pane.attr["gradient"].has_image, timeout=WAIT)
    text = pane.attr["gradient"].placeholder
    assert "ReLU6 cap (6)" in text and "gradient = 0" in text
    assert "guided backprop" in pane.attr["gradient"].toolTip().lower()
    assert pane.attr["guided"].has_image  # guided backprop keeps the mask at the cap: it still shows something
    # deconvnet on this network never reads the image (no max-pooling, no gating): the pane says so
    assert deconv_static_at(ref_vm, LAYER, ref_vm.input_size)
    qtbot.waitUntil(lambda: pane.attr["deconv"].footer == "image-independent on this network", timeout=WAIT)
    # a unit below its cap: its gradient is shown as an image
    win.state.unit = Unit(LAYER, below[0])
    wait_result(qtbot, win, lambda r: r.unit == Unit(LAYER, below[0]) and "gradient" in r.attributions)
    qtbot.waitUntil(lambda: pane.attr["gradient"].has_image, timeout=WAIT)
    assert pane.attr["gradient"].toolTip() == ""


def test_pattern_mode_without_a_cache_says_it_once_and_shows_live_tiles(qtbot, make_window, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "empty-cache"))
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    wait_result(qtbot, win, lambda r: r.layer == "_blocks.3")
    before = len(win.ctx.messages)
    qtbot.keyClick(win, "p")
    patterns, pane = win.feature("patterns"), win.feature("grid").pane
    qtbot.waitUntil(lambda: not patterns.loading and pane.shown_kind == "pattern", timeout=WAIT)
    frame = win.live.shown.frame_id
    wait_result(qtbot, win, lambda r: r.frame_id > frame)
    qtbot.wait(100)
    status = pane.pattern_label.text()
    assert pane.pattern_label.isVisible() and status.startswith("pattern mode: 0 of 40 units have an optimized")
    # said once: above the grid, not again in the banner and the status bar
    assert not [m.text for m in list(win.ctx.messages)[before:] if m.text.startswith("pattern mode")]
    assert not win.banner.isVisible() or "pattern mode" not in win.banner.label.text()
    assert "pattern mode" not in win.statusBar().currentMessage()
    # the tiles are the live activations until images arrive, not 40 empty squares
    lay, img = pane.layout_, pane.grid_image()
    for c in (0, 7, 39):
        y, x = lay.tile_origin(c)
        tile = img[y:y + lay.tile_h, x:x + lay.tile_w]
        assert np.array_equal(tile, pane.live_tile(c, lay.tile_h)) and tile.std() > 1
