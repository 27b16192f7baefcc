"""The DeepVis main window: wires the Qt-free pipeline (capture -> worker -> FrameResult) to the panes.

Threading contract: the GUI thread never runs the model and never waits on it. The worker publishes each
FrameResult through `WorkerBridge.result` (queued to the GUI thread); the window keeps only the newest one
and paints from a display-rate QTimer, so surplus results coalesce. Results made for an older request than
the current one are dropped. UI-driven request changes are coalesced by a short single-shot timer.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QProgressBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import DeepVisError
from ..pipeline import Capture, FrameResult, InferenceWorker, LatestSlot, Unit, ViewRequest
from ..sources import FrameSource, open_source
from ..zoo import VisModel, available_models, load_model
from .bridge import WorkerBridge
from .grid_pane import GAMMAS, GridPane
from .images import make_lut, overlay
from .input_pane import InputPane
from .inspector_pane import BACKPROP_MODES, BACKPROP_VIEWS, MAP_VIEWS, InspectorPane, methods_for
from .keys import HelpOverlay
from .layers_pane import LayersPane
from .predictions_pane import PredictionsPane
from .sources_gui import FreezableSource, camera_indices
from .topk_panel import ImageViewer, TileInfo

PAINT_MS = 16  # display timer (~60 Hz); paints only when a new result arrived
REQUEST_COALESCE_MS = 25  # UI-driven request changes are sent at most this often
PLOT_EVERY_S = 0.1

STYLE = """
QMainWindow, QWidget { background: #14161c; color: #e6e6e6; }
QDockWidget::title { background: #232631; padding: 4px; font-weight: bold; }
QTreeWidget { background: #0e0f13; alternate-background-color: #15171d; border: none; }
QTreeWidget::item:selected { background: #3a3f1a; color: #ffd60a; }
QHeaderView::section { background: #232631; color: #c8c8c8; border: none; padding: 2px 4px; }
QComboBox, QPushButton, QToolButton { background: #232631; border: 1px solid #343846; padding: 2px 6px; }
QComboBox:hover, QPushButton:hover { border-color: #5a6070; }
QLabel#paneTitle { color: #a9b0c0; font-size: 11px; }
QLabel#inspectorHeader { font-size: 13px; padding: 2px; }
QStatusBar { background: #1b1d25; color: #c8c8c8; }
QStatusBar QLabel { padding: 0 6px; }
QMenuBar { background: #1b1d25; } QMenuBar::item:selected { background: #343846; }
QMenu { background: #1b1d25; border: 1px solid #343846; } QMenu::item:selected { background: #343846; }
QFrame#banner[level="error"] { background: #5c1f24; border-bottom: 1px solid #b3434d; }
QFrame#banner[level="info"] { background: #1f3a5c; border-bottom: 1px solid #4a78b3; }
QFrame#banner QLabel, QFrame#banner QToolButton { background: transparent; border: none; font-weight: bold; }
"""


class Banner(QFrame):
    """A non-modal message strip above the grid (errors stay until closed; notices fade after a while)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        self.label = QLabel("")
        self.label.setWordWrap(True)
        close = QToolButton()
        close.setText("x")
        close.setAutoRaise(True)
        close.clicked.connect(self.hide)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        lay.addWidget(self.label, 1)
        lay.addWidget(close)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self.hide()

    def show_message(self, text: str, level: str = "info", seconds: float | None = None) -> None:
        self.label.setText(text)
        self.setProperty("level", level)
        self.style().unpolish(self)
        self.style().polish(self)
        self.show()
        secs = seconds if seconds is not None else (30.0 if level == "error" else 10.0)
        self._timer.start(int(secs * 1000))

    @property
    def text(self) -> str:
        return self.label.text() if self.isVisible() else ""


class MainWindow(QMainWindow):
    def __init__(self, model: VisModel, source: FrameSource, request: ViewRequest, *, fps: float | None = None,
                 mirror: bool = False, device: str = "auto", store: str | None = None,
                 settings: QSettings | None = None, notices: list[str] | None = None,
                 worker_threads: int | None = None) -> None:
        super().__init__()
        self.setWindowTitle("DeepVis")
        self.setStyleSheet(STYLE)
        self.setAcceptDrops(True)
        self.setDockNestingEnabled(True)
        self.vm = model
        self.device_arg = device
        self.fps = fps
        self.mirror = mirror
        self.settings = settings if settings is not None else QSettings("DeepVis", "deepvis")
        wanted = tuple(request.attribution)  # e.g. `deepvis run --attribution deconv`
        self.backprop_mode = wanted[0] if len(wanted) == 1 else ("all" if len(wanted) > 1 else "guided")
        self.backprop_view = request.attribution_view if request.attribution_view in BACKPROP_VIEWS else "norm"
        self.attr_available = _attribution_available()
        self.unit_frozen = False
        self.map_view = "ERF" if request.erf else "activation"  # the activation-map canvas: see MAP_VIEWS
        self.live_topk_on = bool(request.live_topk)
        self.camera_frozen = False
        self._attr_blocked: Unit | None = None  # backprop failed for this unit: run it without
        self.store = None
        self.store_message = "Top-activating images: not available yet"
        self._topk_key: tuple | None = None
        self._topk_entries: list = []  # the store entries behind the shown tiles (rank order)
        self._live_shown: tuple | None = None  # the live tiles on screen (the worker reuses unchanged tuples)
        self._live_epoch_shown = -1
        self.viewer: ImageViewer | None = None  # the non-modal whole-image view of a clicked tile
        self._viewer_key: tuple | None = None
        self._opt_abort = None
        self._opt_key: tuple | None = None  # what the inspector's optimized canvas is being filled with
        self._opt_anchor: tuple | None = None  # (model, unit) selected when it started: leaving it cancels
        self.opt_log: list[tuple[str, int, int]] = []  # (what, step, steps) shown in the canvas (tests)
        # GUI optimizations (inspector, class, optimize layer): small enough for a CPU next to the live loop
        self.optimize_steps = _env_int("DEEPVIS_OPTIMIZE_STEPS", 64)
        self.optimize_size = _env_int("DEEPVIS_OPTIMIZE_SIZE", 96)
        self.pattern_on = False
        self._pattern_key: tuple | None = None  # (model, layer) whose images `_pattern_images` holds
        self._pattern_images: list[np.ndarray | None] = []
        self.pattern_folder: tuple[str, Path] | None = None  # (layer, folder of unit_NNNN.png) from File menu
        self._layer_abort: threading.Event | None = None
        self._layer_job: tuple | None = None  # (model, layer) being optimized unit by unit
        self._latest: FrameResult | None = None
        self._painted: FrameResult | None = None
        self._repaint = False  # paint the newest result again (a display-only option changed)
        self._last_plot = 0.0
        self._closing = False
        self.last_error = ""
        self.messages: list[str] = []  # every message shown (tests and snapshots read it)
        self.click_latencies: list[float] = []  # seconds from a request change to its first displayed result
        self._t_request: float | None = None
        self._last_flush = 0.0
        self._await_request: int | None = None
        self.stats = {"capture_fps": 0.0, "inference_fps": 0.0, "attribution_fps": 0.0, "display_fps": 0.0}
        self._counts = {"frames": 0, "results": 0, "attr": 0, "paints": 0, "t": time.perf_counter()}
        self._frames_before = 0  # frames read by captures that were replaced
        self.paint_count = 0
        self.paint_ms: list[float] = []  # GUI-thread time per painted result (the last 100)

        self.bridge = WorkerBridge(self)
        q = Qt.ConnectionType.QueuedConnection
        self.bridge.result.connect(self._on_result, q)
        self.bridge.status.connect(self._on_source_status, q)
        self.bridge.error.connect(self._on_worker_error, q)

        self._build_ui()
        self._build_menus()
        self.help = HelpOverlay(self)
        self.layers_pane.set_model(model)
        self._open_store(store)

        # initial request: modes from the window, methods from the backprop mode
        req = request if request.layer else request.with_changes(layer=model.default_layer)
        self.request = replace(req, attribution=(), paused=False, attribution_view=self.backprop_view)
        self.request = self._with_methods(self.request)
        self._sync_controls()

        self.slot = LatestSlot()
        self.worker = InferenceWorker(model, self.slot, self.bridge.publish, request=self.request,
                                      on_error=self.bridge.on_error, threads=worker_threads)
        self.capture: Capture | None = None
        self.source: FreezableSource | None = None
        self.worker.start()
        self.set_source(source)

        self._paint_timer = QTimer(self)
        self._paint_timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._paint_timer.timeout.connect(self._paint)
        self._paint_timer.start(PAINT_MS)
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.timeout.connect(self._flush_request)
        self._stats_timer = QTimer(self)
        self._stats_timer.timeout.connect(self._update_stats)
        self._stats_timer.start(1000)
        self._restore_layout()
        self._update_status_labels()
        for note in notices or []:
            self.notify(note, "info")
        from ..sources import DemoSource

        if isinstance(source, DemoSource) and not notices:
            self.status.showMessage("source: demo", 5000)

    # ------------------------------------------------------------------ UI construction
    def _build_ui(self) -> None:
        self.grid_pane = GridPane()
        self.banner = Banner()
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.banner)
        lay.addWidget(self.grid_pane, 1)
        self.setCentralWidget(central)

        self.input_pane = InputPane()
        self.layers_pane = LayersPane()
        self.inspector = InspectorPane()
        self.predictions = PredictionsPane()
        self.docks: dict[str, QDockWidget] = {}
        for key, title, widget, area in (
                ("input", "Input", self.input_pane, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("layers", "Layers", self.layers_pane, Qt.DockWidgetArea.LeftDockWidgetArea),
                ("inspector", "Unit inspector", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea),
                ("predictions", "Predictions", self.predictions, Qt.DockWidgetArea.RightDockWidgetArea)):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock_{key}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[key] = dock
        self.resizeDocks([self.docks["input"], self.docks["layers"]], [300, 400], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["inspector"], self.docks["predictions"]], [580, 240], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks["input"], self.docks["inspector"]], [290, 600], Qt.Orientation.Horizontal)

        self.grid_pane.unit_clicked.connect(self._on_tile_clicked)
        self.grid_pane.norm_changed.connect(lambda n: self.set_boost(n, self.request.gamma))
        self.grid_pane.gamma_changed.connect(lambda g: self.set_boost(self.request.norm, g))
        self.layers_pane.layer_chosen.connect(self.set_layer)
        self.inspector.backprop_mode_changed.connect(self.set_backprop_mode)
        self.inspector.view_changed.connect(self.set_backprop_view)
        self.inspector.freeze_unit_toggled.connect(self.set_unit_frozen)
        self.inspector.map_view_changed.connect(self.set_map_view)
        topk = self.inspector.topk
        topk.kind_changed.connect(lambda _k: self._update_topk(force=True))
        topk.live_toggled.connect(self.set_live_topk)
        topk.clear_clicked.connect(self.clear_live_topk)
        topk.save_clicked.connect(self.save_live_topk_dialog)
        topk.tile_clicked.connect(self.open_topk_tile)
        self.inspector.optimize_clicked.connect(self.start_optimize)
        self.grid_pane.pattern_toggled.connect(self.set_pattern_mode)
        self.grid_pane.optimize_layer_clicked.connect(self.toggle_optimize_layer)
        self.predictions.class_clicked.connect(lambda idx, _name: self.start_class_optimize(idx))

        self.status = self.statusBar()
        self.status_labels: dict[str, QLabel] = {}
        for key in ("model", "device", "source", "capture", "inference", "attribution", "latency"):
            label = QLabel("")
            self.status_labels[key] = label
            self.status.addPermanentWidget(label)
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumWidth(140)
        self.progress.setMaximumHeight(14)
        self.progress.hide()
        self.status.addPermanentWidget(self.progress)
        self.resize(1500, 920)
        screen = self.screen().availableGeometry() if self.screen() is not None else None
        if screen is not None and screen.width() > 200:  # fit small screens (a saved geometry wins later)
            self.resize(min(1500, int(screen.width() * 0.96)), min(920, int(screen.height() * 0.94)))

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self._action(file_menu, "Open image...", lambda: self._open_dialog("image"), QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open video...", lambda: self._open_dialog("video"))
        self._action(file_menu, "Open folder...", lambda: self._open_dialog("folder"))
        file_menu.addSeparator()
        self._action(file_menu, "Open top-k store...", self._open_store_dialog)
        self._action(file_menu, "Open pattern folder...", self._open_pattern_folder_dialog)
        self.save_live_action = self._action(file_menu, "Save live top-k as store...", self.save_live_topk_dialog)
        file_menu.addSeparator()
        self._action(file_menu, "Save snapshot", self.save_snapshot_now, QKeySequence("Ctrl+S"))
        self._action(file_menu, "Save snapshot to...", self.save_snapshot_dialog, QKeySequence("Ctrl+Shift+S"))
        file_menu.addSeparator()
        self._action(file_menu, "Quit", self.close, QKeySequence("Ctrl+Q"))
        self.source_menu = source_menu = bar.addMenu("&Source")
        self.camera_actions: list[QAction] = []
        self._camera_sep = source_menu.addSeparator()
        source_menu.aboutToShow.connect(self._refresh_cameras)  # cameras come and go: list them when opened
        self._refresh_cameras()
        self._action(source_menu, "Demo (photos)", lambda: self.open_source_text("demo"))
        source_menu.addSeparator()
        self.mirror_action = self._action(source_menu, "Mirror", self.toggle_mirror)
        self.mirror_action.setCheckable(True)
        self.mirror_action.setChecked(self.mirror)
        self.freeze_action = self._action(source_menu, "Freeze camera  (f)", self.toggle_camera_freeze)
        self.freeze_action.setCheckable(True)
        model_menu = bar.addMenu("&Model")
        for name in available_models():
            self._action(model_menu, name, lambda _=False, n=name: self.switch_model(n))
        model_menu.addSeparator()
        self._action(model_menu, "Open model spec (.toml)...", self._open_spec_dialog)
        view_menu = bar.addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        self.pattern_action = self._action(view_menu, "Pattern mode  (p)", lambda: self.set_pattern_mode(
            not self.pattern_on))
        self.pattern_action.setCheckable(True)
        self.optimize_layer_action = self._action(view_menu, "Optimize layer (fill the pattern cache)",
                                                  self.toggle_optimize_layer)
        view_menu.addSeparator()
        self._action(view_menu, "Reset layout", self.reset_layout)
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "Shortcuts  (h)", lambda: self.help.toggle())

    def _refresh_cameras(self) -> None:
        """Only cameras that exist (a disabled "no cameras found" entry when there are none)."""
        for action in self.camera_actions:
            self.source_menu.removeAction(action)
            action.deleteLater()
        self.camera_actions = []
        cams = camera_indices()
        for i in cams:
            action = QAction(f"Camera {i}", self)
            action.triggered.connect(lambda _=False, i=i: self.open_source_text(str(i)))
            self.camera_actions.append(action)
        if not cams:
            action = QAction("no cameras found", self)
            action.setEnabled(False)
            self.camera_actions.append(action)
        self.source_menu.insertActions(self._camera_sep, self.camera_actions)

    def _action(self, menu, text, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    # ------------------------------------------------------------------ layout persistence
    def _restore_layout(self) -> None:
        self._default_state = self.saveState()
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        cmap = self.settings.value("grid/colormap")
        if isinstance(cmap, str) and cmap:
            self.grid_pane.cmap_box.setCurrentText(cmap)

    def reset_layout(self) -> None:
        self.restoreState(self._default_state)
        for dock in self.docks.values():
            dock.show()

    # ------------------------------------------------------------------ request handling
    def _with_methods(self, req: ViewRequest) -> ViewRequest:
        if req.unit != self._attr_blocked:
            self._attr_blocked = None
        ok = self.attr_available and req.unit is not None and self._attr_blocked is None
        methods = methods_for(self.backprop_mode) if ok else ()
        return replace(req, attribution=methods, attribution_view=self.backprop_view,
                       live_topk=self.live_topk_on, erf=self.map_view == "ERF" and self.attr_available)

    def _change(self, **changes) -> None:
        """Replace the request (new id) and schedule sending it; repeated changes within the coalescing
        window are sent once."""
        req = self.request.with_changes(**changes)
        self.request = self._with_methods(req)
        self._t_request = time.perf_counter()
        self._await_request = self.request.request_id
        if not self._flush_timer.isActive():
            wait_ms = REQUEST_COALESCE_MS - (time.perf_counter() - self._last_flush) * 1000
            if wait_ms <= 0:
                self._flush_request()  # leading edge: a lone click goes out at once
            else:
                self._flush_timer.start(int(wait_ms) + 1)  # a burst (held arrow key) goes out once per window
        self._sync_controls()

    def _flush_request(self) -> None:
        self._last_flush = time.perf_counter()
        self.worker.set_request(self.request)

    def _sync_controls(self) -> None:
        req = self.request
        self.layers_pane.set_current(self.layer)
        self.grid_pane.set_modes(req.norm, req.gamma)
        self.grid_pane.set_selected(req.unit.channel if req.unit is not None and req.unit.layer == self.layer
                                    else None)
        self.inspector.set_modes(self.backprop_mode, self.backprop_view, self.map_view)
        self.inspector.set_methods(req.attribution if req.unit is not None else methods_for(self.backprop_mode),
                                   available=self.attr_available)
        box = self.inspector.freeze_box
        box.blockSignals(True)
        box.setChecked(self.unit_frozen)
        box.blockSignals(False)
        self.inspector.topk.set_live(self.live_topk_on)
        self.save_live_action.setEnabled(self.live_topk_on)
        can_optimize = req.unit is not None and _optimize_available()
        self.inspector.optimize_button.setEnabled(can_optimize)
        current = (self.vm.name, str(req.unit))
        if self._opt_anchor != current:
            if self._opt_abort is not None:
                self._opt_abort.set()  # the user moved on: stop spending CPU on the old unit / class
                self._opt_abort = None
            self._opt_anchor, self._opt_key = current, None
            self.inspector.set_optimized_title()
            cached = self.cached_unit_image(req.unit.layer, req.unit.channel) if can_optimize else None
            if cached is not None:  # revisiting a unit: its cached image at once, no network run
                self.inspector.set_optimized(cached, "", "cached")
            else:
                self.inspector.set_optimized(None, self.inspector.optimized_hint if can_optimize
                                             else "Optimized image:\nnot available yet")
        self._update_topk()
        self._refresh_patterns()

    @property
    def layer(self) -> str:
        """The shown layer (a request made right after a model switch leaves it to the worker: "" means
        the model's default layer, valid whichever model the worker holds at that instant)."""
        return self.request.layer or self.vm.default_layer

    def channels(self, layer: str) -> int:
        shape = self.vm.info(layer).shape
        if not shape:
            return 1
        return shape[0] if len(shape) != 2 else shape[1]

    def select_channel(self, channel: int) -> None:
        layer = self.layer
        channel = max(0, min(self.channels(layer) - 1, channel))
        self._change(unit=Unit(layer, channel))

    def _on_tile_clicked(self, channel: int) -> None:
        if self.grid_pane.layer == self.layer:  # not a click on the previous layer's grid, still on screen
            self.select_channel(channel)

    def move_selection(self, dx: int, dy: int) -> None:
        lay = self.grid_pane.layout_
        req = self.request
        cols = lay.cols if lay is not None else 1
        current = req.unit.channel if (req.unit is not None and req.unit.layer == self.layer) else -1
        if current < 0:
            self.select_channel(0)
            return
        self.select_channel(current + dx + dy * cols)

    def set_layer(self, layer: str) -> None:
        if layer == self.layer:
            return
        unit = self.request.unit
        if unit is not None and not self.unit_frozen:
            unit = Unit(layer, min(unit.channel, self.channels(layer) - 1))
        self._change(layer=layer, unit=unit)

    def step_layer(self, step: int) -> None:
        self.set_layer(self.layers_pane.neighbour(self.layer, step))

    def set_boost(self, norm: str, gamma: float) -> None:
        if (norm, gamma) != (self.request.norm, self.request.gamma):
            self._change(norm=norm, gamma=gamma)

    def cycle_boost(self, step: int) -> None:
        if step == 1:  # t: whole layer <-> per channel
            self.set_boost("channel" if self.request.norm == "layer" else "layer", self.request.gamma)
        else:  # T: next gamma
            gammas = list(GAMMAS)
            g = self.request.gamma
            nxt = gammas[(gammas.index(g) + 1) % len(gammas)] if g in gammas else gammas[0]
            self.set_boost(self.request.norm, nxt)

    def set_backprop_mode(self, mode: str) -> None:
        if mode in BACKPROP_MODES and mode != self.backprop_mode:
            self.backprop_mode = mode
            self._attr_blocked = None
            for canvas in self.inspector.attr.values():
                canvas.set_image(None)
            self._change()

    def set_backprop_view(self, view: str) -> None:
        if view in BACKPROP_VIEWS and view != self.backprop_view:
            self.backprop_view = view
            self._change()

    def set_unit_frozen(self, frozen: bool) -> None:
        self.unit_frozen = bool(frozen)
        if not frozen and self.request.unit is not None and self.request.unit.layer != self.layer:
            layer = self.layer
            self._change(unit=Unit(layer, min(self.request.unit.channel, self.channels(layer) - 1)))
        else:
            self._sync_controls()
        self._repaint = True

    @property
    def overlay_on(self) -> bool:
        return self.map_view == "overlay"

    def set_map_view(self, view: str) -> None:
        """activation / overlay repaint the newest result; ERF asks the worker to accumulate gradients."""
        if view not in MAP_VIEWS or view == self.map_view:
            return
        erf_changed = (view == "ERF") != (self.map_view == "ERF")
        self.map_view = view
        if view == "ERF" and not self.attr_available:
            self.notify("ERF needs the attribution module (not available)", "error")
        if erf_changed:
            self._change()
        else:
            self._sync_controls()
        self._repaint = True

    def set_live_topk(self, on: bool) -> None:
        """Start / stop the live top-k of the selected unit's layer (the worker keeps what it collected)."""
        if bool(on) == self.live_topk_on:
            return
        self.live_topk_on = bool(on)
        self._live_shown = None
        self._topk_key = None
        self._change()

    def clear_live_topk(self) -> None:
        self._live_shown = None
        self._change(live_topk_epoch=self.request.live_topk_epoch + 1)
        self.inspector.topk.show_message("live top-k: no frames yet", "live top-k: cleared")

    def toggle_camera_freeze(self) -> None:
        self.camera_frozen = not self.camera_frozen
        if self.source is not None:
            self.source.frozen = self.camera_frozen
        self.freeze_action.setChecked(self.camera_frozen)
        self.status.showMessage("camera frozen (f to resume)" if self.camera_frozen else "camera live", 3000)
        self._repaint = True

    def toggle_mirror(self) -> None:
        self.mirror = not self.mirror
        if self.capture is not None:
            self.capture.mirror = self.mirror
        self.mirror_action.setChecked(self.mirror)

    def reset(self) -> None:
        """Esc: back to defaults (zoom, boosts, modes, freezes); the layer and unit stay."""
        self.help.hide()
        self.grid_pane.reset_zoom()
        self.backprop_mode = "guided"
        self.backprop_view = "norm"
        self.unit_frozen = False
        self.map_view = "activation"
        if self.camera_frozen:
            self.toggle_camera_freeze()
        unit = self.request.unit
        if unit is not None and unit.layer != self.layer:
            unit = Unit(self.layer, min(unit.channel, self.channels(self.layer) - 1))
        self._change(norm="layer", gamma=1.0, unit=unit)

    # ------------------------------------------------------------------ sources
    def set_source(self, source: FrameSource) -> None:
        """Make an already opened source the input; the old capture thread is told to stop (not waited on)."""
        wrapped = FreezableSource(source)
        wrapped.frozen = self.camera_frozen
        old = self.capture
        slot = LatestSlot()
        self.worker.set_slot(slot)  # the worker switches at its next take
        self.slot = slot
        if old is not None:
            self._frames_before += old.frames_read
            old.stop()
        self.source = wrapped
        self.capture = Capture(wrapped, slot, fps=self.fps, mirror=self.mirror, on_status=self.bridge.on_status)
        self.capture.start()
        self._update_status_labels()

    def open_source_text(self, text: str) -> None:
        """Open a source in the background (a camera can take a second); on failure the old one keeps going."""
        self.status.showMessage(f"opening {text}...")

        def done(source: object) -> None:
            self.set_source(source)  # type: ignore[arg-type]
            self.status.showMessage(f"source: {self.source.name}", 4000)

        self.bridge.run_job(lambda: open_source(text), done,
                            lambda msg: self.notify(f"cannot open source: {msg}", "error"), name="deepvis-open")

    def _open_dialog(self, kind: str) -> None:
        if kind == "folder":
            path = QFileDialog.getExistingDirectory(self, "Open image folder")
        else:
            pattern = ("Images (*.png *.jpg *.jpeg *.bmp *.webp *.tif *.tiff)" if kind == "image"
                       else "Videos (*.mp4 *.avi *.mov *.mkv *.webm *.m4v *.gif)")
            path, _ = QFileDialog.getOpenFileName(self, f"Open {kind}", "", f"{pattern};;All files (*)")
        if path:
            self.open_source_text(path)

    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            self.open_source_text(files[0])
            event.acceptProposedAction()

    # ------------------------------------------------------------------ models
    def switch_model(self, name: str, weights: str = "default") -> None:
        """Load in the background (progress in the status bar), then hand it to the worker; on failure the
        message is shown and the previous model keeps running."""
        self.progress.show()
        self.status.showMessage(f"loading model {name}...")
        device = self.device_arg

        def load() -> VisModel:
            torch.set_num_threads(1)  # loading needs no team of its own; the live worker keeps the cores
            vm = load_model(name, weights=weights, device=device)
            _ = vm.layer_info  # the probing forward runs here, not on the GUI thread
            return vm

        self.bridge.run_job(load, self._model_loaded, self._model_failed, name="deepvis-load-model")

    def _model_loaded(self, vm: object) -> None:
        assert isinstance(vm, VisModel)
        self.progress.hide()
        self.vm = vm
        self.layers_pane.set_model(vm)
        self.predictions.clear()
        self._open_store(None)
        self.unit_frozen = False
        req = self.request.with_changes(layer="", unit=None)
        self.request = self._with_methods(req)
        self.worker.set_model(vm, self.request)
        self._sync_controls()
        self._update_status_labels()
        self.notify(f"model: {vm.spec.title}", "info", seconds=4)

    def _model_failed(self, message: str) -> None:
        self.progress.hide()
        self.notify(f"model not loaded: {message} (still running {self.vm.name})", "error")

    def _open_spec_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open model spec", "", "Model specs (*.toml)")
        if path:
            weights, ok = QInputDialog.getText(self, "Weights", "weights (default / random / path):", text="default")
            self.switch_model(path, weights if ok and weights else "default")

    # ------------------------------------------------------------------ top-k store / optimization
    def _open_store(self, path: str | None) -> None:
        self.store = None
        self._topk_key = None
        if not path:
            self.store_message = ("Top-activating images:\nno store loaded\n(File > Open top-k store, "
                                  "or turn on live top-k)" if _topk_available()
                                  else "Top-activating images:\nnot available yet")
            return
        try:
            from ..topk.store import TopKStore

            self.store = TopKStore.open(path)
            self.store_message = f"no top-k data for this unit in {self.store_name}"
        except ImportError:
            self.store_message = "Top-activating images:\nnot available yet"
        except DeepVisError as err:
            self.store_message = "Top-activating images:\nstore not readable"
            self.notify(str(err), "error")

    @property
    def store_name(self) -> str:
        return Path(self.store.root).name if self.store is not None else ""

    def open_store(self, path: str) -> None:
        """Show the top-activating images of `path` (File > Open top-k store; a saved live top-k too)."""
        self._open_store(path)
        if self.store is not None:
            self.status.showMessage(f"top-k store: {self.store.root} ({', '.join(self.store.layers)})", 8000)
        self._sync_controls()

    def _open_store_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open top-k store")
        if path:
            self.open_store(path)

    def _update_topk(self, force: bool = False) -> None:
        """The store's tiles for the selected unit (live tiles are painted from the results instead)."""
        panel = self.inspector.topk
        unit = self.request.unit
        if self.live_topk_on:
            panel.set_kinds(("input",))
            key = ("live", str(unit), self.request.live_topk_epoch)
            if key != self._topk_key:
                self._topk_key, self._live_shown = key, None
                self._topk_entries = []
                panel.show_message("live top-k: no frames yet" if unit is not None else "select a unit",
                                   "live top-k: collecting...")
                self._repaint = True
            return
        panel.set_kinds(self.store.kinds if self.store is not None else ("input",))
        kind = panel.kind
        key = (id(self.store), str(unit), kind)
        if key == self._topk_key and not force:
            return
        self._topk_key = key
        self._topk_entries = []
        if self.store is None or unit is None:
            panel.show_message(self.store_message if unit is not None else "select a unit")
            return
        store = self.store
        name = self.store_name
        try:
            if unit.layer not in store.layers:
                panel.show_message(f"no top-k data for this unit in {name}\n(layer {unit.layer} not in the store)",
                                   f"store {name}: {', '.join(store.layers)}")
                return
            entries = store.entries(unit.layer, unit.channel)
            crops = [store.crop(unit.layer, unit.channel, e.rank, kind) for e in entries]
        except (DeepVisError, OSError) as err:
            panel.show_message(f"top-k store error: {err}")
            return
        if not entries:
            panel.show_message(self.store_message, f"store {name}")
            return
        self._topk_entries = entries
        infos = [TileInfo(e.rank, e.value, e.path or f"image {e.image_id}", len(entries)) for e in entries]
        panel.show_tiles(crops, infos, f"{unit}: top {len(entries)} of {store.top_k} from store {name}"
                         f"{'' if kind == 'input' else ' (' + kind + ')'}", missing=f"{kind}\nnot stored")

    def _paint_live_topk(self, res: FrameResult) -> None:
        panel = self.inspector.topk
        tiles = res.live_topk
        if tiles is None or res.unit is None:
            return
        summary = f"live top-k: {res.unit}, {len(tiles)} of {self.request.live_topk_k}, " \
                  f"{res.live_topk_frames} frames held"
        if tiles is self._live_shown:
            if panel.summary != summary:
                panel.set_summary(summary)
            return
        self._live_shown = tiles
        if not tiles:
            panel.show_message("live top-k: no frames yet", summary)
            return
        infos = [TileInfo(i, t.value, f"frame {t.frame_id}", len(tiles)) for i, t in enumerate(tiles)]
        panel.show_tiles([t.patch for t in tiles], infos, summary)

    def open_topk_tile(self, index: int) -> None:
        """Show a tile's whole image (as the network saw it) with its receptive-field box, in a non-modal
        window; a store image is read on a background job, so a slow disk never stalls the live view."""
        if self.viewer is None:
            self.viewer = ImageViewer(self)
        viewer = self.viewer
        tiles = self._live_shown if self.live_topk_on else None
        if tiles:
            if not 0 <= index < len(tiles):
                return
            t = tiles[index]
            unit = self._painted.unit if self._painted is not None else self.request.unit
            self._viewer_key = None
            viewer.show_image(t.frame, t.box, f"live top-k: {unit} rank {index + 1}",
                              f"<b>{unit}</b> rank {index + 1} &nbsp;value {t.value:.4g} &nbsp;frame {t.frame_id}"
                              f" &nbsp;at ({t.y}, {t.x}) &nbsp;box {t.box}")
            return
        if self.store is None or not 0 <= index < len(self._topk_entries):
            return
        entry = self._topk_entries[index]
        store = self.store
        key = (id(store), entry.layer, entry.unit, entry.rank)
        self._viewer_key = key
        title = f"{self.store_name}: {entry.layer}:{entry.unit} rank {entry.rank + 1}"
        details = (f"<b>{entry.layer}:{entry.unit}</b> rank {entry.rank + 1} &nbsp;value {entry.value:.4g}"
                   f" &nbsp;at ({entry.y}, {entry.x}) &nbsp;box {entry.box}<br>{entry.path}")
        viewer.show_image(None, None, title, details, missing="loading...")

        def shown(image: object) -> None:
            if self._viewer_key == key:
                viewer.show_image(image, entry.box, title, details,  # type: ignore[arg-type]
                                  missing=f"image not found:\n{entry.path}")

        self.bridge.run_job(lambda: store.fitted(entry), shown,
                            lambda msg: viewer.show_image(None, None, title, details, missing=msg),
                            name="deepvis-topk-image")

    def save_live_topk_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save live top-k as store", "live-topk", "Top-k store (folder)")
        if path:
            self.save_live_topk(path)

    def save_live_topk(self, path: str) -> None:
        """Save a copy of the live top-k as a STORE on a background job (capture goes on meanwhile)."""
        snap = self.worker.live_topk_snapshot()
        if snap is None or snap.image_count == 0:
            self.notify("live top-k: nothing to save yet (turn on live top-k and let some frames in)", "error")
            return
        model = {"name": self.vm.name, "weights": str(getattr(self.vm, "weights", ""))}
        self.status.showMessage(f"saving live top-k to {path}...")

        def done(out: object) -> None:
            self.messages.append(f"live top-k saved: {out}")
            self.status.showMessage(f"live top-k saved: {out} (File > Open top-k store to browse it)", 15000)

        self.bridge.run_job(lambda: snap.save(path, model=model), done,
                            lambda msg: self.notify(f"live top-k not saved: {msg}", "error"),
                            name="deepvis-save-topk")

    def unit_objective(self, layer: str, channel: int):
        """The objective a unit's optimized image maximizes: its channel mean (spatial layers) or the unit
        (vectors), as `deepvis optimize-layer` does, so the GUI and the CLI share cache entries."""
        from ..optimize import objectives

        shape = self.vm.info(layer).shape
        return objectives.channel(layer, channel) if len(shape) == 3 else objectives.neuron(layer, channel)

    def _lookup_settings(self) -> list[dict]:
        """Settings whose cache entries count as a unit's optimized image: the GUI's own (steps/size, see
        DEEPVIS_OPTIMIZE_STEPS / _SIZE), then the preset's defaults (plain `deepvis optimize-layer`)."""
        return [{"steps": self.optimize_steps, "size": self.optimize_size}, {}]

    def cached_unit_image(self, layer: str, channel: int) -> np.ndarray | None:
        """A unit's optimized image from the cache (or the opened pattern folder); never runs the net."""
        if not _optimize_available():
            return None
        from ..optimize import cached_result

        try:
            obj = self.unit_objective(layer, channel)
            for settings in self._lookup_settings():
                img = cached_result(self.vm, obj, **settings)
                if img is not None:
                    return img
        except (DeepVisError, OSError, ValueError):
            return None
        if self.pattern_folder is not None and self.pattern_folder[0] == layer:
            from ..optimize.cache import read_png

            return read_png(self.pattern_folder[1] / f"unit_{channel:04d}.png")
        return None

    # -- pattern mode
    def set_pattern_mode(self, on: bool) -> None:
        """p: show the layer's cached optimized images as the grid (clicks still select units)."""
        on = bool(on)
        if on == self.pattern_on:
            return
        if on and not _optimize_available():
            self.notify("pattern mode needs the optimize module (not available)", "error")
            self.grid_pane.set_pattern_mode(False)
            return
        self.pattern_on = on
        self.pattern_action.setChecked(on)
        self._pattern_key = None
        self.grid_pane.set_pattern_mode(on)
        if on:
            self._refresh_patterns()
            self.status.showMessage(self.pattern_status(), 10000)
        else:
            self._repaint = True

    def pattern_status(self) -> str:
        n = sum(im is not None for im in self._pattern_images)
        total = len(self._pattern_images)
        layer = self._pattern_key[1] if self._pattern_key else self.layer
        text = f"pattern mode: {n} of {total} units cached"
        if n < total:
            model = "" if self.vm.name == "efficientnet_lite0" else f" --model {self.vm.name}"
            text += (f" \u2014 run `deepvis optimize-layer{model} --layer {layer} --out DIR` or press "
                     f"'optimize layer'")
        return text

    def _refresh_patterns(self, force: bool = False) -> None:
        """Look the current layer's images up (only when the layer or model changed, or `force`)."""
        if not self.pattern_on:
            return
        layer = self.layer
        key = (self.vm.name, layer)
        if key != self._pattern_key or force:
            self._pattern_key = key
            self._pattern_images = [self.cached_unit_image(layer, c) for c in range(self.channels(layer))]
        self._show_patterns()

    def _show_patterns(self) -> None:
        layer = self._pattern_key[1]
        labels = self.vm.categories if self._is_class_layer(layer) else None
        self.grid_pane.show_patterns(layer, self._pattern_images, labels, self.pattern_status())

    def _open_pattern_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open pattern folder (deepvis optimize-layer --out)")
        if path:
            self.open_pattern_folder(path)

    def open_pattern_folder(self, path: str | Path, layer: str | None = None) -> None:
        """Use a `deepvis optimize-layer --out DIR` folder (unit_NNNN.png) for `layer` (default: the current
        one) where the cache has no image, and turn pattern mode on."""
        folder = Path(path)
        if not any(folder.glob("unit_*.png")):
            self.notify(f"no unit_NNNN.png images in {folder} (made by deepvis optimize-layer --out)", "error")
            return
        self.pattern_folder = (layer or self.layer, folder)
        self._pattern_key = None
        if self.pattern_on:
            self._refresh_patterns()
        else:
            self.set_pattern_mode(True)

    # -- background optimization
    def _model_copy_loader(self):
        """A function that loads a private copy of the current model (no hooks shared with the live worker)."""
        spec = self.vm.spec.path or self.vm.name
        weights, device = self.vm.weights, self.device_arg
        return lambda: load_model(spec, weights=weights, device=device)

    def toggle_optimize_layer(self) -> None:
        """Start filling the cache for every unit of the current layer, or stop the running job."""
        if self._layer_abort is not None:
            self._layer_abort.set()
            self._layer_abort = None
            self._layer_job = None
            self.progress.hide()
            self.grid_pane.optimize_layer_button.setText("optimize layer")
            self.status.showMessage("optimize layer: stopped", 5000)
            return
        self.start_optimize_layer()

    def start_optimize_layer(self, layer: str | None = None) -> None:
        """Optimize the layer's units that have no cached image yet, one by one on a background job; each
        finished unit appears in pattern mode (and in the inspector when selected) at once."""
        if not _optimize_available():
            self.notify("optimize layer needs the optimize module (not available)", "error")
            return
        from ..optimize import Cancelled, optimize

        layer = layer or self.layer
        todo = [c for c in range(self.channels(layer)) if self.cached_unit_image(layer, c) is None]
        if not todo:
            self.status.showMessage(f"optimize layer: every unit of {layer} is cached already", 6000)
            return
        abort = threading.Event()
        self._layer_abort = abort
        job = (self.vm.name, layer)
        self._layer_job = job
        objectives = {c: self.unit_objective(layer, c) for c in todo}
        steps, size = self.optimize_steps, self.optimize_size
        load = self._model_copy_loader()
        bridge = self.bridge
        total = len(todo)
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.progress.show()
        self.grid_pane.optimize_layer_button.setText("stop optimizing")
        self.status.showMessage(f"optimizing {layer}: 0/{total} units (loading a model copy)...")

        def run() -> object:
            vm = load()
            done = 0
            for c in todo:
                if abort.is_set():
                    break
                try:
                    res = optimize(vm, objectives[c], steps=steps, size=size, abort=abort, yield_every=10**9)
                except Cancelled:
                    break
                done += 1
                bridge.job_done.emit(lambda v: self._layer_progress(job, *v), (c, res.image, done, total))
            return done

        def finished(done: object) -> None:
            if self._layer_job != job:
                return
            self._layer_abort = None
            self._layer_job = None
            self.progress.hide()
            self.grid_pane.optimize_layer_button.setText("optimize layer")
            self.messages.append(f"optimize layer {layer}: {done} units done")
            self.status.showMessage(f"optimize layer {layer}: {done} of {total} units done", 10000)

        def failed(msg: str) -> None:
            finished(0)
            self.notify(f"optimize layer failed: {msg}", "error")

        bridge.run_job(run, finished, failed, name="deepvis-optimize-layer")

    def _layer_progress(self, job: tuple, channel: int, image: np.ndarray, done: int, total: int) -> None:
        if self._layer_job == job:
            self.progress.setValue(done)
            self.status.showMessage(f"optimizing {job[1]}: {done}/{total} units (unit {channel} done)")
        if self._pattern_key == job and channel < len(self._pattern_images):
            self._pattern_images[channel] = image
            self._show_patterns()
        unit = self.request.unit
        if (unit is not None and (self.vm.name, unit.layer, unit.channel) == (job[0], job[1], channel)
                and self._opt_key is None):
            self.inspector.set_optimized(image, "", "cached")

    def start_optimize(self) -> None:
        """Synthesize the selected unit's preferred image (inspector button), previewing as it evolves."""
        unit = self.request.unit
        if unit is None or not _optimize_available():
            return
        self._run_optimize(self.unit_objective(unit.layer, unit.channel), str(unit), f"optimizing {unit}...")

    def start_class_optimize(self, index: int) -> None:
        """A class clicked in the predictions: its optimized image (class logit) evolves in the inspector's
        canvas, labelled with the class name; selecting another unit cancels it."""
        if not _optimize_available() or not 0 <= index < len(self.vm.categories):
            return
        from ..optimize import objectives

        name = self.vm.categories[index]
        self.inspector.set_optimized_title(f"optimized image: class {name}")
        self._run_optimize(objectives.class_logit(index), f"class:{index}", f"optimizing class {name}...",
                           label=name)

    def _run_optimize(self, objective, what: str, message: str, label: str = "") -> None:
        """Run `iter_optimize` on a private model copy in a background job, previewing every few steps in
        the inspector's canvas; a new run or a selection change aborts it (`_opt_abort`)."""
        from ..optimize import iter_optimize

        if self._opt_abort is not None:
            self._opt_abort.set()
        abort = threading.Event()
        self._opt_abort = abort
        self._opt_anchor = (self.vm.name, str(self.request.unit))
        key = self._opt_key = (self.vm.name, what)
        if not label:
            self.inspector.set_optimized_title()
        steps, size = self.optimize_steps, self.optimize_size
        load = self._model_copy_loader()
        self.inspector.set_optimized(None, message)
        bridge = self.bridge

        def run() -> object:
            vm = load()
            last = None
            for prog in iter_optimize(vm, objective, steps=steps, size=size, abort=abort,
                                      yield_every=max(1, steps // 12)):
                last = prog
                if prog.image is not None and not prog.done:
                    bridge.job_done.emit(lambda p, k=key: self._opt_progress(k, p, label=label), prog)
            return None if abort.is_set() else last

        def failed(msg: str) -> None:
            if self._opt_key == key:
                self.inspector.set_optimized(None, f"optimization failed: {msg}")

        bridge.run_job(run, lambda p: self._opt_progress(key, p, final=True, label=label), failed,
                       name="deepvis-optimize")

    def _opt_progress(self, key: tuple, prog: object, final: bool = False, label: str = "") -> None:
        if key != self._opt_key or prog is None:
            return
        image = getattr(prog, "image", None)
        step, steps = getattr(prog, "step", 0), getattr(prog, "steps", 0)
        caption = f"step {step}/{steps}" if not final else f"value {prog.value:.3g}"
        if final and getattr(getattr(prog, "result", None), "cached", False):
            caption += " (cached)"
        if label:
            caption = f"{label}  {caption}"
        self.opt_log.append((key[1], step, steps))
        self.inspector.set_optimized(image, "optimizing...", caption)
        if final:
            self._opt_abort = None
            if self.pattern_on and key[1] == str(self.request.unit):  # a unit run also fills its pattern tile
                unit = self.request.unit
                if self._pattern_key == (self.vm.name, unit.layer) and unit.channel < len(self._pattern_images):
                    self._pattern_images[unit.channel] = image
                    self._show_patterns()

    # ------------------------------------------------------------------ results and painting
    def _on_result(self, result: FrameResult) -> None:
        if result.request_id < self.request.request_id or result.model != self.vm.name or self._closing:
            return  # stale: made for a selection the user already left
        self._latest = result

    def _paint(self) -> None:
        res = self._latest
        if res is None or (res is self._painted and not self._repaint):
            return
        self._repaint = False
        self._painted = res
        self.paint_count += 1
        t0 = time.perf_counter()
        try:
            self._paint_result(res)
        finally:
            self.paint_ms.append((time.perf_counter() - t0) * 1000)
            del self.paint_ms[:-100]

    def _paint_result(self, res: FrameResult) -> None:
        if self._await_request is not None and res.request_id >= self._await_request:
            if self._t_request is not None:
                self.click_latencies.append(time.perf_counter() - self._t_request)
                del self.click_latencies[:-50]
            self._await_request = None
        vm = self.vm
        req = self.request
        self.input_pane.show_frame(res.image, res.frame_id, self._input_caption(),
                                   f"frame {res.frame_id}  {res.latency * 1000:.0f} ms")
        labels = vm.categories if self._is_class_layer(res.layer) else None
        self.grid_pane.show_grid(res.grid, res.layer, labels)
        if req.unit is None and res.grid.layout.channels > 0:
            self.select_channel(int(res.grid.channel_max.argmax()))  # start on the layer's strongest unit
        self._paint_inspector(res)
        self.predictions.add(res.predictions, res.t_done)
        now = time.perf_counter()
        if now - self._last_plot > PLOT_EVERY_S:
            self._last_plot = now
            self.predictions.refresh()
        t = res.timings
        detail = f"forward {t.get('forward', 0) * 1000:.0f}"
        if "attribution" in t:
            detail += f", backprop {t['attribution'] * 1000:.0f}"
        self.status_labels["latency"].setText(f"latency {res.latency * 1000:.0f} ms ({detail})")
        self.status_labels["latency"].setToolTip("\n".join(f"{k}: {v * 1000:.1f} ms" for k, v in t.items()))

    def _input_caption(self) -> str:
        s = self.stats
        parts = [f"{s['inference_fps']:.1f} fps"]
        if self.camera_frozen:
            parts.append("FROZEN")
        return "  ".join(parts)

    def _is_class_layer(self, layer: str) -> bool:
        shape = self.vm.info(layer).shape
        return len(shape) == 1 and shape[0] == len(self.vm.categories) and shape[0] > 0

    def _paint_inspector(self, res: FrameResult) -> None:
        unit = res.unit
        insp = self.inspector
        if unit is None:
            insp.set_header("no unit selected: click a tile")
            insp.unit_map.clear("select a unit")
            return
        name = ""
        if self._is_class_layer(unit.layer) and unit.channel < len(self.vm.categories):
            name = f" &nbsp;<span style='color:#5ac8fa'>{self.vm.categories[unit.channel]}</span>"
        value = f"{res.unit_value:.3g}" if res.unit_value is not None else "-"
        frozen = " &nbsp;<span style='color:#ff6961'>[frozen]</span>" if self.unit_frozen else ""
        insp.set_header(f"<b>{unit.layer}</b> &nbsp;unit <b style='color:#ffd60a'>{unit.channel}</b>{name}"
                        f" &nbsp;max {value}{frozen}")
        shape = self.vm.info(unit.layer).shape
        if self.map_view == "ERF":
            self._paint_erf(res, shape)
        elif res.unit_map is not None:
            signed = res.grid.signed and unit.layer == res.layer  # zero is mid-scale: use the diverging map
            lut = self.grid_pane._luts["CET-D1"] if signed else _inferno()
            img = overlay(res.image, res.unit_map, lut) if self.overlay_on else lut[res.unit_map]
            insp.unit_map.caption = "overlay" if self.overlay_on else ""
            insp.unit_map.marker = None
            if res.unit_position is not None and len(shape) == 3:
                y, x = res.unit_position  # the neuron the attributions explain, in layer cells
                insp.unit_map.marker = ((x + 0.5) / shape[2], (y + 0.5) / shape[1])
            insp.unit_map.set_image(img)
        else:
            insp.unit_map.clear(f"fully-connected unit: no spatial map\nvalue {value}")
        if self.live_topk_on:
            self._paint_live_topk(res)
        for method, canvas in insp.attr.items():
            img = res.attributions.get(method)
            if img is not None:
                canvas.caption = self.backprop_view
                canvas.set_image(img)

    def _paint_erf(self, res: FrameResult, shape: tuple) -> None:
        canvas = self.inspector.unit_map
        canvas.marker = None
        if len(shape) != 3:
            canvas.clear("ERF: needs a unit with a spatial map\n(this layer is fully connected)")
        elif not self.attr_available:
            canvas.clear("ERF: not available\n(needs the attribution module)")
        elif res.erf_map is None or res.erf_frames == 0:
            canvas.clear("ERF: accumulating gradients...")
        else:
            # sqrt: the gradient mass is concentrated near the centre; its faint tails are the point of an ERF
            canvas.caption = f"ERF (sqrt), {res.erf_frames} frame{'s' if res.erf_frames != 1 else ''}"
            canvas.set_image(_inferno()[_SQRT_LUT[res.erf_map]])

    # ------------------------------------------------------------------ messages and status
    def notify(self, message: str, level: str = "info", seconds: float | None = None) -> None:
        self.messages.append(message)
        if level == "error":
            self.last_error = message
        self.banner.show_message(message, level, seconds)
        self.status.showMessage(message, 10000)

    def _on_source_status(self, message: str) -> None:
        level = "info" if "reconnected" in message else "error"
        self.notify(message, level)

    def _on_worker_error(self, message: str) -> None:
        if self.request.attribution and not self._closing:
            # The worker publishes nothing while a frame fails; keep the live view going without backprop
            # for this unit (selecting another unit or backprop mode tries again).
            self._attr_blocked = self.request.unit
            self._change()
            message = f"{message} (backprop turned off for {self.request.unit})"
        self.notify(message, "error")

    def _update_stats(self) -> None:
        now = time.perf_counter()
        c = self._counts
        dt = max(1e-6, now - c["t"])
        frames = self._frames_before + (self.capture.frames_read if self.capture is not None else 0)
        results, attr = self.bridge.results_received, self.bridge.attributions_received
        self.stats = {"capture_fps": (frames - c["frames"]) / dt, "inference_fps": (results - c["results"]) / dt,
                      "attribution_fps": (attr - c["attr"]) / dt, "display_fps": (self.paint_count - c["paints"]) / dt}
        self._counts = {"frames": frames, "results": results, "attr": attr, "paints": self.paint_count, "t": now}
        self._update_status_labels()
        self.input_pane.set_caption(self._input_caption())

    def _update_status_labels(self) -> None:
        source = self.source.name if self.source is not None else "no source"
        self.setWindowTitle(f"DeepVis - {self.vm.spec.title} - {source}")
        s = self.stats
        labels = self.status_labels
        labels["model"].setText(f"model {self.vm.name}")
        labels["device"].setText(str(self.vm.device))
        labels["source"].setText(f"source {self.source.name}" if self.source is not None else "")
        labels["capture"].setText(f"capture {s['capture_fps']:.1f} fps")
        labels["inference"].setText(f"inference {s['inference_fps']:.1f} fps")
        labels["attribution"].setText(f"attribution {s['attribution_fps']:.1f} fps")

    # ------------------------------------------------------------------ state, snapshot
    def state_dict(self) -> dict:
        res = self._painted
        req = self.request
        return {
            "model": self.vm.name, "device": str(self.vm.device),
            "source": self.source.name if self.source is not None else None,
            "layer": self.layer, "unit": str(req.unit) if req.unit is not None else None,
            "unit_layer": req.unit.layer if req.unit is not None else None,
            "unit_channel": req.unit.channel if req.unit is not None else None,
            "norm": req.norm, "gamma": req.gamma, "backprop_mode": self.backprop_mode,
            "backprop_view": self.backprop_view, "attribution": list(req.attribution),
            "unit_frozen": self.unit_frozen, "camera_frozen": self.camera_frozen, "mirror": self.mirror,
            "overlay": self.overlay_on, "map_view": self.map_view, "pattern_mode": self.pattern_on,
            "patterns_cached": sum(im is not None for im in self._pattern_images) if self.pattern_on else None,
            "request_id": req.request_id,
            "live_topk": req.live_topk, "erf": req.erf,
            "live_topk_tiles": len(res.live_topk) if res is not None and res.live_topk is not None else None,
            "live_topk_frames": res.live_topk_frames if res is not None else 0,
            "erf_frames": res.erf_frames if res is not None else 0,
            "store": str(self.store.root) if self.store is not None else None,
            "topk_tiles": len(self.inspector.topk.tiles), "topk_message": self.inspector.topk.message_text,
            "frame_id": res.frame_id if res is not None else None,
            "shown_request_id": res.request_id if res is not None else None,
            "shown_unit": str(res.unit) if res is not None and res.unit is not None else None,
            "unit_value": res.unit_value if res is not None else None,
            "predictions": [{"index": i, "name": n, "prob": p} for i, n, p in (res.predictions if res else [])],
            "stats": dict(self.stats),
            "gui_paint_ms_mean": sum(self.paint_ms) / len(self.paint_ms) if self.paint_ms else None,
            "click_latency_ms": [round(x * 1000, 1) for x in self.click_latencies[-10:]],
            "latency_ms": res.latency * 1000 if res is not None else None,
            "timings_ms": {k: v * 1000 for k, v in res.timings.items()} if res is not None else {},
            "messages": self.messages[-10:],
        }

    def save_snapshot(self, directory: str | Path) -> list[Path]:
        from .snapshot import write_snapshot

        paths = write_snapshot(self, Path(directory))
        self.status.showMessage(f"snapshot: {len(paths)} files in {directory}", 6000)
        return paths

    def save_snapshot_now(self) -> None:
        """Ctrl+S: no dialog (live capture goes on), into $DEEPVIS_SNAPSHOTS or ~/deepvis-snapshots/<time>."""
        import os

        root = Path(os.environ.get("DEEPVIS_SNAPSHOTS") or Path.home() / "deepvis-snapshots")
        directory = root / time.strftime("%Y%m%d-%H%M%S")
        try:
            paths = self.save_snapshot(directory)
        except (OSError, DeepVisError) as err:
            self.notify(f"snapshot failed: {err}", "error")
            return
        self.notify(f"snapshot saved: {len(paths)} files in {directory}", "info", seconds=5)

    def save_snapshot_dialog(self) -> None:
        directory = QFileDialog.getExistingDirectory(self, "Save snapshot into folder")
        if directory:
            try:
                self.save_snapshot(directory)
            except (OSError, DeepVisError) as err:
                self.notify(f"snapshot failed: {err}", "error")

    # ------------------------------------------------------------------ keys
    def handle_key(self, event) -> bool:
        """The toolbox shortcuts (see keys.SHORTCUTS); returns True when the key was one of them."""
        key = event.key()
        mods = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if mods & (Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
                   | Qt.KeyboardModifier.MetaModifier):
            return False
        text = event.text()
        if self.help.isVisible() and key not in (Qt.Key.Key_H, Qt.Key.Key_Question):
            self.help.hide()
            return True
        arrows = {Qt.Key.Key_Left: (-1, 0), Qt.Key.Key_Right: (1, 0), Qt.Key.Key_Up: (0, -1),
                  Qt.Key.Key_Down: (0, 1)}
        if key in arrows:
            self.move_selection(*arrows[key])
        elif text == "u":
            self.step_layer(-1)
        elif text == "o":
            self.step_layer(1)
        elif text in ("f", "F"):
            self.toggle_camera_freeze()
        elif text in ("b", "B"):
            step = 1 if text == "b" else -1
            self.set_backprop_mode(BACKPROP_MODES[(BACKPROP_MODES.index(self.backprop_mode) + step)
                                                  % len(BACKPROP_MODES)])
        elif text in ("m", "M"):
            step = 1 if text == "m" else -1
            self.set_backprop_view(BACKPROP_VIEWS[(BACKPROP_VIEWS.index(self.backprop_view) + step)
                                                  % len(BACKPROP_VIEWS)])
        elif text == "t":
            self.cycle_boost(1)
        elif text == "T":
            self.cycle_boost(-1)
        elif text in ("p", "P"):
            self.set_pattern_mode(not self.pattern_on)
        elif text in ("z", "Z"):
            unit = self.request.unit
            self.grid_pane.toggle_zoom(unit.channel if unit is not None and unit.layer == self.layer
                                       else None)
        elif text in ("x", "X"):
            self.set_unit_frozen(not self.unit_frozen)
        elif text in ("h", "H", "?"):
            self.help.toggle()
        elif key == Qt.Key.Key_Escape:
            self.reset()
        elif text in ("q", "Q"):
            self.close()
        else:
            return False
        return True

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self.help.isVisible():
            self.help.setGeometry(self.rect())

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop the threads (idempotent); called from closeEvent and by tests."""
        if self._closing:
            return
        self._closing = True
        for timer in (self._paint_timer, self._flush_timer, self._stats_timer):
            timer.stop()
        if self._opt_abort is not None:
            self._opt_abort.set()
        if self._layer_abort is not None:
            self._layer_abort.set()
        if self.capture is not None:
            self.capture.stop()
        self.worker.stop()
        self.worker.join(5)
        if self.capture is not None:
            self.capture.join(2)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("grid/colormap", self.grid_pane.cmap)
        self.settings.sync()
        self.shutdown()
        super().closeEvent(event)


class KeyFilter(QObject):
    """Application-wide filter so the shortcuts work whichever pane has focus (the layer list would
    otherwise eat the arrows); keys aimed at other windows (file dialogs) pass through."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window

    def eventFilter(self, obj, event) -> bool:  # noqa: N802
        if event.type() != QEvent.Type.KeyPress or not isinstance(obj, QWidget):
            return False
        if obj.window() is not self.window:
            return False
        from PySide6.QtWidgets import QComboBox

        if isinstance(obj, QComboBox) and obj.view().isVisible():
            return False
        return self.window.handle_key(event)


_INFERNO = None
_SQRT_LUT = np.round(np.sqrt(np.arange(256) / 255.0) * 255).astype(np.uint8)


def _inferno():
    global _INFERNO
    if _INFERNO is None:
        _INFERNO = make_lut("inferno", border=False)
    return _INFERNO


def _env_int(name: str, default: int) -> int:
    """A positive integer from the environment (e.g. DEEPVIS_OPTIMIZE_STEPS=4 in tests), else `default`."""
    try:
        value = int(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if value > 0 else default


def _attribution_available() -> bool:
    """The pipeline explains units with deepvis_app.attribution; without it the inspector says so."""
    try:
        from ..attribution import AttributionContext, render_view  # noqa: F401
    except ImportError:
        return False
    return True


def _topk_available() -> bool:
    try:
        from ..topk import store  # noqa: F401
    except ImportError:
        return False
    return True


def _optimize_available() -> bool:
    try:
        from ..optimize import iter_optimize, objectives  # noqa: F401
    except ImportError:
        return False
    return True
