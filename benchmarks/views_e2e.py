"""Backprop views end to end, as users run each tool: the live pipeline's per-frame work (`FrameProcessor.process`)
with 0, 1 (guided) and 3 views (gradient, deconvnet, guided) of one unit, on our thread policy (`deepvis run
--headless`: `interactive_threads`, the program's malloc policy), against Captum's `NeuronGuidedBackprop` with
torch's defaults (what its users run), same model, layer, unit and photos; each side in its own child process,
rounds alternating; medians.

A view's cost is the frame time it adds: 1/fps_k - 1/fps_0; `ratio_three_vs_captum` = the three views' cost over
Captum's one attribution (issue 30's goal: <= 1.0 on ResNet-18 and VGG-16). The befores: `one_eager` /
`three_eager` record the rules' graph in an eager forward every frame (`pipeline.replayed` off: session 7's
pipeline), `one_autograd` / `three_autograd` also run the backward through autograd's Python rule nodes (the
compiled program of `attribution.program` off), `three_unstacked` also one backward per rule (`attribution.stacked`
off).

Usage: python benchmarks/views_e2e.py [--models resnet18,vgg16] [--layer-of resnet18=layer3,vgg16=features.22]
       [--frames 40] [--rounds 3] [--device cpu]   (random weights: nothing pretrained is cached offline)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from children import child_json

LAYERS = {"resnet18": "layer3", "vgg16": "features.22", "efficientnet_lite0": "_blocks.10", "resnet50": "layer3"}
CHANNEL = 5


def _photos(n: int):
    import skimage.data

    from deepvis_app.sources import fit_image

    pics = [skimage.data.coffee(), skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.rocket()]
    return [fit_image(pics[i % len(pics)], 320, "center") for i in range(n)]


def _weights(model: str) -> str:
    return "default" if model == "efficientnet_lite0" else "random"


def pipeline_child(model: str, layer: str, frames: int) -> dict:
    import torch

    from deepvis_app.devices import interactive_threads, keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(interactive_threads())  # as `deepvis run --headless`
    from deepvis_app import load_model
    from deepvis_app.attribution import AttributionContext
    from deepvis_app.pipeline import FrameProcessor
    from deepvis_app.pipeline.frames import Frame
    from deepvis_app.pipeline.traced import TRIAL
    from deepvis_app.values import Unit, ViewRequest

    vm = load_model(model, weights=_weights(model))
    imgs = _photos(frames)
    proc = FrameProcessor(vm)
    unit = Unit(layer, CHANNEL)
    three = ("gradient", "deconv", "guided")
    one = ViewRequest(layer=layer, unit=unit, attribution=("guided",))
    all3 = ViewRequest(layer=layer, unit=unit, attribution=three)
    # (request, replayed, stacked views, compiled backward): the last five are the befores
    cases = {"none": (ViewRequest(layer=layer), True, True, True), "one": (one, True, True, True),
             "three": (all3, True, True, True), "one_eager": (one, False, True, True),
             "three_eager": (all3, False, True, True), "one_autograd": (one, False, True, False),
             "three_autograd": (all3, False, True, False), "three_unstacked": (all3, False, False, False)}
    defaults = AttributionContext.__init__.__kwdefaults__
    out = {"threads": torch.get_num_threads()}
    for name, (req, replay, stack, compiled) in cases.items():
        defaults["stack_views"], defaults["compile_backward"] = stack, compiled
        if proc.replayed is not None:
            proc.replayed.enabled = replay
        for i in range(3 + 2 * TRIAL):  # warm-up: copies, layouts, compiling, and the split-or-whole trials
            proc.process(Frame(i, imgs[i % len(imgs)], 0.0), req)
        t = time.perf_counter()
        for i, img in enumerate(imgs):
            proc.process(Frame(10 + i, img, 0.0), req)
        out[name] = len(imgs) / (time.perf_counter() - t)
    defaults["stack_views"], defaults["compile_backward"] = True, None
    return out


def captum_child(model: str, layer: str, frames: int) -> dict:
    import warnings

    import torch
    from captum.attr import NeuronGuidedBackprop

    from deepvis_app import load_model
    from deepvis_app.probe import Probe

    warnings.filterwarnings("ignore")
    vm = load_model(model, weights=_weights(model))
    net = vm.net
    xs = [vm.preprocess(img) for img in _photos(frames)]
    with Probe(net, [layer], detach=True) as probe, torch.no_grad():
        net(xs[0])
        act = probe[layer][0, CHANNEL]
    y, x = divmod(int(act.argmax()), act.shape[-1])
    gbp = NeuronGuidedBackprop(net, net.get_submodule(layer))
    for x0 in xs[:3]:
        gbp.attribute(x0.clone(), neuron_selector=(CHANNEL, y, x))
    t = time.perf_counter()
    for x0 in xs:
        gbp.attribute(x0.clone(), neuron_selector=(CHANNEL, y, x))
    return {"captum_ms": (time.perf_counter() - t) / len(xs) * 1000, "threads": torch.get_num_threads()}


def run_child(kind: str, model: str, layer: str, frames: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--models", model, "--layer-of", f"{model}={layer}",
           "--frames", str(frames)]
    return child_json(cmd, timeout=1200)



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,vgg16")
    ap.add_argument("--layer-of", default="", help="model=layer,... (defaults: " +
                    ", ".join(f"{k}={v}" for k, v in LAYERS.items()) + ")")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu only (the GPU path: benchmarks/gpu.py)")
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes beside both sides (other programs on "
                    "the machine; one per core: the worst case of the thread policy)")
    ap.add_argument("--child", default="")
    args = ap.parse_args()
    layers = dict(LAYERS)
    layers.update(dict(p.split("=", 1) for p in args.layer_of.split(",") if p))
    models = args.models.split(",")
    if args.child:
        fn = pipeline_child if args.child == "pipeline" else captum_child
        print(json.dumps(fn(models[0], layers[models[0]], args.frames)), flush=True)
        return 0
    result = {"benchmark": "views_e2e", "frames": args.frames, "rounds": args.rounds, "unit_channel": CHANNEL,
              "busy_processes": args.busy, "models": {}}
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        _measure(args, models, layers, result)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(json.dumps(result, indent=1))
    return 0


def _measure(args: argparse.Namespace, models: list[str], layers: dict[str, str], result: dict) -> None:
    for model in models:
        runs: dict[str, list[dict]] = {"pipeline": [], "captum": []}
        for _ in range(args.rounds):
            runs["pipeline"].append(run_child("pipeline", model, layers[model], args.frames))
            runs["captum"].append(run_child("captum", model, layers[model], args.frames))
        ok = [r for r in runs["pipeline"] if "none" in r]
        cap = [r["captum_ms"] for r in runs["captum"] if "captum_ms" in r]
        row: dict = {"layer": layers[model], "runs": runs}
        if ok and cap:
            kinds = ("one", "three", "one_eager", "three_eager", "one_autograd", "three_autograd", "three_unstacked")
            fps = {k: statistics.median(r[k] for r in ok) for k in ("none", *kinds)}
            base = 1000 / fps["none"]
            cost = {k: 1000 / fps[k] - base for k in kinds}
            captum_ms = statistics.median(cap)
            row.update({"fps": {k: round(v, 2) for k, v in fps.items()},
                        "view_cost_ms": {k: round(v, 1) for k, v in cost.items()},
                        "captum_ms": round(captum_ms, 1),
                        "ratio_one_vs_captum": round(cost["one"] / captum_ms, 3),
                        "ratio_three_vs_captum": round(cost["three"] / captum_ms, 3),
                        "ratio_one_eager_vs_captum": round(cost["one_eager"] / captum_ms, 3),
                        "ratio_three_eager_vs_captum": round(cost["three_eager"] / captum_ms, 3),
                        "ratio_one_autograd_vs_captum": round(cost["one_autograd"] / captum_ms, 3),
                        "ratio_three_autograd_vs_captum": round(cost["three_autograd"] / captum_ms, 3),
                        "ratio_three_unstacked_vs_captum": round(cost["three_unstacked"] / captum_ms, 3),
                        "threads": {"ours": ok[0]["threads"], "captum": runs["captum"][0].get("threads")}})
        result["models"][model] = row
        print(json.dumps({model: {k: v for k, v in row.items() if k != "runs"}}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
