"""Window painted fps vs the headless pipeline, same source (the demo, unpaced: frames as fast as the network takes
them), model, layer, unit and views, as `deepvis` runs each (the window: worker threads and GIL switch interval
from `hand_threads_to_worker`; headless: `deepvis run --headless`'s `interactive_threads`; both with the program's
malloc policy). A unit is always explained (the window picks one itself when none is chosen); the "" case shows
its map without backprop views. Rounds alternate the two in child processes; medians. SWITCH=<seconds> in the
environment sets another switch interval in the window, to compare.

The window child also reports what its GUI thread spends per painted result (`LiveSession.paint_ms`), the worker's
own rate inside the window (results produced / s: painted <= produced), where each thread's time went ("cores":
per thread [cores on a CPU, cores' worth waiting runnable for one] from schedstat, and the rest of the machine's
busy time: Xvfb), the worker's trims, the request it ran, and, with --profile, the GUI thread's top functions
(cProfile on that thread only; PROFILE_OUT=<file> keeps the whole profile) over the counted seconds. Both sides
run the CPU worker as `deepvis` does: explained frames in two stages unless DEEPVIS_STAGES=1 (`pipeline.stages`).

Goal (issue 30): painted fps >= 0.9x the headless pipeline's. Prints JSON: per case the medians and their ratio,
and each round's ratio (window / the headless run just before it) with their mean.

Usage: python benchmarks/gui_paint.py [--rounds 3] [--seconds 12] [--views "",guided,gradient+deconv+guided]
       [--layer _blocks.3] [--profile]   (re-runs itself under `xvfb-run` at 1600x1000 when there is no display)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from children import child_json, rerun_under_xvfb


def _request(layer: str, views: tuple[str, ...]):
    from deepvis_app.values import Unit, ViewRequest

    # a unit is always explained: the window selects one on its own (the layer's strongest) when none is chosen
    return ViewRequest(layer=layer, unit=Unit(layer, 5), attribution=views)


def _cpu_sample(roles: dict[int, str] | None = None) -> dict:
    """Each of this process's threads (/proc/self/task: seconds on a CPU and seconds waiting for one, from
    schedstat), the whole machine's busy time (/proc/stat) and the clock, to tell the GUI thread's, the worker's,
    its OpenMP helpers' and other programs' (Xvfb) shares. `roles` names threads by native id."""
    roles = {os.getpid(): "main", **(roles or {})}
    threads: dict[str, tuple[float, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run_ns, wait_ns = (int(v) for v in f.read().split()[:2])
        except (OSError, ValueError):
            continue
        threads[roles.get(int(tid), f"t{tid}")] = (run_ns / 1e9, wait_ns / 1e9)
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    busy = (sum(vals) - vals[3] - vals[4]) / os.sysconf("SC_CLK_TCK")
    return {"t": time.monotonic(), "threads": threads, "busy": busy}


def _cpu_share(a: dict, b: dict) -> dict:
    """Per thread between two samples: [cores used, cores' worth of time it waited runnable for a CPU]; this
    process's total and the rest of the machine's (cores)."""
    wall = b["t"] - a["t"]
    per = {k: [round((v[0] - a["threads"].get(k, (0.0, 0.0))[0]) / wall, 3),
               round((v[1] - a["threads"].get(k, (0.0, 0.0))[1]) / wall, 3)] for k, v in b["threads"].items()}
    mine = sum(v[0] for v in per.values())
    return {"threads": {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1][0]) if v[0] + v[1] >= 0.005},
            "process": round(mine, 3), "others": round((b["busy"] - a["busy"]) / wall - mine, 3)}


def _changed(req) -> dict:
    """The request's fields that differ from a default ViewRequest (what the worker was asked to do)."""
    from dataclasses import fields

    from deepvis_app.values import ViewRequest

    base = ViewRequest()
    return {f.name: str(getattr(req, f.name)) for f in fields(req)
            if f.name != "request_id" and getattr(req, f.name) != getattr(base, f.name)}


def window_child(layer: str, views: tuple[str, ...], seconds: float, profile: bool) -> dict:
    os.environ.setdefault("QT_API", "pyside6")
    from deepvis_app.devices import hand_threads_to_worker, keep_freed_memory

    keep_freed_memory()
    threads = hand_threads_to_worker()  # also the GUI process's GIL switch interval
    if os.environ.get("SWITCH"):  # another switch interval, to compare
        sys.setswitchinterval(float(os.environ["SWITCH"]))
    import pyqtgraph as pg
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from deepvis_app import load_model
    from deepvis_app.gui.main_window import MainWindow
    from deepvis_app.sources import open_source

    pg.setConfigOptions(imageAxisOrder="row-major")

    app = QApplication(sys.argv[:1])
    vm = load_model("efficientnet_lite0", device="cpu")
    settings = QSettings(os.path.join(tempfile.mkdtemp(), "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(vm, open_source("demo"), _request(layer, views), fps=0, device="cpu", settings=settings,
                     worker_threads=threads)
    win.resize(1600, 1000)
    win.show()
    live = win.live
    from deepvis_app.values import Unit

    # the case exactly: unit 5 with these views ("off": the unit's map and value, no backprop view)
    mode = ("all" if len(views) == 3 else views[0]) if views else "off"
    win.ctx.state.update(layer=layer, unit=Unit(layer, 5), backprop_mode=mode)

    from PySide6.QtCore import QTimer

    marks: dict = {}
    stages: dict[str, list[float]] = {}

    def on_paint(res) -> None:
        if "t0" in marks:
            for k, v in res.timings.items():
                stages.setdefault(k, []).append(v * 1000)

    live.painted.connect(on_paint)

    roles = {live.worker.native_id: "worker"}

    def begin() -> None:
        if profile:
            import cProfile

            # PROFILE_CLOCK=cpu: the thread's CPU time (time.thread_time), so waits for the GIL do not count
            clock = time.thread_time if os.environ.get("PROFILE_CLOCK") == "cpu" else time.perf_counter
            marks["prof"] = cProfile.Profile(clock)
            marks["prof"].enable()
        live.paint_ms.clear()
        marks.update(p0=live.paint_count, d0=live.worker.frames_done, k0=live.worker.kept.trims,
                     t0=time.monotonic(), cpu0=_cpu_sample(roles))
        QTimer.singleShot(int(seconds * 1000), end)

    def end() -> None:  # counted while the worker still runs (quitting stops it, and its thread's CPU goes)
        marks.update(p1=live.paint_count, d1=live.worker.frames_done, k1=live.worker.kept.trims,
                     t1=time.monotonic(), cpu1=_cpu_sample(roles))
        app.quit()

    QTimer.singleShot(6000, begin)  # model copy, first frames, layouts; then the window's own event loop
    app.exec()
    cores = _cpu_share(marks["cpu0"], marks["cpu1"])
    prof = marks.get("prof")
    p0, d0, t0 = marks["p0"], marks["d0"], marks["t0"]
    span = marks["t1"] - t0
    painted, produced = (marks["p1"] - p0) / span, (marks["d1"] - d0) / span
    out = {"painted_fps": round(painted, 2), "produced_fps": round(produced, 2),
           "paint_ms_median": round(statistics.median(live.paint_ms), 2) if live.paint_ms else None,
           "paint_ms_p90": round(sorted(live.paint_ms)[int(0.9 * (len(live.paint_ms) - 1))], 2)
           if live.paint_ms else None, "worker_threads": threads,
           "worker_stage_ms": {k: round(statistics.median(v), 2) for k, v in stages.items()}, "cores": cores,
           "trims_per_s": round((marks["k1"] - marks["k0"]) / span, 2), "stage_one": live.worker.stage_one,
           "request": _changed(live.request)}
    if prof is not None:
        import pstats

        prof.disable()
        if os.environ.get("PROFILE_OUT"):  # the whole profile, for pstats
            prof.dump_stats(os.environ["PROFILE_OUT"])
        stats = pstats.Stats(prof)
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # by own time
        out["gui_thread_top"] = [{"fn": f"{k[0].rsplit('/', 2)[-1]}:{k[1]} {k[2]}", "own_ms_per_paint":
                                  round(v[2] * 1000 / max(1, painted * span), 3), "calls": v[1]} for k, v in rows]
    win.close()
    return out


def headless_child(layer: str, views: tuple[str, ...], seconds: float) -> dict:
    import torch

    from deepvis_app.devices import interactive_threads, keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(interactive_threads())  # as `deepvis run --headless`
    from deepvis_app import load_model
    from deepvis_app.pipeline import run_headless
    from deepvis_app.sources import open_source

    vm = load_model("efficientnet_lite0", device="cpu")
    run_headless(vm, open_source("demo"), frames=30, request=_request(layer, views), warmup=5, fps=0)  # warm-up
    cpu0 = _cpu_sample()
    rep = run_headless(vm, open_source("demo"), frames=1_000_000, request=_request(layer, views), warmup=5,
                       timeout=seconds, fps=0)  # as many as arrive in `seconds`
    return {"pipeline_fps": round(rep.pipeline_fps, 2), "frames": rep.frames_processed,
            "stage_ms_mean": {k: round(v, 2) for k, v in rep.stage_ms_mean.items()},
            "torch_threads": torch.get_num_threads(), "request": _changed(_request(layer, views)),
            "cores": _cpu_share(cpu0, _cpu_sample())}


def run_child(kind: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--layer", args.layer, "--views", args.views,
           "--seconds", str(args.seconds)] + (["--profile"] if args.profile else [])
    return child_json(cmd, timeout=900)



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu only (the GPU path has its own benchmark, gpu.py)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--layer", default="_blocks.3")
    ap.add_argument("--views", default="", help="comma-separated cases; in a case '+' joins views ('' = none)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--child", default="")
    args = ap.parse_args()
    if args.child:
        views = tuple(v for v in args.views.split("+") if v)
        if args.child == "window":
            print(json.dumps(window_child(args.layer, views, args.seconds, args.profile)), flush=True)
        else:
            print(json.dumps(headless_child(args.layer, views, args.seconds)), flush=True)
        return 0
    status = rerun_under_xvfb()
    if status is not None:
        return status
    cases = args.views.split(",")
    result: dict = {"benchmark": "gui_paint", "layer": args.layer, "source": "demo (unpaced)",
                    "seconds": args.seconds, "rounds": args.rounds, "cases": {}}
    for case in cases:
        sub = argparse.Namespace(**{**vars(args), "views": case})
        runs: dict[str, list[dict]] = {"window": [], "headless": []}
        for _ in range(args.rounds):
            runs["headless"].append(run_child("headless", sub))
            runs["window"].append(run_child("window", sub))
        ok = [r for r in runs["window"] if "painted_fps" in r]
        hk = [r for r in runs["headless"] if "pipeline_fps" in r]
        row: dict = {"runs": runs}
        if ok and hk:
            painted = statistics.median(r["painted_fps"] for r in ok)
            headless = statistics.median(r["pipeline_fps"] for r in hk)
            # each round's window over the headless run just before it: the host's speed drifts between rounds,
            # so their spread says how far one run's medians can be trusted
            rounds = [round(w["painted_fps"] / h["pipeline_fps"], 3) for h, w in zip(runs["headless"],
                                                                                     runs["window"], strict=True)
                      if "painted_fps" in w and "pipeline_fps" in h]
            row.update(painted_fps=painted, headless_fps=headless, ratio=round(painted / headless, 3),
                       produced_fps=statistics.median(r["produced_fps"] for r in ok), round_ratios=rounds,
                       round_ratio_mean=round(statistics.fmean(rounds), 3) if rounds else None)
        result["cases"][case or "none"] = row
        print(json.dumps({case or "none": {k: v for k, v in row.items() if k != "runs"}}), flush=True)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
