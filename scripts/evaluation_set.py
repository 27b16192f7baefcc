"""Write the 20 photos docs/evaluation.md is measured on into a folder: scikit-image's natural photos (offline)
and crops of their objects, so anyone can rerun `deepvis evaluate` on the same images.

Usage: python scripts/evaluation_set.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data as data

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "clock", "coins", "moon", "hubble_deep_field",
          "immunohistochemistry", "retina", "horse")
# (photo, top, left, height, width): objects cut out of the photos, so the class fills a different share of the frame
CROPS = (("coffee", 40, 80, 300, 360), ("chelsea", 20, 100, 260, 260), ("astronaut", 0, 120, 260, 260),
         ("rocket", 0, 300, 427, 200), ("camera", 40, 150, 300, 300), ("clock", 0, 150, 300, 250),
         ("astronaut", 250, 300, 262, 212), ("coffee", 0, 0, 400, 300))


def rgb(name: str) -> np.ndarray:
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.dtype != np.uint8:
        img = (255 * (img.astype(np.float64) / max(float(img.max()), 1e-9))).astype(np.uint8)
    return img[..., :3]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    images = {name: rgb(name) for name in PHOTOS}
    for name, img in images.items():
        cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    for i, (name, top, left, h, w) in enumerate(CROPS):
        crop = images[name][top:top + h, left:left + w]
        cv2.imwrite(str(out / f"{name}_crop{i}.png"), cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR))
    print(f"{len(PHOTOS) + len(CROPS)} images in {out}")


if __name__ == "__main__":
    main()
