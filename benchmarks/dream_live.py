"""Live DeepDream rate: frames per second of `dream_frame` on a 224-px camera-sized frame, per layer and step
count, next to the plain forward the live view already pays; prints one JSON object.

Usage: flock /tmp/deepvis-heavy.lock .venv/bin/python benchmarks/dream_live.py [--reps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import skimage.data
import torch

from deepvis_app import load_model
from deepvis_app.optimize.dream import dream_frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", nargs="+", default=["_blocks.1", "_blocks.3", "_blocks.7", "_blocks.10"])
    ap.add_argument("--steps", nargs="+", type=int, default=[1, 2, 4])
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    vm = load_model(args.model, device=args.device)
    frame = vm.preprocess.fit(skimage.data.astronaut())
    with torch.no_grad():
        x = vm.preprocess(frame)
        for _ in range(3):
            vm.net(x)
        t = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            vm.net(x)
            t.append(time.perf_counter() - t0)
    rows = [{"what": "plain forward (no grad)", "ms": round(1000 * statistics.median(t), 1)}]
    prev = None
    for layer in args.layers:
        for steps in args.steps:
            dream_frame(vm, frame, layer, steps=steps)  # warm-up
            t = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                prev = dream_frame(vm, frame, layer, steps=steps, previous=prev, carry=0.5)
                t.append(time.perf_counter() - t0)
            ms = 1000 * statistics.median(t)
            rows.append({"layer": layer, "steps": steps, "ms": round(ms, 1), "fps": round(1000 / ms, 1)})
    print(json.dumps({"model": args.model, "device": args.device, "frame": list(frame.shape),
                      "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
