"""Switching models: the Model menu (every curated model, trained or with random weights, the current one
checked) and specs from a file. Loading runs in the background; the live worker keeps the old model until the
new one is ready, and a model that fails to load leaves the old one running and says why."""

from __future__ import annotations

import torch
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMenu

from ...zoo import VisModel, available_models, load_model
from ..feature import Feature, MenuItem
from ..widgets.panel import small_progress

SLOT = "load-model"
MODEL_MENU = "&Model"


class ModelsFeature(Feature):
    name = "models"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.progress = small_progress(busy=True)
        self.group = QActionGroup(self)
        self.model_actions: dict[tuple[str, str], QAction] = {}
        ctx.live.model_changed.connect(lambda _vm: self._check_current())

    def switch_model(self, name: str, weights: str = "default") -> None:
        """Load in the background (progress in the status bar), then hand it to the worker."""
        ctx = self.ctx
        self.progress.show()
        ctx.notify(f"loading model {name}{' (random weights)' if weights == 'random' else ''}...", "info", 0)
        device = ctx.live.device_arg

        def load(_abort) -> VisModel:
            torch.set_num_threads(1)  # loading needs no team of its own; the live worker keeps the cores
            vm = load_model(name, weights=weights, device=device)
            _ = vm.layer_info  # the probing forward runs here, not on the GUI thread
            return vm

        ctx.jobs.start(SLOT, load, on_done=self._loaded, on_error=self._failed)

    def _loaded(self, vm: VisModel) -> None:
        self.progress.hide()
        self.ctx.live.set_model(vm)
        self.ctx.notify(f"model: {self.ctx.vm.title}", "info", 4)

    def _failed(self, message: str) -> None:
        self.progress.hide()
        hint = (" (or Model > Random weights, like --weights random, to study the architecture untrained)"
                if "weights" in message.lower() else "")
        self.ctx.notify(f"model not loaded: {message}{hint} (still running {self.ctx.vm.name})", "error")

    def open_spec_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(None, "Open model spec", "", "Model specs (*.toml)")
        if path:
            weights, ok = QInputDialog.getText(None, "Weights", "weights (default / random / path):",
                                               text="default")
            self.switch_model(path, weights if ok and weights else "default")

    def _check_current(self) -> None:
        vm = self.ctx.vm
        key = (vm.name, "random" if str(vm.weights) == "random" else "default")
        for k, action in self.model_actions.items():
            action.setChecked(k == key)

    def menu_items(self) -> list[MenuItem]:
        items: list[MenuItem] = []
        trained = QMenu("Trained (ImageNet weights)")
        random = QMenu("Random weights (same architecture, seeded)")
        for name in available_models():
            for weights, menu in (("default", trained), ("random", random)):
                act = self.action(name, lambda n=name, w=weights: self.switch_model(n, w), checkable=True)
                self.group.addAction(act)
                self.model_actions[(name, weights)] = act
                menu.addAction(act)
        self._menus = (trained, random)  # keep them alive
        items += [MenuItem(MODEL_MENU, trained), MenuItem(MODEL_MENU, random), MenuItem(MODEL_MENU, None),
                  MenuItem(MODEL_MENU, self.action("Open model spec (.toml)...", self.open_spec_dialog))]
        self._check_current()
        return items

    def status_widgets(self) -> list:
        return [self.progress]
