"""Measure neural style on real photos, in one run: the old defaults against the new ones (default), or L-BFGS
against Adam with the same budget of function evaluations (--optimizers).

Defaults (issue 30): for 5 (content, style) pairs of scikit-image photos (3 photo styles, a micrograph and a
gravel texture) runs the old defaults (init from the content photo, 100 evaluations), each change alone (the new
budget; the new init with 0 and with 100 evaluations) and the new defaults; reports the style loss of the content
photo itself (the fair "before", whatever the start image), of the result, their ratio, the content loss, the
evaluations used and the wall time on this machine. No cache (timings). Prints a Markdown table, then JSON.

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/measure_style.py > style.txt
    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/measure_style.py --optimizers --init content \
        --size 160 --steps 100 > opt.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import skimage.data
import torch

from deepvis_app import load_model
from deepvis_app.optimize.style import DEFAULT_STEPS, INITS, style_transfer

PAIRS = (("astronaut", "rocket"), ("chelsea", "astronaut"), ("rocket", "coffee"), ("coffee", "immunohistochemistry"),
         ("chelsea", "gravel"))
OPT_PAIRS = (("chelsea", "immunohistochemistry"), ("astronaut", "coffee"))
OPT_RUNS = (("lbfgs", None), ("adam", 0.02), ("adam", 0.05))


def rgb(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    return np.ascontiguousarray(np.stack([img] * 3, axis=-1) if img.ndim == 2 else img[..., :3])


def configs(steps: int) -> tuple[tuple[str, dict], ...]:
    """The old defaults, each change alone (budget, init), and the new defaults."""
    return (("old defaults (init content, 100 evals)", {"init": "content", "steps": 100}),
            (f"init content, {steps} evals", {"init": "content", "steps": steps}),
            ("recolor alone (0 evals)", {"init": "recolor", "steps": 0}),
            ("init recolor, 100 evals", {"init": "recolor", "steps": 100}),
            (f"new defaults (init recolor, {steps} evals)", {"init": "recolor", "steps": steps}))


def run(vm, content: str, style: str, size: int, style_weight: float, **kw) -> dict:
    t0 = time.perf_counter()
    res = style_transfer(vm, rgb(content), rgb(style), size=size, style_weight=style_weight, use_cache=False, **kw)
    seconds = time.perf_counter() - t0
    photo = res.losses_photo["style"]
    return {"content": content, "style": style, **{k: v for k, v in kw.items() if k != "steps"},
            "evals": res.evals, "style_loss_photo": round(photo, 5),
            "style_loss_start": round(res.losses_start["style"], 5),
            "style_loss_end": round(res.losses_end["style"], 5),
            "style_reduction": round(photo / max(res.losses_end["style"], 1e-12), 1),
            "content_loss_end": round(res.losses_end["content"], 3), "total_end": round(res.losses_end["total"], 3),
            "seconds": round(seconds, 1), "width": int(res.image.shape[1]), "height": int(res.image.shape[0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--optimizers", action="store_true", help="L-BFGS against Adam instead of old/new defaults")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="the new defaults' budget of evaluations")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--style-weight", type=float, default=1e3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", choices=INITS, default="recolor", help="start image for --optimizers")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vm = load_model(args.model, device=args.device)
    rows = []
    if args.optimizers:
        for content, style in OPT_PAIRS:
            for optimizer, lr in OPT_RUNS:
                rows.append(run(vm, content, style, args.size, args.style_weight, optimizer=optimizer, lr=lr,
                                steps=args.steps, init=args.init))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    else:
        names = configs(args.steps)
        print("| content / style | run | evals | style loss: photo -> result | reduction | content loss | seconds |")
        print("|---|---|---|---|---|---|---|")
        for content, style in PAIRS:
            for name, kw in names:
                row = run(vm, content, style, args.size, args.style_weight, **kw)
                row["run"] = name
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                print(f"| {content} / {style} | {name} | {row['evals']} | {row['style_loss_photo']:.4f} -> "
                      f"{row['style_loss_end']:.4f} | {row['style_reduction']:.1f}x | {row['content_loss_end']:.3f} | "
                      f"{row['seconds']:.1f} |", flush=True)
        for name, _ in names:
            mine = [r["style_reduction"] for r in rows if r["run"] == name]
            print(f"{name}: reduction geometric mean {float(np.exp(np.mean(np.log(mine)))):.1f}x, "
                  f"min {min(mine):.1f}x, max {max(mine):.1f}x", flush=True)
    print(json.dumps({"model": args.model, "device": args.device, "size": args.size,
                      "style_weight": args.style_weight, "torch_threads": torch.get_num_threads(),
                      "cpus": os.cpu_count(), "machine": platform.machine(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
