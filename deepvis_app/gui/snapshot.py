"""Snapshots: a PNG of the whole window, one per pane, the raw grid/input images, and the state as JSON.

Used by Ctrl+S and by `deepvis --snapshot DIR` (scripted demos, docs screenshots).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..errors import DeepVisError

if TYPE_CHECKING:
    from .main_window import MainWindow


def _save_rgb(path: Path, rgb) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise DeepVisError(f"cannot write {path}")


def write_snapshot(window: MainWindow, directory: Path) -> list[Path]:
    """Write window.png, pane_<name>.png (visible panes), input.png / grid.png (as the network saw them,
    grid coloured like on screen) and state.json into `directory` (created). Returns the files written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DeepVisError(f"cannot create snapshot folder {directory}: {err.strerror}") from None
    written: list[Path] = []

    def grab(widget, name: str) -> None:
        path = directory / f"{name}.png"
        if not widget.grab().save(str(path)):
            raise DeepVisError(f"cannot write {path}")
        written.append(path)

    grab(window, "window")
    grab(window.grid_pane, "pane_grid")
    for key, dock in window.docks.items():
        if dock.isVisible():
            grab(dock.widget(), f"pane_{key}")
    res = window._painted
    if res is not None:
        _save_rgb(directory / "input.png", res.image)
        written.append(directory / "input.png")
        lut = window.grid_pane.image.lut
        grid_rgb = lut[res.grid.image] if lut is not None and len(lut) == 256 else res.grid.image
        if grid_rgb.ndim == 2:
            cv2.imwrite(str(directory / "grid.png"), grid_rgb)
        else:
            _save_rgb(directory / "grid.png", grid_rgb[..., :3].copy())
        written.append(directory / "grid.png")
        for method, img in res.attributions.items():
            _save_rgb(directory / f"attribution_{method}.png", img)
            written.append(directory / f"attribution_{method}.png")
    if getattr(window.grid_pane, "_shown", "") == "pattern":
        patterns = window.grid_pane.grid_image()
        if patterns is not None and patterns.ndim == 3:
            _save_rgb(directory / "patterns.png", np.ascontiguousarray(patterns[..., :3]))
            written.append(directory / "patterns.png")
    state_path = directory / "state.json"
    state_path.write_text(json.dumps(window.state_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    written.append(state_path)
    return written
