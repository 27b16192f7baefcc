"""Draw the app icon (assets/icon.png): a 3x3 grid of activation-map tiles, one unit picked out in amber.

Run once by hand (`python scripts/make_icon.py`); the PNG is committed, so the app needs no drawing code.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def draw_icon(size: int = 256) -> np.ndarray:
    """RGBA uint8 icon: transparent corners, dark rounded square, tiles with blob-like activations."""
    s = size
    img = np.zeros((s, s, 4), np.uint8)
    mask = np.zeros((s, s), np.uint8)
    r = s // 8
    cv2.rectangle(mask, (r, 0), (s - 1 - r, s - 1), 255, -1)
    cv2.rectangle(mask, (0, r), (s - 1, s - 1 - r), 255, -1)
    for cx, cy in ((r, r), (s - 1 - r, r), (r, s - 1 - r), (s - 1 - r, s - 1 - r)):
        cv2.circle(mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
    img[..., :3] = (24, 28, 38)
    img[..., 3] = mask
    rng = np.random.default_rng(7)
    pad, n = s // 12, 3
    tile = (s - pad * (n + 1)) // n
    yy, xx = np.mgrid[0:tile, 0:tile] / tile
    for k in range(n * n):
        row, col = divmod(k, n)
        act = np.zeros((tile, tile))
        for _ in range(3):
            cy, cx, w = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85), rng.uniform(0.08, 0.2)
            act += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * w * w))
        act = np.clip(act / act.max(), 0, 1)
        if k == 4:  # the selected unit: amber
            rgb = np.stack([255 * act, 180 * act, 40 * act], -1)
        else:
            rgb = np.stack([90 * act + 30, 150 * act + 30, 215 * act + 40], -1)
        y0, x0 = pad + row * (tile + pad), pad + col * (tile + pad)
        img[y0:y0 + tile, x0:x0 + tile, :3] = rgb.astype(np.uint8)
    y0 = x0 = pad + tile + pad
    cv2.rectangle(img, (x0 - 3, y0 - 3), (x0 + tile + 2, y0 + tile + 2), (255, 200, 60, 255), 3, cv2.LINE_AA)
    img[..., 3] = np.minimum(img[..., 3], mask)
    return img


if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "deepvis_app" / "assets" / "icon.png"
    rgba = draw_icon()
    cv2.imwrite(str(out), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    print(out)
