"""Gallery for docs/inversion.md: real photos reconstructed from deeper and deeper layers of the default model.

Same settings as scripts/measure_invert.py (128 px, 100 steps, seed 0), so with the same DEEPVIS_CACHE it reuses
that run's reconstructions. Caption: layer, relative code error, and "=" when the top-1 class is kept.

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/gallery_invert.py --out docs/inversion.png
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import skimage.data

from deepvis_app import load_model
from deepvis_app.fileio import atomic_write_png
from deepvis_app.optimize.invert import invert, side_by_side, top1

LAYERS = ("_blocks.1", "_blocks.3", "_blocks.7", "_blocks.10", "_blocks.14")


def stack_rows(rows: list[np.ndarray], pad: int = 6) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    out = []
    for r in rows:
        canvas = np.full((r.shape[0], w, 3), 255, np.uint8)
        canvas[:, :r.shape[1]] = r
        out += [canvas, np.full((pad, w, 3), 255, np.uint8)]
    return np.concatenate(out[:-1], axis=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/inversion.png")
    ap.add_argument("--photos", nargs="+", default=["chelsea", "coffee"])
    ap.add_argument("--layers", nargs="+", default=list(LAYERS))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    vm = load_model("efficientnet_lite0", device="cpu")
    rows = []
    for name in args.photos:
        photo = getattr(skimage.data, name)()
        results = [invert(vm, photo, layer, steps=args.steps, size=args.size) for layer in args.layers]
        o_idx, _ = top1(vm, results[0].original)
        labels = [f"photo: {vm.categories[o_idx][:14]}"]
        for layer, r in zip(args.layers, results, strict=True):
            same = "=" if top1(vm, r.image)[0] == o_idx else "x"
            labels.append(f"{layer} {r.code_error:.2f} {same}")
        rows.append(side_by_side([results[0].original] + [r.image for r in results], labels))
    atomic_write_png(args.out, stack_rows(rows))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
