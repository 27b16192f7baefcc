"""Pattern mode: the grid shows the layer's cached optimized images (or an opened pattern folder)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QFileDialog

if TYPE_CHECKING:
    from .main_window import MainWindow


def set_pattern_mode(win: MainWindow, on: bool) -> None:
    """p: show the layer's cached optimized images as the grid (clicks still select units)."""
    on = bool(on)
    if on == win.pattern_on:
        return
    win.pattern_on = on
    win.pattern_action.setChecked(on)
    win._pattern_key = None
    win.grid_pane.set_pattern_mode(on)
    if on:
        win._refresh_patterns()
        win.status.showMessage(win.pattern_status(), 10000)
    else:
        win._repaint = True


def pattern_status(win: MainWindow) -> str:
    n = sum(im is not None for im in win._pattern_images)
    total = len(win._pattern_images)
    layer = win._pattern_key[1] if win._pattern_key else win.layer
    text = f"pattern mode: {n} of {total} units cached"
    if n < total:
        model = "" if win.vm.name == "efficientnet_lite0" else f" --model {win.vm.name}"
        text += (f" \u2014 run `deepvis optimize-layer{model} --layer {layer} --out DIR` or press "
                 f"'optimize layer'")
    return text


def refresh_patterns(win: MainWindow, force: bool = False) -> None:
    """Look the current layer's images up (only when the layer or model changed, or `force`)."""
    if not win.pattern_on:
        return
    layer = win.layer
    key = (win.vm.name, layer)
    if key != win._pattern_key or force:
        win._pattern_key = key
        win._pattern_images = [win.cached_unit_image(layer, c) for c in range(win.channels(layer))]
    win._show_patterns()


def show_patterns(win: MainWindow) -> None:
    layer = win._pattern_key[1]
    labels = win.vm.categories if win._is_class_layer(layer) else None
    win.grid_pane.show_patterns(layer, win._pattern_images, labels, win.pattern_status())


def open_pattern_folder_dialog(win: MainWindow) -> None:
    path = QFileDialog.getExistingDirectory(win, "Open pattern folder (deepvis optimize-layer --out)")
    if path:
        win.open_pattern_folder(path)


def open_pattern_folder(win: MainWindow, path: str | Path, layer: str | None = None) -> None:
    """Use a `deepvis optimize-layer --out DIR` folder (unit_NNNN.png) for `layer` (default: the current
    one) where the cache has no image, and turn pattern mode on."""
    folder = Path(path)
    if not any(folder.glob("unit_*.png")):
        win.notify(f"no unit_NNNN.png images in {folder} (made by deepvis optimize-layer --out)", "error")
        return
    win.pattern_folder = (layer or win.layer, folder)
    win._pattern_key = None
    if win.pattern_on:
        win._refresh_patterns()
    else:
        win.set_pattern_mode(True)
