"""numpy -> QImage without copies, colormap LUTs, and the few per-result image ops the panes need.

A QImage made here *borrows* the array's memory: whoever shows it must keep the array alive as long as the
QImage (the canvases store both together).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PySide6.QtGui import QImage

from ...state import COLORMAPS  # noqa: F401 - the choosable colormaps live with the state (one list)

BORDER_RGB = (20, 22, 28)  # grid border pixels (value 0): darker than any tile colour
SIGNED_COLORMAP = "CET-D1"  # diverging blue-white-red: zero (value 128) is white-ish


def to_qimage(arr: np.ndarray) -> QImage:
    """uint8 HxW (grayscale) or HxWx3 (RGB) -> QImage sharing the array's memory (no copy)."""
    if arr.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)  # caller keeps the original; this copy is then kept by the canvas
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        return QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_Grayscale8)
    if arr.ndim == 3 and arr.shape[2] == 3:
        return QImage(arr.data, w, h, arr.strides[0], QImage.Format.Format_RGB888)
    raise ValueError(f"expected HxW or HxWx3, got shape {arr.shape}")


def indexed_qimage(arr: np.ndarray, lut: np.ndarray) -> QImage:
    """uint8 HxW + 256x3 LUT -> an Indexed8 QImage sharing the array's memory (the colormap costs nothing)."""
    img = QImage(arr.data, arr.shape[1], arr.shape[0], arr.strides[0], QImage.Format.Format_Indexed8)
    img.setColorTable(_color_table(np.ascontiguousarray(lut, np.uint8).tobytes()))
    return img


@lru_cache(maxsize=16)
def _color_table(rgb: bytes) -> list[int]:
    """A LUT's entries as QImage colours, made once per LUT (the grid asks every frame: 0.27 ms of Python)."""
    return [0xFF000000 | (r << 16) | (g << 8) | b for r, g, b in zip(rgb[0::3], rgb[1::3], rgb[2::3], strict=True)]


def make_lut(name: str, *, border: bool = True) -> np.ndarray:
    """256x3 uint8 lookup table; with `border`, entry 0 (the grid's padding) is a dark neutral and entries
    1..255 span the colormap (render_grid puts tile values in 1..255)."""
    if name == "gray":
        ramp = np.linspace(0, 255, 255 if border else 256).round().astype(np.uint8)
        body = np.stack([ramp] * 3, axis=1)
    else:
        import pyqtgraph as pg

        cmap = pg.colormap.get(name)
        body = cmap.getLookupTable(0.0, 1.0, 255 if border else 256, alpha=False).astype(np.uint8)[:, :3]
    if border:
        body = np.concatenate([np.array([BORDER_RGB], np.uint8), body])
    return np.ascontiguousarray(body)


def apply_lut(gray: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 HxW -> uint8 HxWx3 through a 256-entry LUT."""
    return lut[gray]


def overlay(rgb: np.ndarray, heat: np.ndarray, lut: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """Blend a uint8 HxW map (coloured by `lut`) over an RGB image; strong activations are more opaque."""
    colored = lut[heat].astype(np.float32)
    a = 0.1 + alpha * (heat.astype(np.float32) / 255.0)[..., None]
    out = rgb.astype(np.float32) * (1 - a) + colored * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
