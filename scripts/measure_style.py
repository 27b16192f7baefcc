"""Measure neural style: L-BFGS against Adam with the same budget of function evaluations, on real photos.

For each (content, style) pair of scikit-image photos, runs `style_transfer` with each optimizer (Adam at two step
sizes) for --evals forward+backward passes and reports the final relative style and content losses, the weighted
total, and the wall time on this machine. No cache (timings). Prints JSON on stdout.

    flock /tmp/deepvis-heavy.lock .venv/bin/python scripts/measure_style.py > style.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import skimage.data
import torch

from deepvis_app import load_model
from deepvis_app.optimize.style import style_transfer

PAIRS = (("chelsea", "immunohistochemistry"), ("astronaut", "coffee"))
RUNS = (("lbfgs", None), ("adam", 0.02), ("adam", 0.05))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--evals", type=int, default=100, help="function evaluations per run")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--style-weight", type=float, default=1e3)
    args = ap.parse_args()
    vm = load_model(args.model, device=args.device)
    rows = []
    for content_name, style_name in PAIRS:
        content, style = getattr(skimage.data, content_name)(), getattr(skimage.data, style_name)()
        for optimizer, lr in RUNS:
            t0 = time.perf_counter()
            res = style_transfer(vm, content, style, optimizer=optimizer, lr=lr, steps=args.evals, size=args.size,
                                 style_weight=args.style_weight, use_cache=False)
            seconds = time.perf_counter() - t0
            rows.append({"content": content_name, "style": style_name, "optimizer": optimizer,
                         "lr": res.settings["lr"], "evals": res.evals,
                         "style_loss_start": round(res.losses_start["style"], 5),
                         "style_loss_end": round(res.losses_end["style"], 5),
                         "content_loss_end": round(res.losses_end["content"], 4),
                         "total_start": round(res.losses_start["total"], 3),
                         "total_end": round(res.losses_end["total"], 3), "seconds": round(seconds, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    wins = 0
    for content_name, style_name in PAIRS:
        mine = [r for r in rows if r["content"] == content_name and r["style"] == style_name]
        best = min(mine, key=lambda r: r["total_end"])
        wins += best["optimizer"] == "lbfgs"
    print(json.dumps({"model": args.model, "device": args.device, "size": args.size, "evals": args.evals,
                      "style_weight": args.style_weight, "torch_threads": torch.get_num_threads(),
                      "cpus": os.cpu_count(), "machine": platform.machine(), "rows": rows,
                      "lbfgs_lowest_total": f"{wins}/{len(PAIRS)}"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
