"""The GPU benchmark: the live pipeline, attribution, occlusion and the scan on one device, for the three
architectures of the GPU goals; prints one JSON object (also written to --out).

Per model (random weights by default: nothing is downloaded, speed does not depend on the weights):
* headless: `run_headless` pulling frames as fast as the worker takes them, with 0 views (the grid), 1 view
  (a unit with guided backprop) and 3 views (gradient, deconvnet, guided): fps, latency p50/p95, stage times;
* attribution: one unit's three maps, ours (one forward, three partial backwards) vs Captum's NeuronGradient,
  NeuronDeconvolution and NeuronGuidedBackprop (three forwards and backwards), end to end, and guided alone;
* occlusion: a class's map, ours (batched, incremental where the net allows) vs Captum's `Occlusion` at the same
  window, stride, fill and batch, with the largest difference of the two input-resolution maps;
* scan: `scan()` over generated images (pass 1 only: entries, no stored crops): images per second.

The goals (docs/development.md), checked on CUDA only: the headless pipeline >= 300 fps on EfficientNet-Lite0 with
no view and >= 100 fps with three views on an H100-class GPU. Every figure is measured here; none is assumed.
It runs on the CPU too (small sizes): `.venv/bin/python benchmarks/gpu.py --device cpu --frames 5 --reps 1
--scan-images 8 --models efficientnet_lite0`.

Usage: .venv/bin/python benchmarks/gpu.py [--device auto|cpu|cuda|cuda:N|mps] [--models a,b,c] [--weights random]
       [--frames 300] [--reps 20] [--scan-images 512] [--batch 32] [--skip captum] [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

MODELS = ("efficientnet_lite0", "torchvision:resnet50", "torchvision:vit_b_16")
VIEWS = {"0_views": (), "1_view": ("guided",), "3_views": ("gradient", "deconv", "guided")}
GOALS = {"efficientnet_lite0": {"0_views": 300.0, "3_views": 100.0}}  # fps on an H100-class GPU


def sync(device: torch.device) -> None:
    """Wait for the device (benchmark timing only; the program itself never waits for the whole device)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 2) -> float:
    """Median seconds of `fn()` over `reps` runs, after `warmup` runs, the device waited for each time."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def frames(n: int, size: int = 224, seed: int = 0) -> list[np.ndarray]:
    """`n` different RGB uint8 images (seeded noise with a bright moving square)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        y, x = (3 * i) % (size - 24), (7 * i) % (size - 24)
        img[y:y + 24, x:x + 24] = 255
        out.append(img)
    return out


def the_unit(vm):
    """A unit of the model's default layer, at the centre of its grid (a vector layer: no position)."""
    from deepvis_app.values import Unit

    layer = vm.default_layer
    info = vm.info(layer)
    if info.grid is None:
        return Unit(layer, min(3, info.channels - 1)), info
    h, w = info.grid
    return Unit(layer, min(3, info.channels - 1), h // 2, w // 2), info


def headless(vm, n: int) -> dict:
    from deepvis_app.pipeline import run_headless
    from deepvis_app.sources import DemoSource
    from deepvis_app.values import ViewRequest

    unit, _info = the_unit(vm)
    out = {}
    for name, methods in VIEWS.items():
        request = ViewRequest(layer=vm.default_layer, unit=unit if methods else None, attribution=methods)
        source = DemoSource()
        source.open()
        report = run_headless(vm, source, frames=n, request=request, fps=0, warmup=5, timeout=3600)
        out[name] = {"fps": round(report.pipeline_fps, 2), "latency_ms_p50": round(report.latency_ms_p50, 2),
                     "latency_ms_p95": round(report.latency_ms_p95, 2),
                     "stage_ms_mean": {k: round(v, 3) for k, v in report.stage_ms_mean.items()},
                     "frames": report.frames_processed}
    return out


def attribution(vm, reps: int, captum: bool) -> dict:
    from deepvis_app.attribution import AttributionContext
    from deepvis_app.layouts import as_maps
    from deepvis_app.probe import Capture

    unit, info = the_unit(vm)
    x = vm.preprocess(frames(1, vm.input_size, seed=1)[0])

    def ours(methods: tuple[str, ...]):
        """As the live pipeline explains a unit: one forward recording a graph up to the unit's layer, then one
        partial backward per rule (end to end: the forward is timed too)."""
        xin = x.detach().clone().requires_grad_(True)
        with AttributionContext(vm.net) as ac, Capture(vm.net, [unit.layer], no_grad_after=unit.layer,
                                                       example=x) as cap:
            cap.run(xin)
        return ac.explain(xin, cap[unit.layer], unit, methods, info=info)

    out = {"layer": unit.layer, "unit": str(unit),
           "ours_three_ms": round(1000 * timed(lambda: ours(("gradient", "deconv", "guided")), vm.device, reps), 3),
           "ours_guided_ms": round(1000 * timed(lambda: ours(("guided",)), vm.device, reps), 3)}
    if not captum:
        return out
    from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop

    module = dict(vm.net.named_modules())[unit.layer.partition("@")[0]]

    def selector(act: torch.Tensor) -> torch.Tensor:
        maps = as_maps(act, info)
        return maps[:, unit.channel, unit.y, unit.x] if unit.y is not None else maps[:, unit.channel, 0, 0]

    methods = [cls(vm.net, module) for cls in (NeuronGradient, NeuronDeconvolution, NeuronGuidedBackprop)]

    def captum_three() -> None:
        for m in methods:
            m.attribute(x, selector)

    out["captum_three_ms"] = round(1000 * timed(captum_three, vm.device, reps), 3)
    out["captum_guided_ms"] = round(1000 * timed(lambda: methods[2].attribute(x, selector), vm.device, reps), 3)
    out["speedup_three_vs_captum"] = round(out["captum_three_ms"] / out["ours_three_ms"], 2)
    out["speedup_guided_vs_captum"] = round(out["captum_guided_ms"] / out["ours_guided_ms"], 2)
    return out


def occlusion(vm, reps: int, batch: int, window: int, stride: int, captum: bool) -> dict:
    from deepvis_app.occlusion import fill_image, occlusion_map

    x = vm.preprocess(frames(1, vm.input_size, seed=2)[0])
    with torch.no_grad():
        cls = int(vm.net(x).argmax())
    notes: list[str] = []
    result = occlusion_map(vm, x, cls, window=window, stride=stride, batch=batch, on_notice=notes.append)
    ours = timed(lambda: occlusion_map(vm, x, cls, window=window, stride=stride, batch=batch), vm.device, reps, 1)
    out = {"class": cls, "window": window, "stride": stride, "batch": batch, "windows": result.total,
           "ours_s": round(ours, 4), "note": result.note, "notices": notes}
    if not captum:
        return out
    from captum.attr import Occlusion

    fill = fill_image(x, "zero", window, vm.spec.mean, vm.spec.std)
    probs = torch.nn.Sequential(vm.net, torch.nn.Softmax(dim=1))
    occ = Occlusion(probs)

    def run_captum() -> torch.Tensor:
        return occ.attribute(x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride,
                                                                                           stride),
                             baselines=fill, target=cls, perturbations_per_eval=batch)

    attr = run_captum()
    out["captum_s"] = round(timed(run_captum, vm.device, reps, 1), 4)
    out["speedup_vs_captum"] = round(out["captum_s"] / out["ours_s"], 2)
    theirs = attr[0].mean(dim=0).detach().cpu().numpy()  # the same value on every colour channel
    out["max_abs_diff_captum"] = float(np.abs(result.upsampled() - theirs).max())
    out["max_abs_map"] = float(np.abs(theirs).max())  # the scale of the maps compared
    return out


