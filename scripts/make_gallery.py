"""Make docs/gallery.png (12 classes, default preset) and docs/presets.png (one class across presets).

Each tile is labelled with the class and the probability the same model gives the tile's saved 8-bit image
(read back from PNG bytes and classified through the model's own preprocessing, like `deepvis optimize
--json`). Results go through the optimize cache, so a rerun after a crash only computes what is missing.

    .venv/bin/python scripts/make_gallery.py            # both images, ~10 min on one CPU core
    .venv/bin/python scripts/make_gallery.py --only presets
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from deepvis_app.optimize import PRESETS, optimize
from deepvis_app.optimize import objectives as O
from deepvis_app.optimize.cache import write_png
from deepvis_app.zoo import load_model

CLASSES = ["goose", "flamingo", "ostrich", "dumbbell", "dalmatian", "goldfish", "monarch", "zebra",
           "pineapple", "strawberry", "school bus", "king penguin"]
PRESET_ROW = ["default", "lucid", "simonyan2013", "yosinski1", "yosinski2", "yosinski3", "yosinski4", "pixel"]
TILE = 224


def reload_prob(vm, rgb: np.ndarray, index: int) -> float:
    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    back = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    with torch.no_grad():
        return float(torch.softmax(vm.net(vm.preprocess(back)), 1)[0, index])


def tile(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    img = cv2.resize(rgb, (TILE, TILE), interpolation=cv2.INTER_CUBIC if rgb.shape[0] < TILE else cv2.INTER_AREA)
    band = np.full((18 * len(lines) + 6, TILE, 3), 255, np.uint8)
    for k, text in enumerate(lines):
        cv2.putText(band, text, (4, 16 + 18 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([img, band], 0)


def grid(tiles: list[np.ndarray], cols: int, pad: int = 4) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = t
    return out


def run(vm, name: str, preset: str, seed: int) -> tuple[np.ndarray, float, float]:
    i = vm.categories.index(name)
    t = time.perf_counter()
    res = optimize(vm, O.class_logit(i), preset=preset, seed=seed, yield_every=10**9)
    p = reload_prob(vm, res.image, i)
    print(f"{preset:>13} {name:<14} p={p:.3f} logit={res.value:.1f} "
          f"{'cached' if res.cached else f'{time.perf_counter() - t:.0f}s'}", file=sys.stderr, flush=True)
    return res.image, p, res.value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("gallery", "presets"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset-class", default="flamingo")
    ap.add_argument("--out-dir", default=str(Path(__file__).resolve().parent.parent / "docs"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vm = load_model("efficientnet_lite0", device="cpu")
    out = Path(args.out_dir)
    if args.only in (None, "gallery"):
        tiles = []
        for name in CLASSES:
            img, p, _ = run(vm, name, "default", args.seed)
            tiles.append(tile(img, [f"{name}  p={p:.2f}"]))
        write_png(out / "gallery.png", grid(tiles, 4))
    if args.only in (None, "presets"):
        tiles = []
        for preset in PRESET_ROW:
            img, p, _ = run(vm, args.preset_class, preset, args.seed)
            s = PRESETS[preset]
            tiles.append(tile(img, [f"{preset}  p={p:.2f}", f"{s.param}, {s.steps} steps, {s.size}px"]))
        write_png(out / "presets.png", grid(tiles, 4))


if __name__ == "__main__":
    main()
