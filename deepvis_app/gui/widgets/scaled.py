"""Images made at the size they cover on screen, in the screen's pixel format, with the GIL released: painting them
is then a copy.

PySide6 holds the GIL through every QPainter call, so a scaled `drawImage` (the raster engine samples each screen
pixel, converting an indexed image first) keeps the live worker's threads -- whose eager forward and backward walk
take the GIL between ops -- waiting while it draws. With nothing drawn at all the window's three-view rate rose
~10% (`benchmarks/gui_paint.py`, docs/development.md). OpenCV scales and colours with the GIL released; what is
left under the GIL is a blit of an RGB32 image (B, G, R, 255 in memory on little-endian machines).
"""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtGui import QImage

# nearest neighbour sampled at pixel centres, as Qt's unsmoothed scaling does (plain INTER_NEAREST is offset)
NEAREST = getattr(cv2, "INTER_NEAREST_EXACT", cv2.INTER_NEAREST)


def bgra_lut(lut: np.ndarray) -> np.ndarray:
    """A 256x3 RGB LUT as cv2.LUT's 1x256x4 table for B, G, R, 255."""
    table = np.empty((1, 256, 4), np.uint8)
    table[0, :, :3] = np.asarray(lut, np.uint8)[:256, ::-1]
    table[0, :, 3] = 255
    return table


def screen_image(arr: np.ndarray, size: tuple[int, int], *, lut: np.ndarray | None = None,
                 smooth: bool = False) -> np.ndarray:
    """uint8 HxW (grey, or indices into `lut`, a `bgra_lut` table) or HxWx3 RGB -> (h, w, 4) B, G, R, 255 at
    `size` = (w, h): nearest neighbour, or (`smooth`) bilinear, with area averaging where it shrinks by more than
    half (bilinear's 2x2 taps would then skip pixels). Down to half size bilinear reads every source pixel, and
    OpenCV's area averaging at a fractional factor cost 8x as much (0.33 vs 0.04 ms for a 224-px unit map shown at
    150 px, each frame)."""
    w, h = max(1, int(size[0])), max(1, int(size[1]))
    src_h, src_w = arr.shape[:2]
    if not smooth:
        how = NEAREST
    else:
        how = cv2.INTER_AREA if 2 * w < src_w and 2 * h < src_h else cv2.INTER_LINEAR
    if arr.ndim == 2 and lut is not None:
        if smooth:  # colours first, so the scaling blends colours, not indices
            return cv2.resize(cv2.LUT(cv2.cvtColor(arr, cv2.COLOR_GRAY2BGRA), lut), (w, h), interpolation=how)
        return cv2.LUT(cv2.cvtColor(cv2.resize(arr, (w, h), interpolation=how), cv2.COLOR_GRAY2BGRA), lut)
    scaled = arr if (w, h) == (src_w, src_h) else cv2.resize(arr, (w, h), interpolation=how)
    return cv2.cvtColor(scaled, cv2.COLOR_GRAY2BGRA if arr.ndim == 2 else cv2.COLOR_RGB2BGRA)


def rgb32(bgra: np.ndarray) -> QImage:
    """An (h, w, 4) B, G, R, 255 array as an RGB32 QImage borrowing its memory (the caller keeps the array)."""
    h, w = bgra.shape[:2]
    return QImage(bgra.data, w, h, bgra.strides[0], QImage.Format.Format_RGB32)


class ScreenCache:
    """The last screen image of one source array: remade when the array, its LUT, the size or the smoothing
    changed, so a repaint of the same result (a resize, a hover) costs a blit."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._held: tuple = ()  # the source and LUT of the key: alive, so their ids cannot be reused
        self._bgra: np.ndarray | None = None
        self._image: QImage | None = None

    def image(self, arr: np.ndarray, size: tuple[int, int], *, lut: np.ndarray | None = None,
              smooth: bool = False) -> QImage:
        key = (id(arr), id(lut), int(size[0]), int(size[1]), smooth)
        if key != self._key or self._image is None:
            self._bgra = screen_image(arr, size, lut=lut, smooth=smooth)
            self._image, self._key, self._held = rgb32(self._bgra), key, (arr, lut)
        return self._image

    def clear(self) -> None:
        self._key = self._bgra = self._image = None
        self._held = ()


def warp_window(src: np.ndarray, scale: tuple[float, float], offset: tuple[float, float],
                window: tuple[int, int, int, int]) -> np.ndarray:
    """The screen pixels `window` = (x0, y0, x1, y1) of `src` drawn with `screen = scale * pixel + offset` per axis
    (scales may be negative: a flipped axis), unsmoothed: each screen pixel shows the source pixel under its centre,
    as Qt's raster engine samples a scaled image."""
    (sx, sy), (tx, ty) = scale, offset
    x0, y0, x1, y1 = window
    # screen x -> source u = (x + 0.5 - tx) / sx; warpAffine rounds, so sample at u - 0.5 (floor of u, not round)
    inv = np.array([[1 / sx, 0.0, (x0 + 0.5 - tx) / sx - 0.5], [0.0, 1 / sy, (y0 + 0.5 - ty) / sy - 0.5]])
    return cv2.warpAffine(src, inv, (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
