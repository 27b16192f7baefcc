"""docs/adversarial.png: a photo, its change magnified x20, the attacked photo, and two fooling images.

    .venv/bin/python scripts/make_adversarial_figure.py docs/adversarial.png
"""

from __future__ import annotations

import sys

import cv2
import numpy as np
import skimage.data

from deepvis_app import adversarial as adv
from deepvis_app import load_model
from deepvis_app.fileio import atomic_write_png

GAIN = 20


def tile(img: np.ndarray, lines: list[str], size: int = 224) -> np.ndarray:
    """The image with its caption lines underneath on white."""
    out = np.full((size + 18 * len(lines) + 8, size, 3), 255, np.uint8)
    out[:size] = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)
    for i, text in enumerate(lines):
        cv2.putText(out, text, (4, size + 18 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def main(path: str) -> int:
    vm = load_model(device="cpu")
    cats = vm.categories
    photo = vm.preprocess.fit(skimage.data.chelsea())
    ostrich = cats.index("ostrich")
    st = adv.pgd_targeted(vm, photo, ostrich, eps=2, steps=20)
    bus = adv.fooling_image(vm, cats.index("school bus"), start="noise")
    goldfish = adv.fooling_image(vm, cats.index("goldfish"), start="shapes")
    tiles = [
        tile(photo, ["original", f"{cats[st.orig_top1]} {st.orig_prob:.0%}"]),
        tile(adv.magnify(st.delta, GAIN), [f"change x{GAIN} (grey = 0)", f"L-inf {st.linf} levels of 255"]),
        tile(st.image, [f"attacked, {st.step} steps", f"{cats[st.top1]} {st.top1_prob:.0%}"]),
        tile(bus.image, ["from noise", f"{cats[bus.top1]} {bus.top1_prob:.1%}"]),
        tile(goldfish.image, ["from shapes", f"{cats[goldfish.top1]} {goldfish.top1_prob:.1%}"]),
    ]
    gap = np.full((tiles[0].shape[0], 8, 3), 255, np.uint8)
    row = np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)
    atomic_write_png(path, row)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/adversarial.png"))
