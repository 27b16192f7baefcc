"""Click -> first painted result, and display fps, of the real window under Xvfb: this tree side by side with an
older revision (default: the last commit, so a change is measured before/after), interleaved in one run.

Each measurement is a child process on the demo source (as fast as the network takes frames, --views backprop
images on (default guided), layer _blocks.3, the malloc policy `deepvis` starts with): after a warm-up, units
are selected one after another and the time from the selection to the first painted result made for it is
recorded; then painted results are counted for 10 s. Prints JSON.

Usage: python benchmarks/gui_latency.py [--rev REV] [--rounds 2] [--clicks 15] [--views V,...] [--busy N]
(re-runs itself under `xvfb-run` when there is no display)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from children import rerun_under_xvfb

ROOT = Path(__file__).resolve().parents[1]
OLD_REV = "HEAD"  # the last commit: the working tree's changes against it (any revision with `win.live`)


def child(clicks: int, views: tuple[str, ...]) -> dict:
    os.environ.setdefault("QT_API", "pyside6")
    from deepvis_app import devices
    from deepvis_app.devices import hand_threads_to_worker

    if hasattr(devices, "keep_freed_memory"):  # as `deepvis` starts (older revisions had no such policy)
        devices.keep_freed_memory()
    threads = hand_threads_to_worker()
    import pyqtgraph as pg
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from deepvis_app import load_model
    from deepvis_app.gui.main_window import MainWindow
    from deepvis_app.sources import open_source

    try:
        from deepvis_app.values import Unit, ViewRequest
    except ImportError:  # revisions before the value-types module
        from deepvis_app.pipeline import Unit, ViewRequest

    pg.setConfigOptions(imageAxisOrder="row-major")
    app = QApplication(sys.argv[:1])
    vm = load_model("efficientnet_lite0", device="cpu")
    settings = QSettings(os.path.join(tempfile.mkdtemp(), "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(vm, open_source("demo"), ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0),
                                                            attribution=views),
                     fps=None, device="cpu", settings=settings, worker_threads=threads)
    win.resize(1600, 1000)
    win.show()
    live, grid = win.live, win.feature("grid")

    def shown():
        return live.shown

    def request():
        return live.request

    def select(c: int) -> None:
        grid.select_channel(c)

    def paints() -> int:
        return live.paint_count

    def wait(pred, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            app.processEvents()
            if pred():
                return True
            time.sleep(0.002)
        return False

    wait(lambda: shown() is not None, 120)
    t_end = time.monotonic() + 5
    wait(lambda: time.monotonic() > t_end, 10)  # warm-up
    latencies = []
    for i in range(clicks):
        t0 = time.perf_counter()
        select((i * 7 + 3) % 40)
        rid = request().request_id
        if wait(lambda rid=rid: shown() is not None and shown().request_id >= rid):
            latencies.append((time.perf_counter() - t0) * 1000)
        t_pause = time.monotonic() + 0.4
        wait(lambda t=t_pause: time.monotonic() > t, 5)
    n0, t0 = paints(), time.monotonic()
    wait(lambda: time.monotonic() - t0 > 10, 15)
    fps = (paints() - n0) / (time.monotonic() - t0)
    win.close()
    return {"click_to_paint_ms_median": round(statistics.median(latencies), 1),
            "click_to_paint_ms_p90": round(sorted(latencies)[int(0.9 * (len(latencies) - 1))], 1),
            "clicks": len(latencies), "display_fps": round(fps, 2)}


def run_child(path: Path, clicks: int, views: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(path), DEEPVIS_LATENCY_CHILD="1")
    out = subprocess.run([sys.executable, __file__, "--child", "--clicks", str(clicks), "--views", views], env=env,
                         cwd=path,
                         capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(lines[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default=OLD_REV)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clicks", type=int, default=15)
    ap.add_argument("--views", default="guided", help="backprop views shown, comma-separated (all three: "
                    "gradient,deconv,guided)")
    ap.add_argument("--busy", type=int, default=0, help="busy-loop processes running beside the window (other "
                    "programs on the machine; one per core is the issue's case)")
    ap.add_argument("--child", action="store_true")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.clicks, tuple(args.views.split(",")))), flush=True)
        return 0
    status = rerun_under_xvfb()
    if status is not None:
        return status
    old = Path(tempfile.mkdtemp()) / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.rev], check=True,
                   capture_output=True)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        results: dict[str, list] = {"this_tree": [], f"rev_{args.rev}": []}
        for _ in range(args.rounds):
            results[f"rev_{args.rev}"].append(run_child(old, args.clicks, args.views))
            results["this_tree"].append(run_child(ROOT, args.clicks, args.views))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)
    print(json.dumps({"benchmark": "gui_latency", "layer": "_blocks.3", "backprop": args.views,
                      "source": "demo (unpaced)", "busy_processes": args.busy, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
