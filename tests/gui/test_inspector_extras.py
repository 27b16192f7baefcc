"""Inspector extras: top-activating images from a real (tiny) top-k store, and the optimized image."""

from __future__ import annotations

import cv2
import pytest

from deepvis_app.pipeline import Unit, ViewRequest

WAIT = 60_000


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, vm):
    scan_mod = pytest.importorskip("deepvis_app.topk.scan")
    import skimage.data

    root = tmp_path_factory.mktemp("topk")
    data = root / "images"
    data.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        cv2.imwrite(str(data / f"{name}.png"), cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR))
    out = root / "store"
    scan_mod.scan(vm, data, out, layers="_blocks.3", top_k=3, batch_size=4, workers=0, attribution=(),
                  progress=False)
    return str(out)


def test_topk_images_shown_for_selected_unit(qtbot, make_window, tiny_store):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 1)), store=tiny_store)
    assert win.inspector.topk.has_image  # 3 crops for unit 1 as a mosaic
    first = win.inspector.topk.array.copy()
    win.select_channel(6)
    assert win.inspector.topk.has_image and (win.inspector.topk.array != first).any()
    win.set_layer("_blocks.7")  # not in the store: a message, no image
    assert not win.inspector.topk.has_image and "no data" in win.inspector.topk.placeholder


def test_optimize_button_shows_an_image(qtbot, make_window, monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path))
    pytest.importorskip("deepvis_app.optimize")
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 2)))
    win.optimize_steps, win.optimize_size = 3, 64
    assert win.inspector.optimize_button.isEnabled()
    assert "press optimize" in win.inspector.optimized.placeholder
    win.inspector.optimize_button.click()
    qtbot.waitUntil(lambda: win.inspector.optimized.has_image and "value" in win.inspector.optimized.caption,
                    timeout=WAIT)
    img = win.inspector.optimized.array
    assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 1
