"""The Embedding panel: a folder of real photos embedded in the background (codes + t-SNE), drawn as a map
coloured by class; the live frame becomes a marker with its nearest images, exactly the core's neighbours."""

from __future__ import annotations

import cv2
import numpy as np
import skimage.data

from deepvis_app.embed import code_of_image
from deepvis_app.pipeline import Unit, ViewRequest

from .test_window import WAIT, wait_result


def test_embed_a_folder_and_place_the_live_frame(qtbot, make_window, ref_vm, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPVIS_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "photos"
    data.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        img = getattr(skimage.data, name)()
        h, w = img.shape[:2]
        for k, (y, x) in enumerate(((0, 0), (h // 8, w // 8), (h // 6, 0))):
            crop = np.ascontiguousarray(img[y:y + 3 * h // 4, x:x + 3 * w // 4])
            cv2.imwrite(str(data / f"{name}_{k}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    qtbot.keyClick(win, "f")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    feat = win.feature("embedding")
    next(a for a in win.menus["&Tools"].actions() if a.text().startswith("Embedding")).trigger()
    feat.embed_folder(str(data))
    qtbot.waitUntil(lambda: feat.map is not None, timeout=WAIT * 4)
    assert len(feat.codes) == 12 and feat.map.xy.shape == (12, 2)
    assert len(feat.dots.data) == 12
    # the live frame: a marker and its 9 nearest images by cosine, as the core computes them
    qtbot.waitUntil(lambda: len(feat.neighbours) == 9, timeout=WAIT * 2)
    code, _p = code_of_image(ref_vm, win.live.shown.image, feat.codes.layer)
    xy, idx, _sims = feat.map.locate(code, k=9)
    assert feat.neighbours == [int(i) for i in idx] and np.allclose(feat.live_xy, xy)
    assert feat.neighbour_canvases[0].array is not None
    # the same folder again: from the cache, no new extraction
    feat.map = None
    feat.embed_folder(str(data))
    qtbot.waitUntil(lambda: feat.map is not None, timeout=WAIT)
    assert "12 images" in feat.info.text()
