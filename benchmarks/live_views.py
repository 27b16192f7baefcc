"""Live views vs the bare forward, per model: frames per second of `FrameProcessor.process` with no view, with a
live Grad-CAM overlay of the top class, and (transformers) with the attention view, beside `net(x)` alone on the
same frames and the layout the pipeline runs (its channels-last copy on the CPU). Rounds alternate; medians.

Goals (issues 25, 26): the Grad-CAM overlay costs <= 10% of the frame rate; DeiT-tiny with one attention view
>= 0.8x its bare forward rate. Prints JSON.

Usage: python benchmarks/live_views.py [--models efficientnet_lite0,convnext_tiny,vit_b_16,deit_tiny]
       [--device cpu] [--frames 20] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import skimage.data
import torch

from deepvis_app import load_model
from deepvis_app.fastnet import fast_copy
from deepvis_app.pipeline import FrameProcessor
from deepvis_app.pipeline.frames import Frame
from deepvis_app.sources import fit_image
from deepvis_app.values import ViewRequest


def frames(n: int) -> list[np.ndarray]:
    photos = [skimage.data.coffee(), skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.rocket()]
    return [fit_image(photos[i % len(photos)], 320, "center") for i in range(n)]


def bare_fps(vm, imgs) -> float:
    xs = [vm.preprocess(f) for f in imgs]
    net = vm.net
    if vm.device.type == "cpu":
        net = fast_copy(vm.net, xs[0], fold=False)
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    with torch.inference_mode():
        net(xs[0])
        t = time.perf_counter()
        for x in xs:
            net(x)
        if vm.device.type == "cuda":
            torch.cuda.synchronize()
    return len(xs) / (time.perf_counter() - t)


def process_fps(proc: FrameProcessor, imgs, req: ViewRequest) -> float:
    proc.process(Frame(0, imgs[0], 0.0), req)  # warm-up: model copy, layer lookups
    t = time.perf_counter()
    for i, img in enumerate(imgs):
        proc.process(Frame(i, img, 0.0), req)
    return len(imgs) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="efficientnet_lite0,convnext_tiny,vit_b_16,deit_tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    from deepvis_app.devices import keep_freed_memory

    malloc = keep_freed_memory()  # what `deepvis` runs with (DEEPVIS_MALLOC=system: glibc's defaults)
    if args.threads:
        torch.set_num_threads(args.threads)
    imgs = frames(args.frames)
    out = {"device": args.device, "threads": torch.get_num_threads(), "malloc": malloc, "frames": args.frames,
           "models": {}}
    for name in args.models.split(","):
        weights = "default" if name == "efficientnet_lite0" else "random"
        vm = load_model(name, weights=weights, device=args.device)
        proc = FrameProcessor(vm)
        cases = {"none": ViewRequest(layer=vm.default_layer),
                 "gradcam_overlay": ViewRequest(layer=vm.default_layer, overlay="gradcam")}
        if any(i.layout.value == "tokens" for i in vm.layer_info):
            cases["attention"] = ViewRequest(layer=vm.default_layer, attention=True)
        runs: dict[str, list[float]] = {"bare": [], **{k: [] for k in cases}}
        for _ in range(args.rounds):
            runs["bare"].append(bare_fps(vm, imgs))
            for key, req in cases.items():
                runs[key].append(process_fps(proc, imgs, req))
        med = {k: round(statistics.median(v), 2) for k, v in runs.items()}
        row = {"weights": weights, "layer": vm.default_layer, "fps": med,
               "ratio_to_bare": {k: round(med[k] / med["bare"], 3) for k in cases},
               "overlay_cost": round(1 - med["gradcam_overlay"] / med["none"], 3)}
        out["models"][name] = row
        print(json.dumps({name: row}), flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
