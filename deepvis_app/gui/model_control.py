"""Switching models in the background (the live worker keeps the old one until the new one is ready)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from PySide6.QtWidgets import QFileDialog, QInputDialog

from ..zoo import VisModel, load_model

if TYPE_CHECKING:
    from .main_window import MainWindow


def switch_model(win: MainWindow, name: str, weights: str = "default") -> None:
    """Load in the background (progress in the status bar), then hand it to the worker; on failure the
    message is shown and the previous model keeps running."""
    win.progress.show()
    win.status.showMessage(f"loading model {name}...")
    device = win.device_arg

    def load() -> VisModel:
        torch.set_num_threads(1)  # loading needs no team of its own; the live worker keeps the cores
        vm = load_model(name, weights=weights, device=device)
        _ = vm.layer_info  # the probing forward runs here, not on the GUI thread
        return vm

    win.bridge.run_job(load, win._model_loaded, win._model_failed, name="deepvis-load-model")


def model_loaded(win: MainWindow, vm: object) -> None:
    assert isinstance(vm, VisModel)
    win.progress.hide()
    win.vm = vm
    win.layers_pane.set_model(vm)
    win.predictions.clear()
    win._open_store(None)
    win.unit_frozen = False
    req = win.request.with_changes(layer="", unit=None)
    win.request = win._with_methods(req)
    win.worker.set_model(vm, win.request)
    win._sync_controls()
    win._update_status_labels()
    win.notify(f"model: {vm.spec.title}", "info", seconds=4)


def model_failed(win: MainWindow, message: str) -> None:
    win.progress.hide()
    win.notify(f"model not loaded: {message} (still running {win.vm.name})", "error")


def open_spec_dialog(win: MainWindow) -> None:
    path, _ = QFileDialog.getOpenFileName(win, "Open model spec", "", "Model specs (*.toml)")
    if path:
        weights, ok = QInputDialog.getText(win, "Weights", "weights (default / random / path):", text="default")
        win.switch_model(path, weights if ok and weights else "default")


def model_copy_loader(win: MainWindow):
    """A function that loads a private copy of the current model (no hooks shared with the live worker)."""
    spec = win.vm.spec.path or win.vm.name
    weights, device = win.vm.weights, win.device_arg
    return lambda: load_model(spec, weights=weights, device=device)
