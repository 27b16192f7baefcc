"""Snapshots: a PNG of the whole window and of each visible panel, each feature's images (input, grid, backprop
views, ...) and the state as JSON. Ctrl+S saves without a dialog (live capture goes on), into $DEEPVIS_SNAPSHOTS
or ~/deepvis-snapshots/<time>; `deepvis --snapshot DIR` uses the same writer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from PySide6.QtGui import QImage, QKeySequence
from PySide6.QtWidgets import QFileDialog

from ...errors import DeepVisError
from ...fileio import atomic_write_bytes, atomic_write_text, encode_png
from ..feature import Feature, MenuItem


class SnapshotsFeature(Feature):
    name = "snapshots"

    def state_dict(self) -> dict:
        """Everything a snapshot (or a test) wants to know: the choices, what is on screen, every feature's facts."""
        ctx = self.ctx
        live = ctx.live
        res = live.shown
        req = live.request
        out = {"model": ctx.vm.name, "weights": str(ctx.vm.weights), "device": str(ctx.vm.device),
               "layer": ctx.state.layer, "unit": str(req.unit) if req.unit is not None else None,
               "unit_layer": req.unit.layer if req.unit is not None else None,
               "unit_channel": req.unit.channel if req.unit is not None else None,
               "attribution": list(req.attribution), "request_id": req.request_id, "live_topk": req.live_topk,
               "erf": req.erf,
               "frame_id": res.frame_id if res is not None else None,
               "shown_request_id": res.request_id if res is not None else None,
               "shown_unit": str(res.unit) if res is not None and res.unit is not None else None,
               "unit_value": res.unit_value if res is not None else None,
               "erf_frames": res.erf_frames if res is not None else 0,
               "latency_ms": res.latency * 1000 if res is not None else None,
               "timings_ms": {k: v * 1000 for k, v in res.timings.items()} if res is not None else {},
               "gui_paint_ms_mean": sum(live.paint_ms) / len(live.paint_ms) if live.paint_ms else None,
               "click_latency_ms": [round(x * 1000, 1) for x in list(live.click_latencies)[-10:]],
               "messages": ctx.message_texts(10)}
        state = ctx.state.as_dict()
        for key in ("norm", "gamma", "colormap", "backprop_mode", "backprop_view", "unit_frozen", "camera_frozen",
                    "mirror", "map_view", "live_topk_epoch"):
            out[key] = state[key]
        out["overlay"] = state["map_view"] == "overlay"
        for feature in ctx.features:
            out.update(feature.snapshot_state())
        return out

    def save(self, directory: str | Path) -> list[Path]:
        """Write window.png, pane_<key>.png (visible panels), each feature's images and state.json into
        `directory` (created). Returns the files written; raises DeepVisError when it cannot write."""
        ctx = self.ctx
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DeepVisError(f"cannot create snapshot folder {directory}: {err.strerror}") from None
        written: list[Path] = []

        def write(name: str, data: bytes) -> None:
            path = directory / name
            try:
                atomic_write_bytes(path, data)
            except OSError as err:
                raise DeepVisError(f"cannot write {path}: {err.strerror}") from None
            written.append(path)

        def grab(widget, name: str) -> None:
            image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
            h, w, stride = image.height(), image.width(), image.bytesPerLine()
            arr = np.frombuffer(image.constBits(), np.uint8, count=h * stride).reshape(h, stride)
            write(f"{name}.png", encode_png(arr[:, :w * 3].reshape(h, w, 3)))

        grab(ctx.top_widget, "window")
        for key, widget in ctx.panel_widgets.items():
            if widget.isVisible():
                grab(widget, f"pane_{key}")
        for feature in ctx.features:
            for name, image in feature.snapshot_images().items():
                write(f"{name}.png", encode_png(image))
        atomic_write_text(directory / "state.json", json.dumps(self.state_dict(), indent=2, default=str) + "\n")
        written.append(directory / "state.json")
        return written

    def save_now(self) -> None:
        """Ctrl+S: no dialog, into $DEEPVIS_SNAPSHOTS or ~/deepvis-snapshots/<time>."""
        root = Path(os.environ.get("DEEPVIS_SNAPSHOTS") or Path.home() / "deepvis-snapshots")
        self._save_reporting(root / time.strftime("%Y%m%d-%H%M%S"))

    def save_dialog(self) -> None:
        directory = QFileDialog.getExistingDirectory(self.ctx.top_widget, "Save snapshot into folder")
        if directory:
            self._save_reporting(Path(directory))

    def _save_reporting(self, directory: Path) -> None:
        try:
            paths = self.save(directory)
        except (OSError, DeepVisError) as err:
            self.ctx.notify(f"snapshot failed: {err}", "error")
            return
        self.ctx.notify(f"snapshot saved: {len(paths)} files in {directory}", "info", 5)

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&File", self.action("Save snapshot", self.save_now, shortcut=QKeySequence("Ctrl+S"))),
                MenuItem("&File", self.action("Save snapshot to...", self.save_dialog,
                                              shortcut=QKeySequence("Ctrl+Shift+S")))]
