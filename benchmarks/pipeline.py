"""Headless live pipeline vs a bare `net(x)` loop on the same frames, model and threads; prints JSON.

Targets (issue 2): pipeline fps >= 0.85x bare forward fps with grid rendering on, and p95 frame-to-result
latency < 2 frame-times when the source is faster than the model (no queue build-up). On the CPU the pipeline
runs a channels-last copy of the model (`fastnet`), so the bare loop runs both on the model as loaded and on
that copy (ratio_pipeline_to_bare_channels_last: the pipeline's own overhead).
Usage: python benchmarks/pipeline.py [--model M] [--device D] [--frames N] [--layer L]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from deepvis_app import load_model
from deepvis_app.fastnet import fast_copy
from deepvis_app.pipeline import run_headless
from deepvis_app.sources import DemoSource
from deepvis_app.values import ViewRequest


def bare_loop_fps(model, frames, *, channels_last: bool = False) -> float:
    """`net(x)` over the frames; channels_last: on the layout the pipeline runs on the CPU (its private copy)."""
    xs = [model.preprocess(f) for f in frames]
    net = model.net
    if channels_last and model.device.type == "cpu":
        net = fast_copy(model.net, xs[0], fold=False)
        xs = [x.contiguous(memory_format=torch.channels_last) for x in xs]
    with torch.inference_mode():
        for x in xs[:3]:
            net(x)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for x in xs:
            net(x)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
    return len(xs) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--frames", type=int, default=60, help="frames per round")
    ap.add_argument("--rounds", type=int, default=3, help="bare and pipeline runs alternate; medians reported")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--source-fps", type=float, default=120.0, help="faster than the model on purpose")
    args = ap.parse_args()

    model = load_model(args.model, device=args.device)
    demo = DemoSource()
    demo.open()
    frames = [demo.read() for _ in range(args.frames)]
    request = ViewRequest(layer=args.layer or model.default_layer)
    bare, bare_cl, reports = [], [], []
    for _ in range(args.rounds):  # interleaved, so a busy neighbour slows both sides alike
        bare.append(bare_loop_fps(model, frames))
        bare_cl.append(bare_loop_fps(model, frames, channels_last=True))
        source = DemoSource()
        source.open()
        reports.append(run_headless(model, source, frames=args.frames, request=request, fps=args.source_fps,
                                    warmup=5))
    report = sorted(reports, key=lambda r: r.pipeline_fps)[len(reports) // 2]
    bare_fps = float(np.median(bare))
    frame_time_ms = 1000.0 / report.pipeline_fps
    print(json.dumps({
        "benchmark": "pipeline",
        "model": model.name,
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "layer": report.layer,
        "frames_per_round": report.frames_processed,
        "rounds": args.rounds,
        "bare_forward_fps": round(bare_fps, 2),
        "bare_forward_fps_rounds": [round(b, 2) for b in bare],
        "pipeline_fps": round(report.pipeline_fps, 2),
        "pipeline_fps_rounds": [round(r.pipeline_fps, 2) for r in reports],
        "ratio_pipeline_to_bare": round(report.pipeline_fps / bare_fps, 3),
        "bare_forward_channels_last_fps": round(float(np.median(bare_cl)), 2),
        "ratio_pipeline_to_bare_channels_last": round(report.pipeline_fps / float(np.median(bare_cl)), 3),
        "source_fps": args.source_fps,
        "frames_dropped": report.frames_dropped,
        "latency_ms_p50": round(report.latency_ms_p50, 1),
        "latency_ms_p95": round(report.latency_ms_p95, 1),
        "frame_time_ms": round(frame_time_ms, 1),
        "p95_in_frame_times": round(report.latency_ms_p95 / frame_time_ms, 2),
        "stage_ms_mean": {k: round(v, 2) for k, v in report.stage_ms_mean.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
