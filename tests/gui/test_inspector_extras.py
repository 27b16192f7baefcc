"""Inspector extras: the top-k panel on a real (tiny) store made by `deepvis scan`, its whole-image viewer, and
the optimized image."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PySide6.QtCore import Qt

from deepvis_app.pipeline import Unit, ViewRequest

WAIT = 60_000
LAYER = "_blocks.1"


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    """4 real photos scanned for one early layer, top-3, with deconv and guided crops (the CLI's defaults)."""
    import skimage.data

    from deepvis_app.cli import main

    root = tmp_path_factory.mktemp("topk")
    data = root / "images"
    data.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        cv2.imwrite(str(data / f"{name}.png"), cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR))
    out = root / "store"
    code = main(["scan", str(data), "--out", str(out), "--layers", LAYER, "--top-k", "3", "--device", "cpu",
                 "--quiet"])
    assert code == 0
    return str(out)


def hover(widget) -> None:
    """Move the pointer onto a widget (an enter event: the offscreen platform has no real pointer)."""
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QEnterEvent
    from PySide6.QtWidgets import QApplication

    centre = QPointF(widget.width() / 2, widget.height() / 2)
    QApplication.sendEvent(widget, QEnterEvent(centre, centre, QPointF(widget.mapToGlobal(centre))))


def box_pixel_found(canvas, color=(255, 214, 10)) -> bool:
    """Whether the canvas, as painted, has the box colour on the box's left edge (a few pixels around it)."""
    rect = canvas.box_rect()
    assert not rect.isEmpty()
    img = canvas.grab().toImage()
    y = int(rect.center().y())
    for x in range(int(rect.left()) - 1, int(rect.left()) + 5):
        for dy in (-1, 0, 1):
            c = img.pixelColor(x, y + dy)
            if abs(c.red() - color[0]) < 30 and abs(c.green() - color[1]) < 30 and abs(c.blue() - color[2]) < 40:
                return True
    return False


def test_topk_panel_from_store(qtbot, make_window, tiny_store, ref_vm):
    from deepvis_app.topk.store import TopKStore

    store = TopKStore.open(tiny_store)
    assert {"input", "deconv", "guided"} <= set(store.kinds)
    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 1)), store=tiny_store)
    win.feature("inspector").set_backprop_mode("off")
    panel = win.feature("topk").panel
    entries = store.entries(LAYER, 1)
    qtbot.waitUntil(lambda: len(panel.tiles) == 3, timeout=WAIT)  # opened and read in the background
    assert len(entries) == 3 and len(panel.tiles) == 3
    for tile, e in zip(panel.tiles, entries, strict=True):
        assert np.array_equal(tile.array, store.crop(LAYER, 1, e.rank, "input"))
    patches = [t.array.copy() for t in panel.tiles]

    panel.set_kind("deconv")  # the toggle: the same neurons' deconvnet images, rendered on first view
    qtbot.waitUntil(lambda: panel.tiles and all(t.array is not None for t in panel.tiles), timeout=WAIT)
    for tile, e, patch in zip(panel.tiles, entries, patches, strict=True):
        deconv = store.crop(LAYER, 1, e.rank, "deconv")  # written into the store by the viewer
        assert deconv is not None and np.array_equal(tile.array, deconv) and not np.array_equal(tile.array, patch)
    from deepvis_app.attribution import attribute, render_view
    from deepvis_app.topk.store import crop_box
    ref = ref_vm  # not the live window's model: its worker runs it
    e0 = entries[0]
    fitted = store.fitted(e0)
    grad = attribute(ref.net, ref.preprocess.to_tensor(fitted), LAYER, (1, e0.y, e0.x), method="deconv")
    full = render_view(grad, "norm")
    assert np.abs(crop_box(full, e0.box)[0].astype(int) - panel.tiles[0].array.astype(int)).max() <= 1
    panel.set_kind("guided")
    qtbot.waitUntil(lambda: panel.tiles and all(t.array is not None for t in panel.tiles), timeout=WAIT)
    assert np.array_equal(panel.tiles[0].array, store.crop(LAYER, 1, 0, "guided"))
    panel.set_kind("input")

    # hover: value, rank and source path
    hover(panel.tiles[1])
    assert entries[1].path in panel.info.text()
    assert f"{entries[1].value:.4g}" in panel.info.text() and "rank 2 of 3" in panel.info.text()
    assert entries[1].path in panel.tiles[1].toolTip() and f"{entries[1].value:.4g}" in panel.tiles[1].toolTip()

    # click: the whole image as the network saw it, with the receptive-field box, in a non-modal window
    qtbot.mouseClick(panel.tiles[1], Qt.MouseButton.LeftButton)
    viewer = win.feature("topk").viewer
    assert viewer is not None and viewer.isVisible() and not viewer.isModal()
    qtbot.waitUntil(lambda: viewer.canvas.has_image, timeout=WAIT)
    assert np.array_equal(viewer.canvas.array, store.fitted(entries[1]))
    assert viewer.canvas.box == entries[1].box and entries[1].path in viewer.details.text()
    assert box_pixel_found(viewer.canvas)
    painted = win.live.paint_count
    qtbot.waitUntil(lambda: win.live.paint_count > painted + 1, timeout=WAIT)  # the live view goes on meanwhile

    win.feature("grid").select_channel(6)
    e6 = store.entries(LAYER, 6)
    qtbot.waitUntil(lambda: not win.feature("topk").loading, timeout=WAIT)
    assert len(panel.tiles) == len(e6)
    assert np.array_equal(panel.tiles[0].array, store.crop(LAYER, 6, 0, "input"))
    win.feature("layers").set_layer("_blocks.3")  # not in the store: says so
    assert not panel.tiles and "no top-k data for this unit in store" in panel.message_text


def test_store_opened_from_menu(qtbot, make_window, tiny_store):
    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 2)))
    panel = win.feature("topk").panel
    assert not panel.tiles and "no store loaded" in panel.message_text
    win.feature("topk").open_store(tiny_store)  # what File > Open top-k store... does after its dialog
    qtbot.waitUntil(lambda: len(panel.tiles) == 3, timeout=WAIT)
    assert len(panel.tiles) == 3 and "store" in panel.info.text()
    assert win.feature("snapshots").state_dict()["store"] == tiny_store


def test_optimize_button_shows_an_image(qtbot, make_window, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 2)))
    opt = win.feature("optimize")
    opt.steps, opt.size = 3, 64
    assert win.feature("optimize").button.isEnabled()
    assert "press optimize" in win.feature("optimize").canvas.placeholder
    win.feature("optimize").button.click()
    qtbot.waitUntil(lambda: opt.canvas.has_image and "value" in opt.canvas.caption,
                    timeout=WAIT)
    img = win.feature("optimize").canvas.array
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 1
