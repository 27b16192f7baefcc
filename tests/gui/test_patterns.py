"""Pattern mode (the layer's cached optimized images as the grid), the optimize-layer job, and class images
started from the predictions pane. Tiny settings: DEEPVIS_OPTIMIZE_STEPS / _SIZE make every GUI run short."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from deepvis_app.gui.labels import layer_label
from deepvis_app.gui.widgets.grid_pane import pattern_tile
from deepvis_app.optimize import cached_result, optimize
from deepvis_app.optimize import objectives as O
from deepvis_app.pipeline import Unit, ViewRequest

WAIT = 60_000
LAYER = "_blocks.3"  # 40 channels, 28x28 maps
STEPS, SIZE = 2, 32


@pytest.fixture
def tiny_opt(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_STEPS", str(STEPS))
    monkeypatch.setenv("DEEPVIS_OPTIMIZE_SIZE", str(SIZE))


def wait_painted(qtbot, win, pred=lambda r: True):
    def ok():
        res = win.live.shown
        return res is not None and res.request_id >= win.live.request.request_id and pred(res)
    qtbot.waitUntil(ok, timeout=WAIT)
    return win.live.shown


def tile(img: np.ndarray, layout, c: int) -> np.ndarray:
    y, x = layout.tile_origin(c)
    return img[y:y + layout.tile_h, x:x + layout.tile_w]


def test_pattern_mode_shows_cached_images_and_clicks_select(qtbot, make_window, vm, tiny_opt):
    made = {c: optimize(vm, O.channel(LAYER, c), steps=STEPS, size=SIZE).image for c in (1, 3)}
    assert cached_result(vm, O.channel(LAYER, 0), steps=STEPS, size=SIZE) is None
    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 0)))
    wait_painted(qtbot, win, lambda r: r.layer == LAYER)
    pane = win.feature("grid").pane
    live_rows_cols = (pane.layout_.rows, pane.layout_.cols)
    qtbot.waitUntil(lambda: not win.feature("optimize").looking_up, timeout=WAIT)
    assert win.feature("optimize").canvas.has_image is False  # unit 0: nothing cached

    qtbot.keyClicks(win.feature("layers").pane.tree, "p")  # the toolbox key
    assert win.state.pattern_mode and win.feature("patterns").box.isChecked() and pane.shown_kind == "pattern"
    qtbot.waitUntil(lambda: not win.feature("patterns").loading, timeout=WAIT)  # the cache is read in a job
    lay = pane.layout_
    assert lay.channels == 40 and (lay.rows, lay.cols) == live_rows_cols  # same arrangement as the live grid
    img = pane.grid_image()
    assert img.ndim == 3 and img.shape == (lay.height, lay.width, 3)
    for c, image in made.items():
        assert np.array_equal(tile(img, lay, c), pattern_tile(image))
        assert not np.array_equal(tile(img, lay, c), pattern_tile(None))
    for c in (0, 2, 39):  # no image yet: the unit's live activation tile, coloured as the live grid
        live = pane.live_tile(c, lay.tile_h)
        assert np.array_equal(tile(img, lay, c), live) and live.std() > 0
    assert pane.pattern_label.isVisible()
    assert pane.pattern_label.text().startswith("pattern mode: 2 of 40 units have an optimized image")
    assert f"deepvis optimize-layer --layer {LAYER} --out DIR" in pane.pattern_label.text()
    assert pane.info.text() == f"{layer_label(vm, LAYER)}: 2 of 40 optimized images"
    assert win.feature("snapshots").state_dict()["patterns_cached"] == 2

    # live frames keep coming: the optimized images stay on screen, the other tiles follow the frames
    frame = win.live.shown.frame_id
    wait_painted(qtbot, win, lambda r: r.frame_id > frame)
    qtbot.waitUntil(lambda: not np.array_equal(tile(pane.grid_image(), lay, 0), tile(img, lay, 0)), timeout=WAIT)
    now = pane.grid_image()
    for c, image in made.items():
        assert np.array_equal(tile(now, lay, c), pattern_tile(image))
    assert np.array_equal(tile(now, lay, 0), pane.live_tile(0, lay.tile_h))

    # clicking a pattern tile selects the unit; the inspector shows its cached image at once
    qtbot.mouseClick(pane.view.viewport(), Qt.MouseButton.LeftButton, pos=pane.tile_center(3))
    assert win.live.request.unit == Unit(LAYER, 3)
    assert pane.sel_rect.isVisible() and pane.sel_rect.rect().contains(pane.tile_rect(3).center())
    qtbot.waitUntil(lambda: win.feature("optimize").canvas.has_image, timeout=WAIT)
    assert np.array_equal(win.feature("optimize").canvas.array, made[3])
    assert win.feature("optimize").canvas.caption == "cached"

    # back to live activations
    qtbot.keyClicks(win.feature("layers").pane.tree, "p")
    assert not win.state.pattern_mode and not pane.pattern_label.isVisible()
    res = wait_painted(qtbot, win, lambda r: r.unit == Unit(LAYER, 3))
    qtbot.waitUntil(lambda: pane.shown_kind == "live", timeout=WAIT)
    assert pane.grid_image().ndim == 2 and pane.grid_image().shape == win.live.shown.grid.image.shape
    assert (pane.layout_.rows, pane.layout_.cols) == (res.grid.layout.rows, res.grid.layout.cols)


def test_optimize_layer_job_fills_tiles_and_stops(qtbot, make_window, vm, tiny_opt):
    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 0)))
    wait_painted(qtbot, win, lambda r: r.layer == LAYER)
    win.feature("patterns").set_pattern_mode(True)
    assert sum(im is not None for im in win.feature("patterns").images) == 0
    win.feature("patterns").button.click()
    assert win.feature("patterns").layer_job_running and win.feature("patterns").progress.isVisible()
    assert win.feature("patterns").button.text() == "stop optimizing"
    qtbot.waitUntil(lambda: sum(im is not None for im in win.feature("patterns").images) >= 2, timeout=WAIT)
    win.feature("patterns").button.click()  # stop
    assert not win.feature("patterns").layer_job_running and not win.feature("patterns").progress.isVisible()
    done = [c for c, im in enumerate(win.feature("patterns").images) if im is not None]
    assert done[:2] == [0, 1]  # unit by unit, in order
    lay = win.feature("grid").pane.layout_
    img = win.feature("grid").pane.grid_image()
    for c in done:
        cached = cached_result(vm, O.channel(LAYER, c), steps=STEPS, size=SIZE)
        assert cached is not None and np.array_equal(tile(img, lay, c), pattern_tile(cached))
    assert np.array_equal(tile(img, lay, 39), win.feature("grid").pane.live_tile(39, lay.tile_h))
    assert win.feature("optimize").canvas.has_image  # unit 0 (selected) got its image as soon as it was done


def test_class_click_runs_class_optimization_then_selection_cancels(qtbot, make_window, tiny_opt):
    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 0)))
    wait_painted(qtbot, win, lambda r: bool(r.predictions))
    bars = win.feature("predictions").pane.bars
    qtbot.waitUntil(lambda: bool(bars.painted_rows), timeout=WAIT)  # a click acts on the rows on screen
    idx, name, _p = bars.painted_rows[0]
    qtbot.mouseClick(bars, Qt.MouseButton.LeftButton, pos=QPoint(*bars.row_center(0)))
    assert win.feature("optimize").running == f"class:{idx}"
    canvas = win.feature("optimize").canvas
    qtbot.waitUntil(lambda: canvas.has_image and "value" in canvas.caption, timeout=WAIT)
    log = [e for e in win.feature("optimize").log if e[0] == f"class:{idx}"]
    assert [s for _w, s, _n in log if s < STEPS]  # intermediate steps reached the canvas, not just the end
    assert log[-1][1] == STEPS
    assert canvas.caption.startswith(name) and name in win.feature("optimize").title
    assert canvas.array.ndim == 3 and canvas.array.shape[:2] == (SIZE, SIZE)

    # a long one, cancelled when the unit selection changes
    win.feature("optimize").steps = 500
    win.feature("optimize").start_class((idx + 1) % 1000)
    stop = win.feature("optimize").job
    log = win.feature("optimize").log
    qtbot.waitUntil(lambda: any(w == f"class:{(idx + 1) % 1000}" for w, _s, _n in log), timeout=WAIT)
    win.feature("grid").select_channel(5)
    assert stop.cancelled and win.feature("optimize").running is None
    assert win.feature("optimize").title == "optimized image"
    assert not canvas.has_image


def test_open_pattern_folder_fills_missing_tiles(qtbot, make_window, tiny_opt, tmp_path):
    from deepvis_app.optimize.cache import write_png

    folder = tmp_path / "b3"
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)  # optimize-layer's default size: shown shrunk
    write_png(folder / "unit_0002.png", img)
    win = make_window("demo", ViewRequest(layer=LAYER, unit=Unit(LAYER, 0)))
    wait_painted(qtbot, win, lambda r: r.layer == LAYER)
    win.feature("patterns").open_folder(folder)
    qtbot.waitUntil(lambda: win.state.pattern_mode and not win.feature("patterns").loading, timeout=WAIT)
    assert win.state.pattern_mode
    pane = win.feature("grid").pane
    assert np.array_equal(tile(pane.grid_image(), pane.layout_, 2), pattern_tile(img))
    assert pattern_tile(img).shape == (96, 96, 3)
    assert np.array_equal(tile(pane.grid_image(), pane.layout_, 1), pane.live_tile(1, pane.layout_.tile_h))
    win.feature("patterns").open_folder(tmp_path / "empty")
    qtbot.waitUntil(lambda: "no unit_NNNN.png images" in win.ctx.last_error, timeout=WAIT)
