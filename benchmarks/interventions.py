"""Interventions: the batched zero-ablation ranking vs 112 plain batched forwards, and the per-frame cost of active
interventions, side by side in one run; prints one JSON object.

* ablation: `rank_ablation` of every channel of `--layer` (Lite0 `_blocks.10`: 112 channels) for the photo's top
  class, cold (finding the cut and capturing the layers below included) and warm (a `Replay` made earlier), vs one
  plain forward of the whole network on a batch of as many copies of the image (`plain_batched`). The goal:
  ratio <= 2. `naive`: one full forward per channel with `Intervened` (the definition), and the largest
  difference of the drops from it.
* frame: the live worker's case, batch 1 on the live pipeline's channels-last copy of the network: a plain forward
  vs the same forward inside `Intervened` with one and with three interventions (goal: <= 5% of the frame time).
  Plain and intervened runs alternate so drifts of the machine's speed hit both.

Usage: .venv/bin/python benchmarks/interventions.py [--device cpu|cuda] [--threads N] [--layer _blocks.10]
       [--reps 5] [--no-naive]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import skimage.data
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def alternate(fns: dict[str, object], device: torch.device, reps: int) -> dict[str, float]:
    """Median seconds of each function, run in turn `reps` times (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--layer", default="_blocks.10")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--frame-reps", type=int, default=30)
    ap.add_argument("--no-naive", action="store_true", help="skip the one-forward-per-channel reference")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from deepvis_app import load_model
    from deepvis_app.devices import keep_freed_memory
    from deepvis_app.fastnet import fast_copy
    from deepvis_app.interventions import Intervened, Intervention, Replay, class_scores, rank_ablation
    from deepvis_app.values import ClassTarget

    keep_freed_memory()  # the program's allocator policy (as `deepvis` sets it): big batches reuse their pages
    vm = load_model(args.model, device=args.device)
    device = vm.device
    net, layer = vm.net, args.layer
    info = vm.info(layer)
    n = info.channels
    x = vm.preprocess(skimage.data.coffee())
    with torch.no_grad():
        cls = int(net(x).argmax())
    target = ClassTarget(cls, "prob")
    batch = x.expand(n, -1, -1, -1).contiguous()
    replay = Replay(net, x, layer, info)

    def plain_batched() -> None:
        with torch.no_grad():
            net(batch)

    def cold() -> None:  # a new Replay: the layers below captured again, the cut checked again
        rank_ablation(net, x, layer, target, info, batch=n)

    def warm() -> None:
        rank_ablation(net, x, layer, target, info, batch=n, replay=replay)

    t = alternate({"plain_batched": plain_batched, "ablation_cold": cold, "ablation_warm": warm}, device, args.reps)
    report: dict[str, object] = {
        "device": str(device), "threads": torch.get_num_threads(), "model": vm.name, "layer": layer, "channels": n,
        "class": vm.categories[cls], "cut": replay.cut, "method": replay.note,
        "plain_batched_forward_s": round(t["plain_batched"], 4),
        "ablation_cold_s": round(t["ablation_cold"], 4), "ablation_warm_s": round(t["ablation_warm"], 4),
        "ratio_cold": round(t["ablation_cold"] / t["plain_batched"], 3),
        "ratio_warm": round(t["ablation_warm"] / t["plain_batched"], 3), "goal_ratio": 2.0,
    }
    ranking = rank_ablation(net, x, layer, target, info, batch=n, replay=replay)
    report["top5"] = ranking.as_list(5)
    if not args.no_naive:
        t0 = time.perf_counter()
        with torch.no_grad():
            base = float(class_scores(net(x), target)[0])
            naive = []
            for c in range(n):
                with Intervened.for_model(vm, [Intervention(layer, (c,))]):
                    naive.append(base - float(class_scores(net(x), target)[0]))
        _sync(device)
        report["naive_per_channel_s"] = round(time.perf_counter() - t0, 4)
        report["max_abs_diff_vs_naive"] = max(abs(a - ranking.score_of(c)) for c, a in enumerate(naive))
        report["same_order_as_naive"] = ranking.order() == sorted(range(n), key=lambda c: (-naive[c], c))

    # the live frame: batch 1 on the pipeline's channels-last copy
    fast = fast_copy(net, x, fold=False) if device.type == "cpu" else net
    xf = x.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else x
    one = Intervened.for_model(vm, [Intervention(layer, (3, 17))], net=fast)
    three = Intervened.for_model(vm, [Intervention(layer, (3, 17)), Intervention.parse("_blocks.3._swish@1:7:scale:2"),
                                      Intervention.parse("_blocks.14:0-9:clamp:0.5")], net=fast)

    def frame(iv=None):
        def run() -> None:
            with torch.inference_mode():
                if iv is None:
                    fast(xf)
                else:
                    with iv:
                        fast(xf)
        return run

    f = alternate({"plain": frame(), "one": frame(one), "three": frame(three)}, device, args.frame_reps)
    report["frame"] = {"plain_ms": round(f["plain"] * 1e3, 3), "one_intervention_ms": round(f["one"] * 1e3, 3),
                       "three_interventions_ms": round(f["three"] * 1e3, 3),
                       "overhead_one_pct": round(100 * (f["one"] / f["plain"] - 1), 2),
                       "overhead_three_pct": round(100 * (f["three"] / f["plain"] - 1), 2), "goal_pct": 5.0}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