def scan_rate(vm, n: int, batch: int) -> dict:
    import cv2

    from deepvis_app.topk.scan import scan

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for i, img in enumerate(frames(n, 256, seed=3)):
            cv2.imwrite(str(data / f"{i:05d}.png"), img)
        report = scan(vm, data, Path(tmp) / "store", top_k=9, batch_size=batch, crops=False, progress=False)
    return {"images": n, "batch": batch, "layers": "the spec's shown layers", "images_per_s": report["images_per_s"],
            "seconds": report["seconds_scan"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--weights", default="random", help="random (default: no download) | default | a file")
    ap.add_argument("--frames", type=int, default=300, help="frames per headless run")
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions (medians reported)")
    ap.add_argument("--scan-images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32, help="scan and occlusion batch")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--skip", default="", help="comma list of: headless, attribution, occlusion, scan, captum")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")

    from deepvis_app.devices import resolve_device
    from deepvis_app.zoo import load_model

    notices: list[str] = []
    device = resolve_device(args.device, on_notice=notices.append)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    captum = "captum" not in skip
    if captum:
        try:
            import captum.attr  # noqa: F401
        except ImportError:
            captum = False
            notices.append("captum is not installed: no Captum comparisons")
    result: dict = {"benchmark": "gpu", "device": str(device), "torch": torch.__version__,
                    "python": platform.python_version(), "weights": args.weights,
                    "torch_threads": torch.get_num_threads(), "notices": notices, "models": {}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        result["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "tf32_convolutions": torch.backends.cudnn.allow_tf32}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        vm = load_model(name, weights=args.weights, device=str(device))
        entry: dict = {"input_size": vm.input_size, "default_layer": vm.default_layer}
        if "headless" not in skip:
            entry["headless"] = headless(vm, args.frames)
        if "attribution" not in skip:
            entry["attribution"] = attribution(vm, args.reps, captum)
        if "occlusion" not in skip:
            entry["occlusion"] = occlusion(vm, max(1, args.reps // 5), args.batch, args.window, args.stride, captum)
        if "scan" not in skip:
            entry["scan"] = scan_rate(vm, args.scan_images, args.batch)
        result["models"][name] = entry
        print(f"{name}: done", file=sys.stderr, flush=True)
        del vm
        if device.type == "cuda":
            torch.cuda.empty_cache()
    goals = {}
    for name, wanted in GOALS.items():
        got = result["models"].get(name, {}).get("headless")
        if got is None:
            continue
        for views, fps in wanted.items():
            goals[f"{name} {views} >= {fps:g} fps"] = (got[views]["fps"] >= fps) if device.type == "cuda" else None
    result["goals"] = goals  # None: not a GPU run, the goals do not apply
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
