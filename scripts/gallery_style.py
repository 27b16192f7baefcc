"""Gallery for docs/style.md: photos painted in the style of other images with the default model and L-BFGS, the
old defaults (start from the content photo, 100 evaluations) beside the new ones (start from the content recoloured
to the style's colours, 200 evaluations).

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/gallery_style.py --out docs/style.png
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import skimage.data

from deepvis_app import load_model
from deepvis_app.fileio import atomic_write_png
from deepvis_app.optimize.invert import side_by_side
from deepvis_app.optimize.style import DEFAULT_STEPS, fit_max_side, style_transfer

sys.path.insert(0, __file__.rpartition("/")[0])
from gallery_invert import stack_rows  # noqa: E402


def strokes(size: int = 256, seed: int = 0) -> np.ndarray:
    """A seeded abstract 'painting': thick curved strokes in a warm/cool palette (a style image that ships with
    nothing and needs no download)."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (30, 40, 90), np.uint8)
    palette = [(245, 200, 60), (230, 110, 40), (40, 120, 200), (250, 240, 220), (20, 60, 140), (200, 60, 60)]
    for _ in range(220):
        pts = np.cumsum(rng.normal(0, 9, (6, 2)), axis=0) + rng.uniform(0, size, 2)
        color = palette[int(rng.integers(len(palette)))]
        cv2.polylines(img, [pts.astype(np.int32)], False, color, int(rng.integers(3, 9)), cv2.LINE_AA)
    return img


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/style.png")
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--style-weight", type=float, default=1e3)
    args = ap.parse_args()
    vm = load_model("efficientnet_lite0", device="cpu")
    gravel = np.stack([skimage.data.gravel()] * 3, axis=-1)
    pairs = [("chelsea", skimage.data.chelsea(), "strokes", strokes()),
             ("astronaut", skimage.data.astronaut(), "rocket (photo)", skimage.data.rocket()),
             ("chelsea", skimage.data.chelsea(), "astronaut (photo)", skimage.data.astronaut()),
             ("coffee", skimage.data.coffee(), "immunohistochemistry", skimage.data.immunohistochemistry()),
             ("chelsea", skimage.data.chelsea(), "gravel", gravel)]
    rows = []
    for cname, content, sname, style in pairs:
        old = style_transfer(vm, content, style, steps=100, init="content", size=args.size,
                             style_weight=args.style_weight)
        new = style_transfer(vm, content, style, steps=args.steps, size=args.size, style_weight=args.style_weight)
        cut = [f"{r.losses_photo['style'] / r.losses_end['style']:.0f}x" for r in (old, new)]
        rows.append(side_by_side([fit_max_side(content, args.size), fit_max_side(style, args.size), old.image,
                                  new.image],
                                 [f"content: {cname}", f"style: {sname}", f"old: content, 100 ev ({cut[0]})",
                                  f"new: recolor, {new.evals} ev ({cut[1]})"]))
    atomic_write_png(args.out, stack_rows(rows))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
