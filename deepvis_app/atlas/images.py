"""Images for the web: small WebP (or JPEG) thumbnails for pages, lossless PNG originals behind links.

Every image of the site is encoded once (a unit's best patch is the same file on its layer page, the index strip
and its own page), so a site costs one thumbnail per stored crop plus one thumbnail and one original per image.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import ParamError
from ..fileio import encode_png

FORMATS = {"webp": (".webp", cv2.IMWRITE_WEBP_QUALITY), "jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY)}
THUMB_SIDE = 128  # the longest side of a thumbnail; smaller crops keep their pixels (CSS scales them up)


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ParamError("image_format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def suffix(fmt: str) -> str:
    return FORMATS[check_format(fmt)][0]


def fit_side(rgb: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Shrink so the longest side is at most `side` (area averaging); never enlarge."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def encode_thumb(rgb: np.ndarray, fmt: str = "webp", quality: int = 80, side: int = THUMB_SIDE) -> bytes:
    """RGB uint8 HxWx3 -> compressed thumbnail bytes (WebP or JPEG)."""
    ext, flag = FORMATS[check_format(fmt)]
    small = np.ascontiguousarray(fit_side(rgb, side))
    if small.shape[0] == 0 or small.shape[1] == 0:
        small = np.zeros((1, 1, 3), np.uint8)
    ok, data = cv2.imencode(ext, cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [flag, int(quality)])
    if not ok:
        raise OSError(f"cannot encode a {fmt} image")
    return data.tobytes()


def encode_original(rgb: np.ndarray) -> bytes:
    """The lossless original a thumbnail links to."""
    return encode_png(rgb, compression=6)
