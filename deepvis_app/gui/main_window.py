"""The DeepVis main window: wires the Qt-free pipeline (capture -> worker -> FrameResult) to the panes.

Threading contract: the GUI thread never runs the model and never waits on it. The worker publishes each
FrameResult through `WorkerBridge.result` (queued to the GUI thread); the window keeps only the newest one
and paints from a display-rate QTimer, so surplus results coalesce. Results made for an older request than
the current one are dropped. UI-driven request changes are coalesced by a short single-shot timer.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from ..pipeline import Capture, FrameResult, InferenceWorker, LatestSlot, Unit, ViewRequest
from ..sources import FrameSource
from ..zoo import VisModel
from . import (
    keys,
    menus,
    model_control,
    optimize_jobs,
    painting,
    patterns,
    source_control,
    topk_control,
    view_controls,
)
from . import state as window_state
from .banner import Banner
from .bridge import WorkerBridge
from .grid_pane import GridPane
from .input_pane import InputPane
from .inspector_pane import BACKPROP_VIEWS, InspectorPane, methods_for
from .keys import HelpOverlay, KeyFilter
from .layers_pane import LayersPane
from .predictions_pane import PredictionsPane
from .sources_gui import FreezableSource, camera_indices
from .style import STYLE
from .topk_panel import ImageViewer

PAINT_MS = 16  # display timer (~60 Hz); paints only when a new result arrived
REQUEST_COALESCE_MS = 25  # UI-driven request changes are sent at most this often

__all__ = ["Banner", "KeyFilter", "MainWindow"]  # app.py and the tests import these from here


class MainWindow(QMainWindow):
    """The composition: builds the panes and docks, owns the request, the worker and the capture, and binds the
    behaviour kept in the helper modules (see the end of the class) as its methods."""

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
        self.unit_frozen = False
        self.map_view = "ERF" if request.erf else "activation"  # the activation-map canvas: see MAP_VIEWS
        self.live_topk_on = bool(request.live_topk)
        self.camera_frozen = False
        self._attr_blocked: Unit | None = None  # backprop failed for this unit: run it without
        self.store = None
        self.store_message = ""  # set by load_store below
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
        self.optimize_steps = optimize_jobs.env_int("DEEPVIS_OPTIMIZE_STEPS", 64)
        self.optimize_size = optimize_jobs.env_int("DEEPVIS_OPTIMIZE_SIZE", 96)
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
        ok = req.unit is not None and self._attr_blocked is None
        methods = methods_for(self.backprop_mode) if ok else ()
        return replace(req, attribution=methods, attribution_view=self.backprop_view,
                       live_topk=self.live_topk_on, erf=self.map_view == "ERF")

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
        self.inspector.set_methods(req.attribution if req.unit is not None else methods_for(self.backprop_mode))
        box = self.inspector.freeze_box
        box.blockSignals(True)
        box.setChecked(self.unit_frozen)
        box.blockSignals(False)
        self.inspector.topk.set_live(self.live_topk_on)
        self.save_live_action.setEnabled(self.live_topk_on)
        optimize_jobs.follow_selection(self)
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

    @property
    def overlay_on(self) -> bool:
        return self.map_view == "overlay"

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

    def _is_class_layer(self, layer: str) -> bool:
        shape = self.vm.info(layer).shape
        return len(shape) == 1 and shape[0] == len(self.vm.categories) and shape[0] > 0

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

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self.help.isVisible():
            self.help.setGeometry(self.rect())

    # ================================================================== behaviour kept in helper modules
    # (plain functions taking the window, bound here as methods: the public names stay on MainWindow)
    # -- selection and view modes (view_controls.py)
    select_channel = view_controls.select_channel
    _on_tile_clicked = view_controls.on_tile_clicked
    move_selection = view_controls.move_selection
    set_layer = view_controls.set_layer
    step_layer = view_controls.step_layer
    set_boost = view_controls.set_boost
    cycle_boost = view_controls.cycle_boost
    set_backprop_mode = view_controls.set_backprop_mode
    set_backprop_view = view_controls.set_backprop_view
    set_unit_frozen = view_controls.set_unit_frozen
    set_map_view = view_controls.set_map_view
    set_live_topk = view_controls.set_live_topk
    clear_live_topk = view_controls.clear_live_topk
    reset = view_controls.reset
    # -- menus (menus.py; the camera list stays here)
    _build_menus = menus.build_menus
    # -- sources (source_control.py)
    toggle_camera_freeze = source_control.toggle_camera_freeze
    toggle_mirror = source_control.toggle_mirror
    set_source = source_control.set_source
    open_source_text = source_control.open_source_text
    _open_dialog = source_control.open_dialog
    dragEnterEvent = source_control.drag_enter_event
    dropEvent = source_control.drop_event
    # -- models (model_control.py)
    switch_model = model_control.switch_model
    _model_loaded = model_control.model_loaded
    _model_failed = model_control.model_failed
    _open_spec_dialog = model_control.open_spec_dialog
    _model_copy_loader = model_control.model_copy_loader
    # -- top-k images (topk_control.py)
    _open_store = topk_control.load_store
    store_name = property(topk_control.store_name)
    open_store = topk_control.open_store
    _open_store_dialog = topk_control.open_store_dialog
    _update_topk = topk_control.update_topk
    _paint_live_topk = topk_control.paint_live_topk
    open_topk_tile = topk_control.open_topk_tile
    save_live_topk_dialog = topk_control.save_live_topk_dialog
    save_live_topk = topk_control.save_live_topk
    # -- optimized images and their background jobs (optimize_jobs.py)
    unit_objective = optimize_jobs.unit_objective
    _lookup_settings = optimize_jobs.lookup_settings
    cached_unit_image = optimize_jobs.cached_unit_image
    toggle_optimize_layer = optimize_jobs.toggle_optimize_layer
    start_optimize_layer = optimize_jobs.start_optimize_layer
    _layer_progress = optimize_jobs.layer_progress
    start_optimize = optimize_jobs.start_optimize
    start_class_optimize = optimize_jobs.start_class_optimize
    _run_optimize = optimize_jobs.run_optimize
    _opt_progress = optimize_jobs.opt_progress
    # -- pattern mode (patterns.py)
    set_pattern_mode = patterns.set_pattern_mode
    pattern_status = patterns.pattern_status
    _refresh_patterns = patterns.refresh_patterns
    _show_patterns = patterns.show_patterns
    _open_pattern_folder_dialog = patterns.open_pattern_folder_dialog
    open_pattern_folder = patterns.open_pattern_folder
    # -- painting (painting.py)
    _paint_result = painting.paint_result
    _paint_inspector = painting.paint_inspector
    _paint_erf = painting.paint_erf
    # -- stats, state dict, snapshots (state.py)
    _input_caption = window_state.input_caption
    _update_stats = window_state.update_stats
    _update_status_labels = window_state.update_status_labels
    state_dict = window_state.state_dict
    save_snapshot = window_state.save_snapshot
    save_snapshot_now = window_state.save_snapshot_now
    save_snapshot_dialog = window_state.save_snapshot_dialog
    # -- keys (keys.py)
    handle_key = keys.handle_key

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
