"""Attribution latency vs Captum's NeuronGuidedBackprop on the same model, input and unit; prints one JSON object.

ours_one / ours_three: the live-pipeline case -- the frame's forward already ran inside AttributionContext (with
x.requires_grad), so only the partial backward(s) from the selected layer are timed (on the graph the pipeline
now keeps: recorded only up to the layer, `Capture(no_grad_after=...)`). ours_e2e_three adds that forward.
Before/after in one run:
frame_forward_full_graph_ms is the old live forward (graph over the whole net), frame_forward_cut_ms the new one
(graph up to the layer, the rest under no_grad), frame_forward_plain_no_grad_ms a plain forward.
ours_*_unfused: the same with the conv -> BN -> rectifier fusion switched off (the backward before it).
ours_three_views_cached_ms: the live steady state on a net whose deconvnet maps cannot depend on the image
(`deconv_static`, e.g. EfficientNet-Lite): the same unit on the next frame, its deconvnet map from `DeconvCache`.
Layout: ours runs as the live pipeline does (on the CPU a channels-last copy of the model, `fastnet.fast_copy`);
ours_*_nchw is the same on the model as loaded (the pipeline before). Captum runs on the model as loaded (what
its users run: ratio_*_vs_captum) and on the same channels-last copy (ratio_*_vs_captum_channels_last, the
stricter comparison: both sides then get the layout's speed-up).

Usage: .venv/bin/python benchmarks/attribution.py [--model efficientnet_lite0] [--layer _blocks.10] [--reps 10]
       [--weights random]   (resnet18 / vgg16 offline: random weights, seeded)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import skimage.data
import torch


def main() -> None:
    from captum.attr import NeuronGuidedBackprop

    from deepvis_app.attribution import AttributionContext, DeconvCache, fused, resolve_unit
    from deepvis_app.fastnet import fast_copy
    from deepvis_app.probe import Capture
    from deepvis_app.values import Unit
    from deepvis_app.zoo import load_model

    ap = argparse.ArgumentParser()

    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="default", help="default, random (seeded) or a checkpoint path")
    ap.add_argument("--layer", default="_blocks.10")
    ap.add_argument("--channel", type=int, default=7)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = ap.parse_args()
    from deepvis_app.devices import keep_freed_memory

    malloc = keep_freed_memory()  # what `deepvis` runs with (DEEPVIS_MALLOC=system: glibc's defaults)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    vm = load_model(args.model, weights=args.weights, device=args.device)
    loaded = vm.net
    x_loaded = vm.preprocess(skimage.data.chelsea())
    net = fast_copy(loaded, x_loaded, fold=False)  # what the live pipeline runs on the CPU
    x0 = x_loaded.contiguous(memory_format=torch.channels_last)

    def frame_forward(cut: bool = True, nchw: bool = False):
        n, x = (loaded, x_loaded.clone()) if nchw else (net, x0.clone())
        x.requires_grad_(True)
        ac = AttributionContext(n)
        with ac, Capture(n, [args.layer], no_grad_after=args.layer if cut else None, example=x) as probe:
            probe.run(x)
        return ac, x, probe[args.layer]

    ac, x, act = frame_forward()
    unit = resolve_unit(act, Unit(args.layer, args.channel), vm.info(args.layer))
    neuron = (unit.channel, unit.y, unit.x)

    captum = NeuronGuidedBackprop(loaded, dict(loaded.named_modules())[args.layer])
    captum_cl = NeuronGuidedBackprop(net, dict(net.named_modules())[args.layer])

    def run_captum():
        return captum.attribute(x_loaded.clone(), neuron_selector=neuron)

    def run_captum_cl():
        return captum_cl.attribute(x0.clone(), neuron_selector=neuron)

    state = {}

    def prepare(cut: bool = True, nchw: bool = False):
        state["f"] = frame_forward(cut, nchw)

    def one():
        ac, x, act = state["f"]
        return ac.explain(x, act, unit, ("guided",))

    def three():
        ac, x, act = state["f"]
        return ac.explain(x, act, unit, ("gradient", "deconv", "guided"))

    cache = DeconvCache()
    fused_chain = fused.conv_chain

    def three_cached():
        ac, x, act = state["f"]
        return ac.explain(x, act, unit, ("gradient", "deconv", "guided"), deconv_cache=cache)

    def unfused(fn):
        def run():
            fused.conv_chain = lambda a, k, s=None: None
            try:
                prepare()
            finally:
                fused.conv_chain = fused_chain
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        return run

    def nchw(fn):
        def run():
            prepare(nchw=True)
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t
        return run

    def plain_forward():
        with torch.no_grad():
            net(x0)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    # agreement check on this model (captum's hooks cover nn.ReLU modules only: on ReLU6 nets it is the
    # plain gradient; ours applies the guided rule to ReLU6)
    prepare()
    ours_grad = three()["gradient"]
    cap = run_captum()
    captum_vs_our_gradient = float((cap - ours_grad).abs().max() / ours_grad.abs().max().clamp_min(1e-12))

    # Interleaved rounds, so load changes on a shared machine hit every variant alike; medians reported.
    times: dict[str, list[float]] = {k: [] for k in ("captum", "one", "three", "e2e", "fwd_ctx", "fwd_plain",
                                                     "fwd_full", "three_full", "e2e_full", "three_cached",
                                                     "one_unfused", "three_unfused", "captum_cl", "one_nchw",
                                                     "three_nchw")}
    for i in range(args.reps + 1):
        state["f"] = None  # graphs are freed outside the timed spans
        t0 = time.perf_counter()
        run_captum()
        t1 = time.perf_counter()
        prepare()
        t2 = time.perf_counter()
        one()
        state["f"] = None
        t3 = time.perf_counter()
        prepare()
        t4 = time.perf_counter()
        three()
        t5 = time.perf_counter()
        plain_forward()
        t6 = time.perf_counter()
        state["f"] = None
        t7 = time.perf_counter()
        prepare(cut=False)
        t8 = time.perf_counter()
        three()
        t9 = time.perf_counter()
        state["f"] = None
        prepare()
        t10 = time.perf_counter()
        three_cached()
        t11 = time.perf_counter()
        state["f"] = None
        t_one_unfused = unfused(one)()
        state["f"] = None
        t_three_unfused = unfused(three)()
        state["f"] = None
        t_captum_cl = timed(run_captum_cl)
        t_one_nchw = nchw(one)()
        state["f"] = None
        t_three_nchw = nchw(three)()
        state["f"] = None
        if i == 0:
            continue  # warm-up
        times["captum"].append(t1 - t0)
        times["one"].append(t3 - t2)
        times["three"].append(t5 - t4)
        times["e2e"].append(t5 - t3)
        times["fwd_ctx"].append(t2 - t1)
        times["fwd_plain"].append(t6 - t5)
        times["fwd_full"].append(t8 - t7)
        times["three_full"].append(t9 - t8)
        times["e2e_full"].append(t9 - t7)
        times["three_cached"].append(t11 - t10)
        times["one_unfused"].append(t_one_unfused)
        times["three_unfused"].append(t_three_unfused)
        times["captum_cl"].append(t_captum_cl)
        times["one_nchw"].append(t_one_nchw)
        times["three_nchw"].append(t_three_nchw)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    captum_ms, one_ms, three_ms, e2e_ms = med["captum"], med["one"], med["three"], med["e2e"]
    fwd_ctx_ms, fwd_plain_ms = med["fwd_ctx"], med["fwd_plain"]
    out = {
        "malloc": malloc, "model": args.model, "input": list(x0.shape), "layer": args.layer, "unit": list(neuron),
        "torch_threads": torch.get_num_threads(), "reps": args.reps, "device": "cpu",
        "captum_neuron_guided_backprop_ms": round(captum_ms, 2),
        "ours_one_method_ms": round(one_ms, 2),
        "ours_three_views_ms": round(three_ms, 2),
        "ratio_one_vs_captum": round(one_ms / captum_ms, 3),
        "ratio_three_vs_captum": round(three_ms / captum_ms, 3),
        "ours_three_views_cached_ms": round(med["three_cached"], 2),
        "ratio_three_cached_vs_captum": round(med["three_cached"] / captum_ms, 3),
        "deconv_cache_hits": cache.hits,
        "ours_one_method_unfused_ms": round(med["one_unfused"], 2),
        "ours_three_views_unfused_ms": round(med["three_unfused"], 2),
        "ratio_one_unfused_vs_captum": round(med["one_unfused"] / captum_ms, 3),
        "ratio_three_unfused_vs_captum": round(med["three_unfused"] / captum_ms, 3),
        "captum_on_channels_last_copy_ms": round(med["captum_cl"], 2),
        "ratio_one_vs_captum_channels_last": round(one_ms / med["captum_cl"], 3),
        "ratio_three_vs_captum_channels_last": round(three_ms / med["captum_cl"], 3),
        "ratio_three_cached_vs_captum_channels_last": round(med["three_cached"] / med["captum_cl"], 3),
        "ours_one_method_nchw_ms": round(med["one_nchw"], 2),
        "ours_three_views_nchw_ms": round(med["three_nchw"], 2),
        "ratio_one_nchw_vs_captum": round(med["one_nchw"] / captum_ms, 3),
        "ratio_three_nchw_vs_captum": round(med["three_nchw"] / captum_ms, 3),
        "target_one": "<= 0.35", "target_three": "<= 1.0",
        "ours_e2e_forward_plus_three_ms": round(e2e_ms, 2),
        "ratio_e2e_three_vs_captum": round(e2e_ms / captum_ms, 3),
        "frame_forward_cut_ms": round(fwd_ctx_ms, 2),
        "frame_forward_full_graph_ms": round(med["fwd_full"], 2),
        "ours_three_views_on_full_graph_ms": round(med["three_full"], 2),
        "ours_e2e_full_graph_plus_three_ms": round(med["e2e_full"], 2),
        "ratio_e2e_full_graph_three_vs_captum": round(med["e2e_full"] / captum_ms, 3),
        "frame_forward_plain_no_grad_ms": round(fwd_plain_ms, 2),
        "captum_vs_our_gradient_max_rel_diff": float(np.round(captum_vs_our_gradient, 6)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
