"""GUI soak: the real window (xcb under Xvfb) on the demo source with guided backprop on, for N minutes.

Reports, as JSON lines on stdout, every minute: RSS (all, anonymous, file-backed; with --floor again right
after handing the arenas' free pages back: the floor a leak raises), glibc's heap accounting, the window's
smoothed inference / display rates, painted results, Python objects and the refcount of None (on Python < 3.12 a
falling count is the PySide6 6.12.0 leak that aborted the app); then a summary: still alive, RSS growth after
warm-up, fps trend. Not part of the test suite.

Usage: python benchmarks/gui_soak.py [--minutes 30] [--fps 0] [--layer _blocks.3] [--unit 5]
       [--panels where,heatmap,embedding] [--trace 10] [--floor] [--hard-exit]
(`--panels` opens those tool panels, live, as a user would from the Tools menu; `--trace N` prints the N Python
allocation sites that grew most since the previous report, from tracemalloc)
(re-runs itself under `xvfb-run` when there is no display)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter


def rss_mb(kind: str = "VmRSS") -> float:
    """Resident MB: all (VmRSS), anonymous (RssAnon: the heaps, tensors) or file-backed (RssFile: libraries)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(kind + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def heap_mb() -> dict[str, float]:
    """glibc's account (`heap.accounting`) in MB; empty where there is no mallinfo2."""
    from deepvis_app.heap import accounting

    return {f"heap_{k}_mb" if k != "mmapped" else "mmapped_mb": round(v / 2**20, 1) for k, v in accounting().items()}


def kept_mb(kept) -> dict[str, float | None]:
    """The worker's `heap.KeptMemory`: resident private memory beyond malloc's bytes in use now, and that excess
    right after its last trim (its floor). A floor that climbs is memory no trim gives back (fragmentation, or
    memory outside malloc); an excess that swings above a flat floor is free memory kept between trims."""
    excess, floor = kept.excess(), kept.floor
    return {"excess_mb": None if excess is None else round(excess / 2**20, 1),
            "kept_floor_mb": None if floor is None else round(floor / 2**20, 1)}


def trimmed() -> dict[str, float]:
    """RSS right after handing the arenas' free pages back (`devices.release_freed_memory`, as the worker does every
    30 s) and what that took: a leak raises this floor, kept free memory only the figure before it."""
    from deepvis_app.devices import release_freed_memory

    t = time.perf_counter()
    release_freed_memory()
    return {"rss_trimmed_mb": round(rss_mb(), 1), "trim_ms": round((time.perf_counter() - t) * 1000, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=0.0, help="source rate (0: as fast as the network takes them)")
    ap.add_argument("--layer", default="_blocks.3")
    ap.add_argument("--unit", type=int, default=5)
    ap.add_argument("--every", type=float, default=60.0, help="seconds between reports")
    ap.add_argument("--panels", default="where", help="tool panels to open, comma-separated ('' for none)")
    ap.add_argument("--trace", type=int, default=0, help="report the N Python allocation sites that grew most")
    ap.add_argument("--floor", action="store_true",
                    help="also trim at each report and give the RSS after it (a leak raises that floor); the extra "
                         "trims change what the window keeps, so leave it off to measure the window's own policy")
    ap.add_argument("--hard-exit", action="store_true",
                    help="end with os._exit, the window still open: under heaptrack, everything alive then counts as "
                         "leaked, so two runs' difference (heaptrack_print -d) is what grew")
    args = ap.parse_args()
    if not os.environ.get("DISPLAY") and not os.environ.get("DEEPVIS_SOAK_CHILD"):
        if not shutil.which("xvfb-run"):
            print(json.dumps({"error": "no display and no xvfb-run (apt-get install xvfb)"}))
            return 2
        env = dict(os.environ, DEEPVIS_SOAK_CHILD="1")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
        return subprocess.call(cmd, env=env)

    os.environ.setdefault("QT_API", "pyside6")
    os.environ["DEEPVIS_SETTINGS"] = os.path.join(tempfile.mkdtemp(), "settings.ini")
    from deepvis_app.devices import hand_threads_to_worker, keep_freed_memory

    malloc = keep_freed_memory()  # as `deepvis` starts (DEEPVIS_MALLOC=system: glibc's defaults)
    threads = hand_threads_to_worker()
    import pyqtgraph as pg
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from deepvis_app import load_model
    from deepvis_app.gui.main_window import KeyFilter, MainWindow
    from deepvis_app.pipeline import Unit, ViewRequest
    from deepvis_app.sources import open_source

    pg.setConfigOptions(imageAxisOrder="row-major")
    app = QApplication(sys.argv[:1])
    vm = load_model("efficientnet_lite0", device=args.device)
    request = ViewRequest(layer=args.layer, unit=Unit(args.layer, args.unit), attribution=("guided",))
    win = MainWindow(vm, open_source("demo"), request, fps=args.fps or None, device=args.device,
                     settings=QSettings(os.environ["DEEPVIS_SETTINGS"], QSettings.Format.IniFormat),
                     worker_threads=threads)
    app.installEventFilter(KeyFilter(win))
    win.resize(1600, 1000)
    win.show()
    panels = [p for p in args.panels.split(",") if p]
    for name in panels:
        feature = win.feature(name)
        if hasattr(feature, "open"):
            feature.open()
        else:  # a panel without a menu entry of its own: shown as its Tools action shows it
            feature.show_panel(name)
        box = getattr(feature, "live_box", None)
        if box is not None:
            box.setChecked(True)  # its "live" box: recompute on new frames
    if args.trace:
        import tracemalloc

        tracemalloc.start(8)
        traced = [tracemalloc.take_snapshot()]
    t0 = time.monotonic()
    rows: list[dict] = []

    kinds: list[Counter] = [Counter()]

    def report() -> None:
        gc.collect()
        live = win.live
        now = Counter(type(o).__name__ for o in gc.get_objects())
        grew_kinds = {k: n for k, n in (now - kinds[0]).most_common(5)}
        kinds[0] = now
        row = {"minute": round((time.monotonic() - t0) / 60, 2), "rss_mb": round(rss_mb(), 1),
               "anon_mb": round(rss_mb("RssAnon"), 1), "file_mb": round(rss_mb("RssFile"), 1), **heap_mb(),
               **kept_mb(win.live.worker.kept), **(trimmed() if args.floor else {}),
               "inference_fps": round(live.stats["inference_fps"], 2),
               "attribution_fps": round(live.stats["attribution_fps"], 2),
               "display_fps": round(live.stats["display_fps"], 2), "painted": live.paint_count,
               "objects": len(gc.get_objects()), "none_refcount": sys.getrefcount(None),
               "messages": len(win.ctx.messages), "object_kinds_grew": grew_kinds,
               "visible": [n for n in panels if getattr(win.feature(n), "panel", None) is not None
                           and win.feature(n).panel.isVisible()]}
        if args.trace:
            snap = tracemalloc.take_snapshot()
            grew = snap.compare_to(traced[0], "traceback")[:args.trace]
            traced[0] = snap
            row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
            row["grew"] = [{"kb": round(d.size_diff / 1024, 1), "count": d.count_diff,
                            "at": [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in d.traceback[:4]]}
                           for d in grew]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if time.monotonic() - t0 >= args.minutes * 60:
            app.quit()

    timer = QTimer()
    timer.timeout.connect(report)
    timer.start(int(args.every * 1000))
    app.exec()
    if not args.hard_exit:
        win.close()
    warm = [r for r in rows if r["minute"] >= 2] or rows
    # RSS swings with the heap the malloc policy keeps (up to 1 GiB free before trimming), so growth compares the
    # medians of the first and the last fifth after warm-up, beside the least-squares slope
    k = max(1, len(warm) // 5)
    first, last = _median([r["rss_mb"] for r in warm[:k]]), _median([r["rss_mb"] for r in warm[-k:]])
    slope = _slope([(r["minute"], r["rss_mb"]) for r in warm])
    in_use = [(r["minute"], r["heap_in_use_mb"]) for r in warm if "heap_in_use_mb" in r]
    summary = {"summary": True, "malloc": malloc, "panels": panels, "layer": args.layer, "unit": args.unit,
               "alive_minutes": rows[-1]["minute"] if rows else 0,
               "python": sys.version.split()[0], "pyside6": __import__("PySide6").__version__,
               "rss_mb_after_warmup": warm[0]["rss_mb"] if warm else None,
               "rss_mb_end": rows[-1]["rss_mb"] if rows else None,
               "rss_mb_median_first_fifth": first, "rss_mb_median_last_fifth": last,
               "rss_growth_after_warmup_pct": round(100 * (last / first - 1), 2) if first else None,
               "rss_mb_min_max_after_warmup": [min(r["rss_mb"] for r in warm), max(r["rss_mb"] for r in warm)],
               "rss_trimmed_growth_after_warmup_pct": _growth([r["rss_trimmed_mb"] for r in warm], k)
               if args.floor else None,
               "trims_by_the_worker": win.live.worker.kept.trims,
               "anon_mb_first_last": [warm[0]["anon_mb"], rows[-1]["anon_mb"]] if warm else None,
               "heap_in_use_mb_per_minute_after_warmup": round(_slope(in_use) or 0, 2)
               if len(in_use) > 1 else None,
               "kept_floor_mb_per_minute_after_warmup": _slope_of(warm, "kept_floor_mb"),
               "excess_mb_per_minute_after_warmup": _slope_of(warm, "excess_mb"),
               "objects_per_minute_after_warmup": round(_slope([(r["minute"], r["objects"]) for r in warm]) or 0, 1),
               "rss_mb_per_minute_after_warmup": round(slope, 2) if slope is not None else None,
               "inference_fps_first_half": _mean([r["inference_fps"] for r in warm[:len(warm) // 2 or 1]]),
               "inference_fps_second_half": _mean([r["inference_fps"] for r in warm[len(warm) // 2:]]),
               "none_refcount_change": rows[-1]["none_refcount"] - rows[0]["none_refcount"] if rows else None}
    print(json.dumps(summary), flush=True)
    if args.hard_exit:
        os._exit(0)
    return 0


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares MB per minute: a leak is a line, a warm-up a step."""
    if len(points) < 2:
        return None
    mx = sum(p[0] for p in points) / len(points)
    my = sum(p[1] for p in points) / len(points)
    den = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / den if den else None


def _slope_of(rows: list[dict], key: str) -> float | None:
    """`_slope` of one reported figure over the rows that have it, rounded."""
    slope = _slope([(r["minute"], r[key]) for r in rows if r.get(key) is not None])
    return None if slope is None else round(slope, 2)


def _growth(xs: list[float], k: int) -> float | None:
    """Percent from the median of the first k values to that of the last k."""
    first, last = _median(xs[:k]), _median(xs[-k:])
    return round(100 * (last / first - 1), 2) if first else None


def _median(xs: list[float]) -> float | None:
    return round(sorted(xs)[len(xs) // 2], 1) if xs else None


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 2) if xs else None


if __name__ == "__main__":
    sys.exit(main())
