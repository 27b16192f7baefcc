"""GUI soak: the real window (xcb under Xvfb) on the demo source with guided backprop on, for N minutes.

Reports, as JSON lines on stdout, every minute: RSS, the window's smoothed inference / display rates, painted
results, Python objects and the refcount of None (on Python < 3.12 a falling count is the PySide6 6.12.0 leak that
aborted the app); then a summary: still alive, RSS growth after warm-up, fps trend. Not part of the test suite.

Usage: python benchmarks/gui_soak.py [--minutes 30] [--fps 0] [--layer _blocks.3] [--unit 5]
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


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--fps", type=float, default=0.0, help="source rate (0: as fast as the network takes them)")
    ap.add_argument("--layer", default="_blocks.3")
    ap.add_argument("--unit", type=int, default=5)
    ap.add_argument("--every", type=float, default=60.0, help="seconds between reports")
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
    t0 = time.monotonic()
    rows: list[dict] = []

    def report() -> None:
        gc.collect()
        live = win.live
        row = {"minute": round((time.monotonic() - t0) / 60, 2), "rss_mb": round(rss_mb(), 1),
               "inference_fps": round(live.stats["inference_fps"], 2),
               "attribution_fps": round(live.stats["attribution_fps"], 2),
               "display_fps": round(live.stats["display_fps"], 2), "painted": live.paint_count,
               "objects": len(gc.get_objects()), "none_refcount": sys.getrefcount(None),
               "messages": len(win.ctx.messages)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if time.monotonic() - t0 >= args.minutes * 60:
            app.quit()

    timer = QTimer()
    timer.timeout.connect(report)
    timer.start(int(args.every * 1000))
    app.exec()
    win.close()
    warm = [r for r in rows if r["minute"] >= 2] or rows
    summary = {"summary": True, "malloc": malloc, "alive_minutes": rows[-1]["minute"] if rows else 0,
               "python": sys.version.split()[0], "pyside6": __import__("PySide6").__version__,
               "rss_mb_after_warmup": warm[0]["rss_mb"] if warm else None,
               "rss_mb_end": rows[-1]["rss_mb"] if rows else None,
               "rss_growth_after_warmup_pct": round(100 * (warm[-1]["rss_mb"] / warm[0]["rss_mb"] - 1), 2)
               if warm else None,
               "inference_fps_first_half": _mean([r["inference_fps"] for r in warm[:len(warm) // 2 or 1]]),
               "inference_fps_second_half": _mean([r["inference_fps"] for r in warm[len(warm) // 2:]]),
               "none_refcount_change": rows[-1]["none_refcount"] - rows[0]["none_refcount"] if rows else None}
    print(json.dumps(summary), flush=True)
    return 0


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 2) if xs else None


if __name__ == "__main__":
    sys.exit(main())
