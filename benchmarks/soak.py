"""Soak: the headless live pipeline with attribution on for N minutes; RSS every 30 s and fps over time; JSON.

Targets (issue 16): RSS growth < 5% after warm-up and no fps decay over a 10-minute run. A leak shows as RSS
climbing sample after sample (the old headless run kept every FrameResult: +665 MB in 300 s); a slow-down
(growing lists scanned per frame, fragmentation) as fps falling from window to window.
Usage: python benchmarks/soak.py [--minutes 10] [--interval 30] [--warmup-s 60] [--model M] [--select L:U]
       [--attribution gradient,deconv,guided] [--source-fps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np
import torch

from deepvis_app import load_model
from deepvis_app.pipeline import FrameStat, Unit, ViewRequest, run_headless
from deepvis_app.sources import DemoSource


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc; falls back to the peak from getrusage elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between samples (default 30)")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="RSS growth is measured from this point on")
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--select", default="_blocks.3:5", help="the unit whose attributions are computed")
    ap.add_argument("--attribution", default="gradient,deconv,guided")
    ap.add_argument("--source-fps", type=float, default=30.0, help="a camera's pace (default 30)")
    args = ap.parse_args()

    model = load_model(args.model, device=args.device)
    unit = Unit.parse(args.select)
    request = ViewRequest(layer=unit.layer, unit=unit, attribution=tuple(args.attribution.split(",")))
    samples: list[dict[str, float]] = []
    lock = threading.Lock()
    state = {"frames": 0, "t0": time.perf_counter()}
    window = {"frames": 0, "t": state["t0"]}

    def on_frame(_stat: FrameStat) -> None:
        with lock:
            state["frames"] += 1
            window["frames"] += 1

    def sampler(stop: threading.Event) -> None:
        while not stop.wait(args.interval):
            now = time.perf_counter()
            with lock:
                fps = window["frames"] / max(1e-9, now - window["t"])
                window.update(frames=0, t=now)
                frames = state["frames"]
            samples.append({"t_s": round(now - state["t0"], 1), "rss_mb": round(rss_mb(), 1),
                            "fps": round(fps, 2), "frames": frames})
            print(json.dumps(samples[-1]), file=sys.stderr, flush=True)

    stop = threading.Event()
    thread = threading.Thread(target=sampler, args=(stop,), daemon=True)
    samples.append({"t_s": 0.0, "rss_mb": round(rss_mb(), 1), "fps": 0.0, "frames": 0})
    source = DemoSource(fps=args.source_fps)
    source.open()
    thread.start()
    report = run_headless(model, source, frames=10**8, request=request, fps=args.source_fps,
                          timeout=args.minutes * 60, on_frame=on_frame)
    stop.set()
    thread.join()

    warm = [s for s in samples if s["t_s"] >= args.warmup_s]
    rss_warm = warm[0]["rss_mb"] if warm else float("nan")
    rss_end = samples[-1]["rss_mb"]
    fps_windows = samples[1:]
    t = np.array([s["t_s"] for s in warm]) / 60.0
    fps = np.array([s["fps"] for s in warm])
    slope = float(np.polyfit(t, fps, 1)[0]) if len(warm) >= 3 else float("nan")
    mean_fps = float(fps.mean()) if len(fps) else float("nan")
    print(json.dumps({
        "benchmark": "soak",
        "model": model.name,
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "minutes": args.minutes,
        "unit": str(unit),
        "attribution": list(request.attribution),
        "source_fps": args.source_fps,
        "frames_processed": report.frames_processed,
        "pipeline_fps": round(report.pipeline_fps, 2),
        "latency_ms_p95": round(report.latency_ms_p95, 1),
        "rss_start_mb": samples[0]["rss_mb"],
        "rss_after_warmup_mb": rss_warm,
        "rss_end_mb": rss_end,
        "rss_growth_after_warmup_pct": round(100.0 * (rss_end - rss_warm) / rss_warm, 2) if warm else None,
        "rss_max_after_warmup_mb": max((s["rss_mb"] for s in warm), default=None),
        "fps_first_window": fps_windows[0]["fps"] if fps_windows else None,
        "fps_last_window": fps_windows[-1]["fps"] if fps_windows else None,
        "fps_trend_pct_per_min": round(100.0 * slope / mean_fps, 2) if mean_fps == mean_fps and mean_fps else None,
        "samples": samples,
    }, indent=1))


if __name__ == "__main__":
    main()
