"""The window's observable state: status-bar stats, the snapshot state dict and saving snapshots."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog

from ..errors import DeepVisError

if TYPE_CHECKING:
    from .main_window import MainWindow


def input_caption(win: MainWindow) -> str:
    s = win.stats
    parts = [f"{s['inference_fps']:.1f} fps"]
    if win.camera_frozen:
        parts.append("FROZEN")
    return "  ".join(parts)


def update_stats(win: MainWindow) -> None:
    now = time.perf_counter()
    c = win._counts
    dt = max(1e-6, now - c["t"])
    frames = win._frames_before + (win.capture.frames_read if win.capture is not None else 0)
    results, attr = win.bridge.results_received, win.bridge.attributions_received
    win.stats = {"capture_fps": (frames - c["frames"]) / dt, "inference_fps": (results - c["results"]) / dt,
                  "attribution_fps": (attr - c["attr"]) / dt, "display_fps": (win.paint_count - c["paints"]) / dt}
    win._counts = {"frames": frames, "results": results, "attr": attr, "paints": win.paint_count, "t": now}
    win._update_status_labels()
    win.input_pane.set_caption(win._input_caption())


def update_status_labels(win: MainWindow) -> None:
    source = win.source.name if win.source is not None else "no source"
    win.setWindowTitle(f"DeepVis - {win.vm.spec.title} - {source}")
    s = win.stats
    labels = win.status_labels
    labels["model"].setText(f"model {win.vm.name}")
    labels["device"].setText(str(win.vm.device))
    labels["source"].setText(f"source {win.source.name}" if win.source is not None else "")
    labels["capture"].setText(f"capture {s['capture_fps']:.1f} fps")
    labels["inference"].setText(f"inference {s['inference_fps']:.1f} fps")
    labels["attribution"].setText(f"attribution {s['attribution_fps']:.1f} fps")


def state_dict(win: MainWindow) -> dict:
    res = win._painted
    req = win.request
    return {
        "model": win.vm.name, "device": str(win.vm.device),
        "source": win.source.name if win.source is not None else None,
        "layer": win.layer, "unit": str(req.unit) if req.unit is not None else None,
        "unit_layer": req.unit.layer if req.unit is not None else None,
        "unit_channel": req.unit.channel if req.unit is not None else None,
        "norm": req.norm, "gamma": req.gamma, "backprop_mode": win.backprop_mode,
        "backprop_view": win.backprop_view, "attribution": list(req.attribution),
        "unit_frozen": win.unit_frozen, "camera_frozen": win.camera_frozen, "mirror": win.mirror,
        "overlay": win.overlay_on, "map_view": win.map_view, "pattern_mode": win.pattern_on,
        "patterns_cached": sum(im is not None for im in win._pattern_images) if win.pattern_on else None,
        "request_id": req.request_id,
        "live_topk": req.live_topk, "erf": req.erf,
        "live_topk_tiles": len(res.live_topk) if res is not None and res.live_topk is not None else None,
        "live_topk_frames": res.live_topk_frames if res is not None else 0,
        "erf_frames": res.erf_frames if res is not None else 0,
        "store": str(win.store.root) if win.store is not None else None,
        "topk_tiles": len(win.inspector.topk.tiles), "topk_message": win.inspector.topk.message_text,
        "frame_id": res.frame_id if res is not None else None,
        "shown_request_id": res.request_id if res is not None else None,
        "shown_unit": str(res.unit) if res is not None and res.unit is not None else None,
        "unit_value": res.unit_value if res is not None else None,
        "predictions": [{"index": i, "name": n, "prob": p} for i, n, p in (res.predictions if res else [])],
        "stats": dict(win.stats),
        "gui_paint_ms_mean": sum(win.paint_ms) / len(win.paint_ms) if win.paint_ms else None,
        "click_latency_ms": [round(x * 1000, 1) for x in win.click_latencies[-10:]],
        "latency_ms": res.latency * 1000 if res is not None else None,
        "timings_ms": {k: v * 1000 for k, v in res.timings.items()} if res is not None else {},
        "messages": win.messages[-10:],
    }


def save_snapshot(win: MainWindow, directory: str | Path) -> list[Path]:
    from .snapshot import write_snapshot

    paths = write_snapshot(win, Path(directory))
    win.status.showMessage(f"snapshot: {len(paths)} files in {directory}", 6000)
    return paths


def save_snapshot_now(win: MainWindow) -> None:
    """Ctrl+S: no dialog (live capture goes on), into $DEEPVIS_SNAPSHOTS or ~/deepvis-snapshots/<time>."""
    root = Path(os.environ.get("DEEPVIS_SNAPSHOTS") or Path.home() / "deepvis-snapshots")
    directory = root / time.strftime("%Y%m%d-%H%M%S")
    try:
        paths = win.save_snapshot(directory)
    except (OSError, DeepVisError) as err:
        win.notify(f"snapshot failed: {err}", "error")
        return
    win.notify(f"snapshot saved: {len(paths)} files in {directory}", "info", seconds=5)


def save_snapshot_dialog(win: MainWindow) -> None:
    directory = QFileDialog.getExistingDirectory(win, "Save snapshot into folder")
    if directory:
        try:
            win.save_snapshot(directory)
        except (OSError, DeepVisError) as err:
            win.notify(f"snapshot failed: {err}", "error")
