"""Images with a known object mask for segmentation tests and scripts/measure_segment.py: a flower-like disc on a
dark green or plain background (drawn, seeded), scikit-image's horse silhouette, and photos pasted on a plain
background. Each returns (RGB uint8 HxWx3, bool HxW object mask)."""

from __future__ import annotations

import cv2
import numpy as np


def flower(size: int = 320, cx: float = 0.5, cy: float = 0.5, r: float = 0.22, seed: int = 0, petals: int = 10,
           bg: tuple[int, int, int] = (20, 70, 30), col: tuple[int, int, int] = (245, 140, 20),
           leaves: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """An orange (`col`) flower of radius r x size at (cx, cy) on a dark green (`bg`) ground with `leaves`
    lighter and darker leaf shapes: the photo of issue 30 that plain saliency segmented as background."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float32)
    img[:] = bg
    for _ in range(leaves):
        centre = (int(rng.uniform(0, size)), int(rng.uniform(0, size)))
        axes = (int(rng.uniform(8, 40) * size / 320), int(rng.uniform(4, 15) * size / 320))
        shade = (np.array(bg, np.float32) * rng.uniform(0.6, 1.5)).tolist()
        cv2.ellipse(img, centre, axes, rng.uniform(0, 180), 0, 360, shade, -1, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 2 * size / 320)
    x0, y0, rad = cx * size, cy * size, r * size
    obj = np.zeros((size, size), np.uint8)
    for k in range(petals):
        a = 2 * np.pi * k / petals
        centre = (int(x0 + 0.55 * rad * np.cos(a)), int(y0 + 0.55 * rad * np.sin(a)))
        cv2.ellipse(obj, centre, (int(0.5 * rad), int(0.22 * rad)), float(np.degrees(a)), 0, 360, 255, -1,
                    cv2.LINE_AA)
    cv2.circle(obj, (int(x0), int(y0)), int(0.3 * rad), 255, -1, cv2.LINE_AA)
    alpha = obj.astype(np.float32)[..., None] / 255
    petal = np.array(col, np.float32) * (0.85 + 0.15 * rng.random((size, size, 1)))
    img = img * (1 - alpha) + petal * alpha
    disc = np.zeros((size, size), np.uint8)
    cv2.circle(disc, (int(x0), int(y0)), int(0.25 * rad), 255, -1)
    img[disc > 0] = (120, 60, 10)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img, obj > 127


def horse() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's black horse silhouette on white (its mask is exact)."""
    import skimage.data

    bg = skimage.data.horse().astype(bool)  # True = white background
    return np.where(bg[..., None], 255, 0).astype(np.uint8).repeat(3, axis=-1), ~bg


def pasted(photo: np.ndarray, bg: tuple[int, int, int], top: int, left: int, side: int, size: int = 224,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`photo` resized to side x side at (top, left) on a plain `bg` ground with a little noise."""
    rng = np.random.default_rng(seed)
    img = np.clip(np.array(bg, np.float32) + rng.normal(0, 5, (size, size, 3)), 0, 255).astype(np.uint8)
    img[top:top + side, left:left + side] = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    mask = np.zeros((size, size), bool)
    mask[top:top + side, left:left + side] = True
    return img, mask


def fit_mask(vm, mask: np.ndarray) -> np.ndarray:
    """The object mask in the network's fitted input frame (same crop/resize as the image)."""
    return vm.preprocess.fit(np.where(mask[..., None], 255, 0).astype(np.uint8).repeat(3, axis=-1))[..., 0] > 127


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(int((a | b).sum()), 1))
