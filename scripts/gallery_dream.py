"""Gallery for docs/dream.md: one photo dreamed at low, middle and high layers of the default model.

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/gallery_dream.py --out docs/dream.png
"""

from __future__ import annotations

import argparse
import sys

import cv2
import skimage.data

from deepvis_app import load_model
from deepvis_app.fileio import atomic_write_png
from deepvis_app.optimize.dream import dream
from deepvis_app.optimize.invert import side_by_side

sys.path.insert(0, __file__.rpartition("/")[0])
from gallery_invert import stack_rows  # noqa: E402

LAYERS = ("_blocks.1", "_blocks.3", "_blocks.7", "_blocks.10", "_blocks.14")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/dream.png")
    ap.add_argument("--photo", default="chelsea")
    ap.add_argument("--width", type=int, default=240)
    ap.add_argument("--layers", nargs="+", default=list(LAYERS))
    ap.add_argument("--octaves", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    vm = load_model("efficientnet_lite0", device="cpu")
    photo = getattr(skimage.data, args.photo)()
    h = round(photo.shape[0] * args.width / photo.shape[1])
    photo = cv2.resize(photo, (args.width, h), interpolation=cv2.INTER_AREA)
    tiles = [photo] + [dream(vm, photo, layer, octaves=args.octaves, steps=args.steps).image for layer in args.layers]
    labels = ["photo"] + list(args.layers)
    half = (len(tiles) + 1) // 2
    rows = [side_by_side(tiles[:half], labels[:half]), side_by_side(tiles[half:], labels[half:])]
    atomic_write_png(args.out, stack_rows(rows))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
