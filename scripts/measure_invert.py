"""Measure feature inversion on real photos: relative code error per layer, and whether the reconstruction keeps the
original's top-1 class (classified at the model's input size, after the 8-bit PNG round trip the CLI does).

Prints JSON on stdout: one row per (photo, layer) plus a per-layer summary. Results are cached like the CLI's, so
`scripts/gallery_invert.py` with the same settings reuses them.

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/measure_invert.py > invert.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import cv2
import numpy as np
import skimage.data
import torch

from deepvis_app import load_model
from deepvis_app.fileio import encode_png
from deepvis_app.optimize.invert import invert, top1

PHOTOS = ("chelsea", "coffee", "astronaut")
LAYERS = ("_blocks.1", "_blocks.3", "_blocks.7", "_blocks.10", "_blocks.14")


def png_round_trip(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(encode_png(rgb), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--photos", nargs="+", default=list(PHOTOS))
    ap.add_argument("--layers", nargs="+", default=list(LAYERS))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()
    vm = load_model(args.model, device=args.device)
    rows = []
    for name in args.photos:
        photo = getattr(skimage.data, name)()
        for layer in args.layers:
            t0 = time.perf_counter()
            res = invert(vm, photo, layer, steps=args.steps, size=args.size, seed=args.seed,
                         use_cache=not args.no_cache)
            seconds = time.perf_counter() - t0
            o_idx, o_p = top1(vm, res.original)
            r_idx, r_p = top1(vm, png_round_trip(res.image))
            rows.append({"photo": name, "layer": layer, "code_error": round(res.code_error, 4),
                         "original_top1": vm.categories[o_idx], "original_prob": round(o_p, 3),
                         "reconstruction_top1": vm.categories[r_idx], "reconstruction_prob": round(r_p, 3),
                         "same_top1": r_idx == o_idx, "seconds": round(seconds, 1), "cached": res.cached})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = {}
    for layer in args.layers:
        mine = [r for r in rows if r["layer"] == layer]
        summary[layer] = {"median_code_error": round(statistics.median(r["code_error"] for r in mine), 4),
                          "same_top1": f"{sum(r['same_top1'] for r in mine)}/{len(mine)}"}
    print(json.dumps({"model": args.model, "device": args.device, "size": args.size, "steps": args.steps,
                      "seed": args.seed, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "machine": platform.machine(), "rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
