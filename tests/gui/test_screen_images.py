"""Images painted as copies (`widgets.scaled`, `widgets.screen_item`): made at screen size by OpenCV with the GIL
released, they show what Qt's own scaled drawing showed -- the activation grid pixel for pixel at its usual size,
the canvases' colours in the right places -- and repaints of the same result reuse the made image."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter

from deepvis_app.gui.widgets.canvas import ImageCanvas
from deepvis_app.gui.widgets.images import indexed_qimage, make_lut, to_qimage
from deepvis_app.gui.widgets.scaled import ScreenCache, bgra_lut, rgb32, screen_image, warp_window
from deepvis_app.gui.widgets.screen_item import ScreenImageItem


def _rgb(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB32)
    return np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.width(), 4)[..., 2::-1].copy()


def _qt_scaled(q: QImage, w: int, h: int) -> np.ndarray:
    """What Qt's raster engine draws for `q` scaled into a w x h rectangle (unsmoothed)."""
    dst = QImage(w, h, QImage.Format.Format_RGB32)
    dst.fill(0)
    p = QPainter(dst)
    p.drawImage(QRectF(0, 0, w, h), q)
    p.end()
    return _rgb(dst)


def test_rgb32_holds_the_colours_in_the_screens_byte_order(qapp):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    img = rgb32(screen_image(rgb, (4, 1)))
    got = [img.pixelColor(x, 0).getRgb()[:3] for x in range(4)]
    assert got == [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
    lut = make_lut("viridis")
    idx = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(screen_image(idx, (16, 16), lut=bgra_lut(lut))[..., 2::-1], lut[idx])


@pytest.mark.parametrize("src, size", [((224, 224), (300, 300)), ((56, 40), (333, 238)), ((224, 224), (150, 150)),
                                       ((7, 9), (500, 389))])
def test_unsmoothed_scaling_samples_like_qt(qapp, src, size):
    """Each screen pixel shows the source pixel under its centre, as Qt's drawing does: Qt's fixed-point stepping
    and OpenCV's may pick the neighbour at a boundary (under 2.5% of the pixels here)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    idx = rng.integers(0, 256, src, dtype=np.uint8)
    lut = make_lut("viridis")
    w, h = size
    rows = np.clip(((np.arange(h) + 0.5) * src[0] / h).astype(int), 0, src[0] - 1)
    cols = np.clip(((np.arange(w) + 0.5) * src[1] / w).astype(int), 0, src[1] - 1)
    for mine, theirs, exact in (
            (screen_image(rgb, size)[..., 2::-1], _qt_scaled(to_qimage(rgb), w, h), rgb[rows][:, cols]),
            (screen_image(idx, size, lut=bgra_lut(lut))[..., 2::-1], _qt_scaled(indexed_qimage(idx, lut), w, h),
             lut[idx][rows][:, cols])):
        assert mine.shape == (h, w, 3)
        assert (mine != exact).any(-1).mean() < 0.06  # ties at pixel boundaries round either way
        assert (mine != theirs).any(-1).mean() < 0.025


def test_smooth_scaling_keeps_flat_colours_and_blends_edges(qapp):
    half = np.zeros((20, 20, 3), np.uint8)
    half[:, 10:] = (200, 100, 50)
    big = screen_image(half, (100, 100), smooth=True)[..., 2::-1]
    assert (big[:, :45] == 0).all() and (big[:, 55:] == (200, 100, 50)).all()
    assert 0 < int(big[50, 50, 0]) < 200  # blended across the edge, not a hard step
    small = screen_image(half, (10, 10), smooth=True)[..., 2::-1]
    assert (small[:, :5] == 0).all() and (small[:, 5:] == (200, 100, 50)).all()


def test_smooth_shrinking_is_as_good_as_area_averaging(qapp):
    """Down to half size the smooth path is bilinear (every source pixel still read; 8x cheaper than OpenCV's
    fractional area averaging): a photo at 2/3 size stays within a grey level of area averaging on average. Below
    half it averages areas: a one-pixel checkerboard shrunk 3x is flat grey, not an aliased pattern."""
    import cv2
    import skimage.data

    photo = cv2.resize(skimage.data.astronaut(), (224, 224), interpolation=cv2.INTER_AREA)
    mine = screen_image(photo, (150, 150), smooth=True)[..., 2::-1].astype(int)
    area = cv2.resize(photo, (150, 150), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(mine - area).mean() < 1.5 and np.abs(mine - area).max() < 64
    board = ((np.indices((96, 96)).sum(0) % 2) * 255).astype(np.uint8)
    small = screen_image(board, (32, 32), smooth=True)[..., 0].astype(int)
    assert small.min() >= 110 and small.max() <= 145  # 4 or 5 of 9 pixels white: 113 or 142 (bilinear: 0, 255)


def test_warp_window_draws_flipped_and_offset_views():
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    # scale 2, offset (1, 3): pixel (x, y) of the screen shows img[(y - 3) // 2, (x - 1) // 2]
    out = warp_window(img, (2.0, 2.0), (1.0, 3.0), (1, 3, 9, 9))
    assert np.array_equal(out, np.repeat(np.repeat(img, 2, 0), 2, 1))
    flipped = warp_window(img, (2.0, -2.0), (1.0, 9.0), (1, 3, 9, 9))  # y axis up: row 0 at the bottom
    assert np.array_equal(flipped, np.repeat(np.repeat(img[::-1], 2, 0), 2, 1))


def test_screen_cache_reuses_the_made_image_until_something_changes(qapp):
    cache = ScreenCache()
    a = np.zeros((8, 8, 3), np.uint8)
    first = cache.image(a, (16, 16))
    assert cache.image(a, (16, 16)) is first
    assert cache.image(a, (17, 16)) is not first
    b = a.copy()
    b[0, 0] = 255
    img = cache.image(b, (16, 16))
    assert img.pixelColor(0, 0).getRgb()[:3] == (255, 255, 255)  # a new array: made again, never the old one


def _view_with(item_cls, lut, img, size, rect, qapp):
    view = pg.GraphicsView()
    view.resize(*size)
    vb = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
    view.setCentralItem(vb)
    item = item_cls(axisOrder="row-major")
    item.setLevels((0, 255))
    item.setLookupTable(lut)
    vb.addItem(item)
    item.setImage(img, autoLevels=False, levels=(0, 255))
    vb.setRange(rect, padding=0.01)
    view.show()
    for _ in range(3):
        qapp.processEvents()
    return view, item


@pytest.mark.parametrize("size, rect, most", [((700, 600), QRectF(0, 0, 233, 187), 0.0),
                                               ((300, 250), QRectF(0, 0, 233, 187), 0.01),
                                               ((800, 700), QRectF(50.3, 40.7, 30, 25), 0.01)])
def test_grid_item_paints_what_pyqtgraph_painted(qapp, size, rect, most):
    """The activation grid's item against pyqtgraph's own ImageItem in the same view: the same screen (pixel for
    pixel at the grid's usual fit; at most 1% of the pixels, on tile boundaries, when zoomed or shrunk), drawn
    as copies."""
    pg.setConfigOptions(imageAxisOrder="row-major")
    img = np.random.default_rng(1).integers(0, 256, (187, 233), dtype=np.uint8)
    lut = make_lut("viridis")
    theirs, _ = _view_with(pg.ImageItem, lut, img, size, rect, qapp)
    mine, item = _view_with(ScreenImageItem, lut, img, size, rect, qapp)
    a, b = _rgb(theirs.grab().toImage()), _rgb(mine.grab().toImage())
    assert item.copied > 0
    assert (a != b).any(-1).mean() <= most
    assert len(np.unique(b.reshape(-1, 3), axis=0)) > 200  # the image is there, not a blank view
    # levels other than (0, 255): pyqtgraph paints it, as before
    item.setLevels((10, 200))
    n = item.copied
    mine.grab()
    assert item.copied == n


def test_canvas_shows_each_colour_where_it_belongs(qapp):
    quad = np.zeros((2, 2, 3), np.uint8)
    quad[0, 0], quad[0, 1], quad[1, 0], quad[1, 1] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
    canvas = ImageCanvas()
    canvas.resize(300, 200)
    canvas.set_image(quad)
    canvas.show()
    qapp.processEvents()
    shot = _rgb(canvas.grab().toImage())
    r = canvas.image_rect()
    cx, cy = r.left() + r.width() / 2, r.top() + r.height() / 2
    for (dx, dy), colour in (((-1, -1), (255, 0, 0)), ((1, -1), (0, 255, 0)), ((-1, 1), (0, 0, 255)),
                             ((1, 1), (255, 255, 0))):
        y, x = int(cy + dy * r.height() / 4), int(cx + dx * r.width() / 4)
        assert tuple(shot[y, x]) == colour
    assert tuple(shot[5, 5]) == (14, 15, 19)  # outside the image: the background (300x200 fits a 200x200 image)


def test_canvas_badges_follow_the_canvas_size(qapp):
    """Badge layouts are kept between frames, but a resized canvas gets its own: the caption stays inside it."""
    canvas = ImageCanvas()
    canvas.set_image(np.zeros((50, 50, 3), np.uint8))
    canvas.caption = "guided backprop, norm, RF 35x35 px"
    canvas.resize(400, 300)
    wide, wide_font, _ = canvas.badge_layout(canvas.caption)
    canvas.resize(120, 300)
    narrow, narrow_font, _ = canvas.badge_layout(canvas.caption)
    assert canvas.rect().toRectF().contains(narrow) and narrow.width() < wide.width()
    assert narrow_font.pointSizeF() < wide_font.pointSizeF() or narrow.height() > wide.height()
    canvas.resize(400, 300)
    assert canvas.badge_layout(canvas.caption)[0] == wide
