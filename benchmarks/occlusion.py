"""Occlusion maps: ours (exact, batched, incremental) vs Captum's `Occlusion`, side by side; prints one JSON object.

Per model (resnet18 with random weights, efficientnet_lite0 pretrained) on chelsea, target = the top class's
probability, the same window, stride and baseline (the grey fill image) for both:
* captum: `Occlusion.attribute` at its best `perturbations_per_eval` (swept on a short run first);
* ours_warm: `occlusion_map` with the plan (receptive fields, cuts) already built -- the live overlay's case --
  at our best batch size (swept on the same short run as Captum's); ours_cold adds building the plan (once per
  model, window and target layer);
* ours_full: our engine without incremental inference (batched, channels-last, stopped at the target);
* max_abs_diff_captum: our input-resolution map vs Captum's attribution; max_abs_diff_naive: our score map vs a
  plain full forward per position (every other row and column).
live: the overlay's figures on the default model (window 32, stride 16): seconds per complete map and fps, and
the latency of the first coarse map (stride 32).

Usage: .venv/bin/python benchmarks/occlusion.py [--window 32] [--stride 16] [--threads 2] [--models ...]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import skimage.data
import torch

DEVICE = "cpu"  # --device: where the models run


def _time(fn, reps: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def exact_mac_bound(net: torch.nn.Module, size: int, window: int, stride: int) -> dict:
    """How fast any *exact* occlusion can be, counted in multiply-accumulates: a conv or linear output unit must be
    recomputed when its receptive field meets the patch (from `rf_geometry`; layers after global pooling or
    squeeze-excitation: all of them), averaged over the patch positions. Returns the naive MACs per image, the
    recomputed fraction and the bound 1 / fraction (elementwise ops and batching effects ignored)."""
    from deepvis_app.occlusion import patch_positions, window_span
    from deepvis_app.receptive_field import rf_geometry, rf_is_local

    macs: dict[str, tuple[int, int, int]] = {}

    def hook(name):
        def count(m, _i, out):
            if isinstance(m, torch.nn.Conv2d):
                per = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
                macs[name] = (out[0].numel() * per, out.shape[-2], out.shape[-1])
            else:
                macs[name] = (m.in_features * m.out_features, 0, 0)
        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    pos = patch_positions(size, window, stride)

    def hit(n: int, step: int, off: int, rf: int, p: int) -> int:  # units of an axis whose field meets the window
        end = p + window_span(p, window, size)  # the last window of an axis may be cut at the image edge
        return sum(1 for u in range(n) if u * step + off < end and u * step + off + rf > p)

    total = recomputed = 0.0
    for name, (count, h, w) in macs.items():
        total += count
        if not h or not rf_is_local(net, name, size):
            recomputed += count
            continue
        g = rf_geometry(net, name, size)
        fy = sum(hit(h, g.stride_y, g.offset_y, g.size_y, p) for p in pos) / (len(pos) * h)
        fx = sum(hit(w, g.stride_x, g.offset_x, g.size_x, p) for p in pos) / (len(pos) * w)
        recomputed += count * fy * fx
    return {"naive_macs_per_image": int(total), "exact_recompute_fraction": round(recomputed / total, 3),
            "exact_speedup_bound": round(total / recomputed, 2)}


def bench_model(name: str, weights: str, window: int, stride: int, batch: int, sweep: list[int],
                batches: list[int], reps: int) -> dict:
    from captum.attr import Occlusion

    from deepvis_app.occlusion import fill_image, occlusion_map
    from deepvis_app.values import ClassTarget
    from deepvis_app.zoo import load_model

    vm = load_model(name, weights=weights, device=DEVICE)
    net = vm.net
    x = vm.preprocess(skimage.data.chelsea())
    with torch.no_grad():
        cls = int(net(x).argmax())
    fill = fill_image(x, "zero", window, vm.spec.mean, vm.spec.std)
    occ = Occlusion(lambda inp: net(inp).softmax(dim=1))

    def captum(ppe: int, s: int) -> torch.Tensor:
        with torch.no_grad():
            return occ.attribute(x, sliding_window_shapes=(3, window, window), strides=(3, s, s), baselines=fill,
                                 target=cls, perturbations_per_eval=ppe)

    sweep_s = {ppe: _time(lambda p=ppe: captum(p, 2 * stride))[0] for ppe in sweep}  # short run: 4x fewer windows
    best_ppe = min(sweep_s, key=sweep_s.get)
    t_captum, attr = _time(lambda: captum(best_ppe, stride), reps)

    target = ClassTarget(cls)
    t_cold, m = _time(lambda: occlusion_map(vm, x, target, window=window, stride=stride, batch=batch))
    ours_sweep = {b: _time(lambda b=b: occlusion_map(vm, x, target, window=window, stride=2 * stride, batch=b))[0]
                  for b in batches}  # our batch size gets the same short-run sweep as Captum's
    best_batch = min(ours_sweep, key=ours_sweep.get)
    t_warm, m = _time(lambda: occlusion_map(vm, x, target, window=window, stride=stride, batch=best_batch), reps)
    t_full, m_full = _time(lambda: occlusion_map(vm, x, target, window=window, stride=stride, batch=best_batch,
                                                 incremental=False), reps)
    ys, xs = m.ys, m.xs
    diffs = []
    with torch.no_grad():  # one plain forward of the original net per position (every other row and column)
        for i in range(0, len(ys), 2):
            for j in range(0, len(xs), 2):
                y, xx = ys[i], xs[j]
                img = x.clone()
                img[:, :, y:y + window, xx:xx + window] = fill[:, :, y:y + window, xx:xx + window]
                diffs.append(abs(float(net(img).softmax(dim=1)[0, cls]) - float(m.scores[i, j])))
    return {
        "model": name, "weights": weights, "window": window, "stride": stride, "positions": len(ys) * len(xs),
        "target": f"{vm.categories[cls]} (prob)", "method": m.note,
        "captum_s": round(t_captum, 3), "captum_perturbations_per_eval": best_ppe,
        "captum_sweep_s": {str(k): round(v, 3) for k, v in sweep_s.items()},
        "ours_batch": best_batch, "ours_sweep_s": {str(k): round(v, 3) for k, v in ours_sweep.items()},
        "ours_warm_s": round(t_warm, 3), "ours_cold_s": round(t_cold, 3), "ours_full_s": round(t_full, 3),
        "speedup_warm": round(t_captum / t_warm, 2), "speedup_cold": round(t_captum / t_cold, 2),
        "speedup_incremental_only": round(t_full / t_warm, 2),
        "max_abs_diff_captum": float(np.abs(m.upsampled() - attr[0, 0].numpy()).max()),
        "max_abs_diff_naive": max(diffs), "naive_positions_checked": len(diffs),
        "max_abs_diff_full": float((m.scores - m_full.scores).abs().max()),
        **exact_mac_bound(net, int(x.shape[-1]), window, stride),
    }


def bench_live(window: int, batch: int) -> dict:
    from deepvis_app.occlusion import iter_occlusion
    from deepvis_app.zoo import load_model

    vm = load_model("efficientnet_lite0", device=DEVICE)
    x = vm.preprocess(skimage.data.coffee())
    with torch.no_grad():
        cls = int(vm.net(x).argmax())
    for _ in iter_occlusion(vm, x, cls, window=window, strides=(32, 16), batch=batch):
        pass  # warm: the plan is built once per model
    t0 = time.perf_counter()
    first = None
    for m in iter_occlusion(vm, x, cls, window=window, strides=(32, 16), batch=batch):
        if first is None and m.complete:
            first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return {"model": "efficientnet_lite0", "window": window, "strides": [32, 16], "first_coarse_map_s": round(first, 3),
            "full_map_s": round(total, 3), "fps": round(1.0 / total, 3), "method": m.note}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--stride", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32, help="batch of the cold run")
    ap.add_argument("--live-batch", type=int, default=8, help="batch of the live overlay figures")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--sweep", default="1,8,32,64", help="Captum perturbations_per_eval values to try")
    ap.add_argument("--batches", default="4,8,16,32", help="our batch sizes to try")
    ap.add_argument("--reps", type=int, default=3, help="best of N for the final timings (other jobs share the CPU)")
    ap.add_argument("--models", default="resnet18:random,efficientnet_lite0:default")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    from deepvis_app.devices import keep_freed_memory

    malloc = keep_freed_memory()  # what `deepvis` runs with (DEEPVIS_MALLOC=system: glibc's defaults)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    sweep = [int(v) for v in args.sweep.split(",")]
    import os

    out = {"malloc": malloc, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_avg_start": list(os.getloadavg()), "models": []}
    for spec in args.models.split(","):
        name, _, weights = spec.partition(":")
        out["models"].append(bench_model(name, weights or "default", args.window, args.stride, args.batch, sweep,
                                         [int(v) for v in args.batches.split(",")], args.reps))
        print(json.dumps(out["models"][-1]), flush=True)
    out["live"] = bench_live(32, args.live_batch)
    out["load_avg_end"] = list(os.getloadavg())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
