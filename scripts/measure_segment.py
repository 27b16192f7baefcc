"""Measure `segment` before and after issue 30: the old default (plain saliency, no guards), plain saliency with the
guards, and the new default (SmoothGrad 16 + guards), on images with a known object.

Known masks (IoU): drawn flowers on dark green / grey / black grounds (tests/segment_cases.py), scikit-image's
horse silhouette, a cat photo pasted on plain grounds. Known boxes (share of the mask inside the object's box,
fitted 224 px frame): coffee cup pasted on a plain ground, and the skimage photos coffee, rocket, camera,
motorcycle, clock, astronaut. Prints a Markdown table and a JSON summary on stdout.

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/measure_segment.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from segment_cases import fit_mask, flower, horse, iou, pasted  # noqa: E402

from deepvis_app import load_model  # noqa: E402
from deepvis_app.segment import segment  # noqa: E402

VARIANTS = {"old default (plain)": dict(smooth=0, guard=False), "plain + guards": dict(smooth=0, guard=True),
            "new default (SmoothGrad 16 + guards)": dict(smooth=16, guard=True)}
FLOWERS = (dict(), dict(cx=0.35, cy=0.6, r=0.18, seed=1), dict(cx=0.65, cy=0.4, r=0.28, seed=2),
           dict(r=0.15, seed=3, col=(250, 200, 30)), dict(seed=4, bg=(15, 40, 20), col=(230, 80, 30)),
           dict(seed=5, bg=(60, 60, 60), col=(240, 150, 40)), dict(seed=6, bg=(5, 5, 5), r=0.3),
           dict(seed=7, cx=0.3, cy=0.3, r=0.2, col=(200, 40, 120)), dict(seed=8, leaves=0, bg=(25, 60, 25)),
           dict(seed=9, leaves=0, bg=(10, 35, 15), r=0.3), dict(seed=10, leaves=0, bg=(40, 40, 40), r=0.15))


def rgb(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    img = img[0] if isinstance(img, tuple) else img
    return np.ascontiguousarray(np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3])


def box(top: int, left: int, bottom: int, right: int) -> np.ndarray:
    m = np.zeros((224, 224), bool)
    m[top:bottom, left:right] = True
    return m


def cases(vm) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """(name, fitted image, object mask or box in the fitted frame, "mask" | "box")."""
    fit = vm.preprocess.fit
    out = []
    for i, kw in enumerate(FLOWERS):
        img, obj = flower(**kw)
        out.append((f"flower {i}", fit(img), fit_mask(vm, obj), "mask"))
    img, obj = horse()
    out.append(("horse", fit(img), fit_mask(vm, obj), "mask"))
    cat, cup = fit(rgb("chelsea")), fit(rgb("coffee"))
    for i, (bg, top, left, side) in enumerate([((20, 60, 25), 56, 56, 112), ((200, 200, 200), 90, 20, 100)]):
        img, obj = pasted(cat, bg, top, left, side, seed=i)
        out.append((f"cat on plain {i}", img, obj, "mask"))
    for i, (bg, top, left, side) in enumerate([((15, 15, 15), 30, 80, 120), ((30, 90, 40), 60, 60, 140)]):
        img, obj = pasted(cup, bg, top, left, side, seed=i)
        out.append((f"cup on plain {i}", img, obj, "box"))
    for name, b in (("coffee", (0, 20, 200, 224)), ("rocket", (50, 90, 224, 135)), ("camera", (40, 60, 224, 190)),
                    ("stereo_motorcycle", (80, 0, 224, 224)), ("clock", (30, 50, 140, 175)),
                    ("astronaut", (0, 0, 224, 165))):
        out.append((name, fit(rgb(name)), box(*b), "box"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vm = load_model(args.model, device="cpu")
    rows, seconds = [], {v: 0.0 for v in VARIANTS}
    for name, img, truth, kind in cases(vm):
        with torch.no_grad():
            cls = int(vm.net(vm.preprocess.to_tensor(img)).argmax())
        row = {"image": name, "class": vm.categories[cls], "kind": kind}
        for v, kw in VARIANTS.items():
            t0 = time.perf_counter()
            seg = segment(vm, img, cls, **kw)
            seconds[v] += time.perf_counter() - t0
            score = iou(seg.mask, truth) if kind == "mask" else float((seg.mask & truth).sum() / max(seg.mask.sum(), 1))
            row[v] = {"score": round(score, 3), "area": round(seg.area, 3), "guards": list(seg.guards)}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print("| image | class | measure | " + " | ".join(VARIANTS) + " |")
    print("|---|---|---|" + "---|" * len(VARIANTS))
    for r in rows:
        cells = []
        for v in VARIANTS:
            c = r[v]
            note = f", {'+'.join(c['guards'])}" if c["guards"] else ""
            cells.append(f"{c['score']:.2f} ({100 * c['area']:.0f}%{note})")
        print(f"| {r['image']} | {r['class']} | {'IoU' if r['kind'] == 'mask' else 'in box'} | " + " | ".join(cells)
              + " |")
    summary = {}
    for v in VARIANTS:
        ious = [r[v]["score"] for r in rows if r["kind"] == "mask"]
        inbox = [r[v]["score"] for r in rows if r["kind"] == "box"]
        summary[v] = {"mask_cases": len(ious), "iou_mean": round(float(np.mean(ious)), 3),
                      "iou_at_least_0.7": sum(s >= 0.7 for s in ious), "box_cases": len(inbox),
                      "in_box_mean": round(float(np.mean(inbox)), 3),
                      "seconds_per_image": round(seconds[v] / len(rows), 2)}
    print(json.dumps({"model": args.model, "threads": args.threads, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
