"""A unit's backprop views alone and beside a thread running Python (as the window's GUI thread does), for the
three ways to compute them: our compiled program (`attribution.program`: one call, the GIL released once), our
autograd path (Python rule nodes: the GIL handed back around every op), and Captum's `NeuronGuidedBackprop`
(module hooks in Python) on the model as loaded. Prints one JSON object.

Ours: the forward is recorded before each timed `explain` (as the live pipeline's first stage does) and not
timed. Captum (guided backprop only, one view; torch's default threads, as its users run it) cannot reuse a
forward: its time includes its own. "autograd" is today's Python nodes, which call the same compiled kernels per
node (one GIL hand-over per node instead of one per op). The "GUI" is a thread that runs pure Python for `hold`
ms and sleeps the rest of every 5 ms (1 of 5: a light window, 2 of 5: a busy one). Medians over --reps rounds
that alternate the loads; the unit moves every repetition (new crop boxes). Ours runs one torch thread, as the
live worker does.

Usage: .venv/bin/python benchmarks/gil_backward.py [--model efficientnet_lite0] [--layer _blocks.3]
       [--views guided | gradient+deconv+guided] [--reps 30] [--weights random] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import warnings
from contextlib import nullcontext

import skimage.data
import torch

LOADS = {"alone": None, "gui_1_of_5ms": (1.0, 4.0), "gui_2_of_5ms": (2.0, 3.0)}


class PythonThread:
    """A thread holding the GIL `hold` ms, then sleeping `rest` ms, until stopped."""

    def __init__(self, hold: float, rest: float) -> None:
        self.hold, self.rest, self.stop = hold / 1e3, rest / 1e3, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            while time.perf_counter() - t < self.hold:
                pass
            time.sleep(self.rest)

    def __enter__(self) -> PythonThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def main() -> None:
    from captum.attr import NeuronGuidedBackprop

    from deepvis_app.attribution import AttributionContext
    from deepvis_app.devices import keep_freed_memory, solo_threads
    from deepvis_app.fastnet import fast_copy
    from deepvis_app.probe import Capture
    from deepvis_app.values import Unit
    from deepvis_app.zoo import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu (the compiled program runs on the CPU only)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="default", help="default, random (seeded) or a checkpoint path")
    ap.add_argument("--layer", default="_blocks.3")
    ap.add_argument("--views", default="guided", help="'+'-joined: guided, gradient+deconv+guided, ...")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    if args.device != "cpu":
        print(json.dumps({"error": "the compiled backward runs on the CPU only; use --device cpu"}))
        raise SystemExit(2)
    warnings.filterwarnings("ignore")
    malloc = keep_freed_memory()
    views = tuple(args.views.split("+"))
    vm = load_model(args.model, weights=args.weights, device="cpu")
    info = vm.info(args.layer)
    x_loaded = vm.preprocess(skimage.data.chelsea())
    net = fast_copy(vm.net, x_loaded, fold=False)  # what the live pipeline runs on the CPU
    x0 = x_loaded.contiguous(memory_format=torch.channels_last)
    default_threads = torch.get_num_threads()
    captum = NeuronGuidedBackprop(vm.net, dict(vm.net.named_modules())[args.layer])
    step = [0]

    def unit_at(shape) -> tuple[int, int, int]:
        step[0] += 1
        k = step[0]
        return 3 + k % 5, (shape[-2] // 2 + k) % shape[-2], (shape[-1] // 3 + 2 * k) % shape[-1]

    def ours(compiled: bool) -> float:
        x = x0.clone().requires_grad_(True)
        ac = AttributionContext(net, compile_backward=compiled)
        with ac, Capture(net, [args.layer], stop=True, example=x) as probe:
            probe.run(x)
        act = probe[args.layer]
        c, y, xx = unit_at(act.shape)
        t = time.perf_counter()
        ac.explain(x, act, Unit(args.layer, c, y, xx), views, info=info)
        took = time.perf_counter() - t
        assert ac.compiled_walks == int(compiled), "the compiled program declined this graph"
        return took

    def theirs() -> float:
        torch.set_num_threads(default_threads)
        try:
            c, y, xx = unit_at(probe_shape)
            t = time.perf_counter()
            captum.attribute(x_loaded.clone(), neuron_selector=(c, y, xx))
            return time.perf_counter() - t
        finally:
            torch.set_num_threads(1)

    with torch.no_grad(), Capture(net, [args.layer], stop=True, example=x0) as probe:
        probe.run(x0)
    probe_shape = probe[args.layer].shape
    ways = {"compiled": lambda: ours(True), "autograd": lambda: ours(False)}
    if views == ("guided",):
        ways["captum"] = theirs
    times: dict[str, dict[str, list[float]]] = {load: {w: [] for w in ways} for load in LOADS}
    with solo_threads():
        torch.set_num_threads(1)
        for fn in ways.values():  # warm-up: compile, allocator, oneDNN's kernels
            for _ in range(3):
                fn()
        for _ in range(args.reps):
            for load, duty in LOADS.items():
                with PythonThread(*duty) if duty else nullcontext():
                    for name, fn in ways.items():
                        times[load][name].append(fn() * 1e3)
    med = {load: {w: round(statistics.median(v), 2) for w, v in by.items()} for load, by in times.items()}
    out = {"model": args.model, "layer": args.layer, "views": list(views), "reps": args.reps, "malloc": malloc,
           "torch_threads": {"ours": 1, "captum": default_threads}, "median_ms": med,
           "slowdown_beside_python": {load: {w: round(med[load][w] / med["alone"][w], 2) for w in ways}
                                      for load in LOADS if load != "alone"},
           "compiled_vs_autograd": {load: round(med[load]["compiled"] / med[load]["autograd"], 3) for load in LOADS}}
    if "captum" in ways:
        out["compiled_vs_captum"] = {load: round(med[load]["compiled"] / med[load]["captum"], 3) for load in LOADS}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
