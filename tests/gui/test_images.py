"""numpy -> QImage helpers share memory (no copies) and LUTs keep the grid's border value dark."""

from __future__ import annotations

import numpy as np

from deepvis_app.gui.widgets.images import BORDER_RGB, indexed_qimage, make_lut, overlay, to_qimage


def test_rgb_qimage_shares_memory(qapp):
    arr = np.zeros((4, 5, 3), np.uint8)
    arr[2, 3] = (10, 20, 30)
    img = to_qimage(arr)
    assert (img.width(), img.height()) == (5, 4)
    c = img.pixelColor(3, 2)
    assert (c.red(), c.green(), c.blue()) == (10, 20, 30)
    arr[2, 3] = (200, 100, 50)  # the QImage sees the change: it borrows the array's memory
    c = img.pixelColor(3, 2)
    assert (c.red(), c.green(), c.blue()) == (200, 100, 50)


def test_gray_and_indexed(qapp):
    gray = np.array([[0, 128], [255, 7]], np.uint8)
    assert to_qimage(gray).pixelColor(1, 0).red() == 128
    lut = make_lut("viridis")
    assert lut.shape == (256, 3) and tuple(lut[0]) == BORDER_RGB
    assert lut[1:].astype(int).sum(axis=1).min() > sum(BORDER_RGB)  # every tile colour is brighter than a border
    img = indexed_qimage(gray, lut)
    c = img.pixelColor(0, 1)
    assert (c.red(), c.green(), c.blue()) == tuple(int(v) for v in lut[255])
    assert tuple(make_lut("gray")[255]) == (255, 255, 255)


def test_overlay_blends_by_activation():
    rgb = np.full((2, 2, 3), 100, np.uint8)
    heat = np.array([[0, 255], [0, 255]], np.uint8)
    lut = np.zeros((256, 3), np.uint8)
    lut[255] = (255, 0, 0)
    out = overlay(rgb, heat, lut, alpha=0.75)
    assert out[0, 0].tolist() == [90, 90, 90]  # 10 % tint of lut[0] = black where the unit is silent
    assert out[0, 1].tolist() == [round(100 * 0.15 + 255 * 0.85), 15, 15]
