"""Heat map: a class's CAM drawn live over the Input pane (the top class of each frame, or a class clicked in
Predictions), with a trust meter that says whether the map is about what the network uses, and the slow methods
(Integrated Gradients, Score-CAM, LRP, SmoothGrad) run on one frame in the background.

The live map comes with each frame (`FrameResult.overlay`, computed by the worker from the frame's own forward):
this feature only chooses it (`state.overlay`, `state.overlay_class`) and describes it; the Input pane draws it.
The trust meter (`gui.trust`) measures the map on screen: deletion / insertion AUC against a random map of the
same cells, as a background job on a private model copy (the newest frame wins, at most once a second, only
while the panel is shown), and the map's stability over consecutive frames while the camera is still.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QComboBox, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ...errors import DeepVisError
from ...methods.cam import CAM_METHODS
from ...pipeline import FrameResult
from ...render import overlay_heat
from ...state import OVERLAYS, cycle
from ...values import LIVE_CAMS
from ..feature import TOOLS, Feature, Key, MenuItem, Panel
from ..trust import Stability, TrustFigures, headline, measure, verdict
from ..widgets.canvas import ImageCanvas
from ..widgets.frame_tag import FrameTag, same_picture
from ..widgets.images import SIGNED_COLORMAP, make_lut
from ..widgets.inspector_pane import titled
from ..widgets.panel import ToolPanel, assemble, control_row, small_progress
from ..widgets.trust_meter import TrustMeter

TRUST_SLOT, EXPLAIN_SLOT = "trust", "explain"
TRUST_PERIOD_S = 1.0  # the trust meter measures at most this often, and rests at least as long as it worked (on
#                        a CPU its forwards share the cores with the live worker: at most half of one job thread)
EXPLAIN_METHODS = {"ig": "Integrated Gradients", "scorecam": "Score-CAM", "lrp": "LRP (zennit)",
                   "smoothgrad:guided": "SmoothGrad of guided backprop"}
EXPLAIN_OPTIONS: dict[str, dict] = {"ig": {"steps": 32, "baseline": "black"}, "smoothgrad:guided": {"samples": 25}}
SIGNED_METHODS = ("ig", "lrp")  # relevance that adds up: drawn red (for) and blue (against)
LEVEL_COLORS = {"good": "#30d158", "mixed": "#ff9f0a", "bad": "#ff453a", "unsure": "#a9b0c0"}
_tokens = itertools.count(1)


def method_title(method: str) -> str:
    if method in CAM_METHODS:
        return CAM_METHODS[method].title
    return EXPLAIN_METHODS.get(method, method)


def pixel_map_image(rgb: np.ndarray, heat: np.ndarray, lut: np.ndarray, signed: bool) -> np.ndarray:
    """A pixel-level map (IG, LRP, SmoothGrad) over the frame dimmed to 40%: its speckle would vanish in a full-
    brightness photo. Colour from `lut` (signed: 128 is zero, red for, blue against), opacity |value|, scaled so
    the 99th percentile of |value| is 1 (Captum's 1% outliers)."""
    scale = float(np.percentile(np.abs(heat), 99)) or 1e-12
    v = np.clip(heat / scale, -1.0 if signed else 0.0, 1.0)
    index = np.round(128 + v * 127) if signed else np.round(v * 255)
    colored = lut[index.astype(np.uint8)].astype(np.float32)
    a = np.abs(v)[..., None]
    return np.clip(rgb.astype(np.float32) * 0.4 * (1 - a) + colored * a, 0, 255).round().astype(np.uint8)


def heat_image(rgb: np.ndarray, heat: np.ndarray, method: str, luts: dict[str, np.ndarray]) -> np.ndarray:
    """What the explained map looks like over its frame: a CAM as the live overlay (inferno, opacity growing with
    the value), a pixel-level map over the dimmed frame."""
    if method in CAM_METHODS:
        top = float(heat.max())
        return overlay_heat(rgb, np.clip(heat / top, 0, 1) if top > 0 else np.zeros_like(heat))
    signed = method in SIGNED_METHODS
    return pixel_map_image(rgb, heat, luts["signed" if signed else "heat"], signed)


@dataclass(frozen=True)
class Explained:
    """A slow method's map of one frame."""

    method: str
    cls: int
    res: FrameResult  # the frame it explains
    heat: np.ndarray  # float32 H x W (the method's 2-D heat, `MethodMap.heat`)
    image: np.ndarray  # uint8 H x W x 3: the map over the frame
    trust: TrustFigures
    extra: dict
    seconds: float


class _Relay(QObject):
    """Progress from a job's thread, queued to the GUI thread: (job token, done, total)."""

    progress = Signal(int, int, int)


class HeatMapFeature(Feature):
    name = "heatmap"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.trust: TrustFigures | None = None  # the newest trust figures shown
        self.trust_res: FrameResult | None = None  # the frame (and its map) they were measured on
        self.stability = Stability()
        self.explained: Explained | None = None
        self._trust_next = 0.0  # when the next trust job may start
        self._trust_of: tuple | None = None  # (frame, map key) of the last trust job
        self._explain_token = 0
        self._cam_layers: dict[str, str | None] = {}  # model name -> its default CAM layer (None: has none)
        self._luts = {"signed": make_lut(SIGNED_COLORMAP, border=False), "heat": make_lut("inferno", border=False)}
        self._relay = _Relay(self)
        self._relay.progress.connect(self._explain_progress, Qt.ConnectionType.QueuedConnection)
        self.panel = self._build()
        st = ctx.state
        st.events.overlay.connect(lambda *_: self._map_changed())
        st.events.overlay_class.connect(lambda *_: self._map_changed())
        ctx.events.class_chosen.connect(self.choose_class)
        ctx.live.painted.connect(self.paint)
        ctx.live.painted.connect(self.trust_tag.refresh)
        ctx.live.painted.connect(self.explain_tag.refresh)
        ctx.live.model_changed.connect(self._model_changed)
        self._sync()

    # -- widgets
    def _build(self) -> ToolPanel:
        w = ToolPanel()
        w.shown.connect(self._sync)
        self.method_box = QComboBox()
        self.method_box.addItem("off", "")
        for m in LIVE_CAMS:
            self.method_box.addItem(method_title(m), m)
        self.method_box.setToolTip("the CAM drawn over the Input pane, live (c / C cycle)")
        self.method_box.currentIndexChanged.connect(lambda _i: self.set_overlay(self.method_box.currentData()))
        self.class_label = QLabel("top class")
        self.class_label.setTextFormat(Qt.TextFormat.RichText)
        self.top_button = QPushButton("back to top class")
        self.top_button.setToolTip("explain each frame's top class again (click a class in Predictions to explain "
                                   "that one)")
        self.top_button.clicked.connect(lambda: setattr(self.ctx.state, "overlay_class", None))
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.info.setTextFormat(Qt.TextFormat.RichText)

        self.meter = TrustMeter()
        self.verdict_label = QLabel("")
        self.verdict_label.setWordWrap(True)
        self.verdict_label.setTextFormat(Qt.TextFormat.RichText)
        self.stability_label = QLabel("")
        self.stability_label.setWordWrap(True)
        self.stability_label.setToolTip("Spearman's rank correlation of the maps of consecutive frames, counted while "
                                        "the input barely changes: 1 = the same map, 0 = unrelated")
        self.trust_tag = FrameTag("measured on")
        trust_box = QWidget()
        tl = QVBoxLayout(trust_box)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.setSpacing(2)
        for widget in (self.info, self.meter, self.verdict_label, self.stability_label, self.trust_tag):
            tl.addWidget(widget)
        tl.addStretch(1)

        self.explain_box = QComboBox()
        for m, title in EXPLAIN_METHODS.items():
            self.explain_box.addItem(title, m)
        self.explain_box.setToolTip("a slower method, run once on the frame shown now (many passes of the network)")
        self.explain_button = QPushButton("explain this frame")
        self.explain_button.clicked.connect(lambda: self.explain_frame())
        self.cancel_button = QPushButton("cancel")
        self.cancel_button.clicked.connect(self.cancel_explain)
        self.cancel_button.setEnabled(False)
        self.progress = small_progress()
        self.explain_canvas = ImageCanvas("choose a method and press 'explain this frame'", smooth=True, min_size=80)
        self.explain_info = QLabel("")
        self.explain_info.setWordWrap(True)
        self.explain_info.setTextFormat(Qt.TextFormat.RichText)
        self.explain_tag = FrameTag("map of")
        explain_col = QWidget()
        el = QVBoxLayout(explain_col)
        el.setContentsMargins(0, 0, 0, 0)
        el.setSpacing(2)
        el.addLayout(control_row(self.explain_box, self.explain_button, self.cancel_button, self.progress))
        el.addWidget(titled("explained frame", self.explain_canvas), 1)
        el.addWidget(self.explain_info)
        el.addWidget(self.explain_tag)

        body = QGridLayout()
        body.addWidget(titled("trust meter: is this map about what the network uses?", trust_box), 0, 0)
        body.addWidget(explain_col, 0, 1)
        body.setColumnStretch(0, 3)
        body.setColumnStretch(1, 2)
        assemble(w, [control_row("heat map", self.method_box, "explains", self.class_label, self.top_button)],
                 body, [])
        return w

    # -- choices
    def cam_layer(self) -> str | None:
        """The layer the live CAM reads (the model's last layer with positions), None when it has none."""
        vm = self.ctx.vm
        if vm.name not in self._cam_layers:
            from ...evaluate.job import default_cam_layer

            try:
                self._cam_layers[vm.name] = default_cam_layer(vm)
            except DeepVisError:
                self._cam_layers[vm.name] = None
        return self._cam_layers[vm.name]

    def set_overlay(self, method: str | None) -> None:
        method = method or ""
        if method and self.cam_layer() is None:
            self.ctx.notify(f"{self.ctx.vm.name} has no layer with positions: no CAM to draw", "error")
            self._sync()
            return
        self.ctx.state.overlay = method

    def cycle_overlay(self, step: int) -> None:
        self.set_overlay(cycle(OVERLAYS, self.ctx.state.overlay, step))

    def choose_class(self, index: int) -> None:
        """A class clicked in Predictions: the heat map explains it from now on."""
        if 0 <= index < self.ctx.vm.num_classes:
            self.ctx.state.overlay_class = int(index)

    def open(self) -> None:
        """Tools > Heat map: show the panel; a heat map that was off starts with Grad-CAM."""
        self.show_panel("heatmap")
        if not self.ctx.state.overlay:
            self.set_overlay("gradcam")

    def _map_changed(self) -> None:
        """Another method or class: the trust figures and stability of the old map no longer apply."""
        self.trust, self.trust_res, self._trust_of = None, None, None
        self._trust_next = 0.0
        self.stability.reset()
        self.trust_tag.set_frame(None)
        self._sync()

    def _model_changed(self, _vm) -> None:
        self.ctx.jobs.cancel(TRUST_SLOT)
        self.ctx.jobs.cancel(EXPLAIN_SLOT)
        self._explain_done()
        st = self.ctx.state
        if st.overlay and self.cam_layer() is None:
            self.ctx.notify(f"{self.ctx.vm.name} has no layer with positions: heat map off", "info")
            st.update(overlay="", overlay_class=None)
        else:
            st.overlay_class = None  # class indices belong to the old model's head
        self._map_changed()

    # -- drawing
    def _class_text(self, cls: int) -> str:
        cats = self.ctx.vm.categories
        return f"{cls} {cats[cls]}" if 0 <= cls < len(cats) else str(cls)

    def _sync(self) -> None:
        st = self.ctx.state
        self.method_box.blockSignals(True)
        self.method_box.setCurrentIndex(max(0, self.method_box.findData(st.overlay)))
        self.method_box.blockSignals(False)
        clicked = st.overlay_class is not None
        self.class_label.setText(f"<b>{self._class_text(st.overlay_class)}</b> (clicked in Predictions)" if clicked
                                 else "each frame's top class (click a class in Predictions for another)")
        self.top_button.setVisible(clicked)
        if not st.overlay:
            self.info.setText("heat map off: choose a method (or press c) to draw a CAM of the top class, or of a "
                              "class clicked in Predictions, over the Input pane")
            self.meter.set_figures(None, "turn the heat map on to measure it")
            self.verdict_label.setText("")
            self.stability_label.setText("")
        elif self.trust is None:
            self.meter.set_figures(None, "measuring the map on a frame (in the background, about once a second "
                                         "while this panel is shown)...")
            self.verdict_label.setText("")

    def paint(self, res: FrameResult) -> None:
        ov = res.overlay
        if ov is None:
            self.stability.update(res.image, None, None)
            if self.ctx.state.overlay and self.panel.isVisible():
                self.info.setText(f"{method_title(self.ctx.state.overlay)}: waiting for the next frame...")
            return
        key = (ov.method, ov.layer, ov.cls)
        self.stability.update(res.image, ov.raw, key)
        if not self.panel.isVisible():
            return
        how = "clicked in Predictions" if self.ctx.state.overlay_class is not None else "top class of this frame"
        h, w = ov.raw.shape
        self.info.setText(f"<b>{method_title(ov.method)}</b> of <b>{ov.layer}</b> ({h}x{w} cells) for class "
                          f"<b>{self._class_text(ov.cls)}</b> ({how}), drawn over the Input pane")
        self.stability_label.setText(self.stability.text())
        self._maybe_measure(res)

    # -- the trust meter
    def _maybe_measure(self, res: FrameResult) -> None:
        """Start a trust job on this frame when the slot is idle, a second has passed, and it is not the picture
        and map measured last (a frozen camera is measured once)."""
        jobs = self.ctx.jobs
        now = time.perf_counter()
        if jobs.current(TRUST_SLOT) is not None or now < self._trust_next:
            return
        ov = res.overlay
        key = (ov.method, ov.layer, ov.cls)
        if self._trust_of is not None and self._trust_of[1] == key and same_picture(res.image, self._trust_of[0]):
            return
        self._trust_next, self._trust_of = now + TRUST_PERIOD_S, (res.image, key)
        load = self.ctx.live.model_copy_loader(TRUST_SLOT)
        image, raw = res.image, ov.raw

        def work(abort):
            import torch

            vm = load()
            x = vm.preprocess.to_tensor(image)
            figures = measure(vm.net, x, torch.from_numpy(raw)[None], ov.cls, abort=abort)
            return TrustFigures(res.frame_id, ov.method, ov.layer, ov.cls, *figures, cells=tuple(raw.shape))

        def failed(msg: str) -> None:
            self._rest(now)
            self.meter.set_figures(None, f"could not measure: {msg}")

        jobs.start(TRUST_SLOT, work, on_done=lambda f: self._show_trust(f, res, now), on_error=failed)

    def _rest(self, started: float) -> None:
        """After a trust job: rest as long as it worked (and a second from its start at least)."""
        now = time.perf_counter()
        self._trust_next = max(self._trust_next, now + (now - started))

    def _show_trust(self, f: TrustFigures, res: FrameResult, started: float) -> None:
        self._rest(started)
        st = self.ctx.state
        if f.method != st.overlay or (st.overlay_class is not None and f.cls != st.overlay_class):
            return  # measured for a map the user has left
        self.trust, self.trust_res = f, res
        level, sentence = verdict(f)
        self.meter.set_figures(f)
        note = " (measured on the network without your interventions)" if res.interventions else ""
        self.verdict_label.setText(f"{headline(f)}: <b style='color:{LEVEL_COLORS[level]}'>{sentence}</b>{note}")
        self.trust_tag.set_frame(res)
        self.trust_tag.refresh(self.ctx.live.shown)

    # -- explain this frame
    def explain_frame(self, method: str | None = None) -> None:
        """Run a slow method on the frame shown now, for the heat map's class (a clicked one, else its top)."""
        res = self.ctx.live.shown
        if res is None or not res.predictions:
            self.explain_info.setText("no frame yet")
            return
        method = method or self.explain_box.currentData()
        st = self.ctx.state
        cls = st.overlay_class if st.overlay_class is not None else int(res.predictions[0][0])
        layer = self.cam_layer()
        if method in CAM_METHODS and layer is None:
            self.explain_info.setText(f"{method_title(method)} needs a layer with positions; this model has none")
            return
        load = self.ctx.live.model_copy_loader(EXPLAIN_SLOT)
        token = self._explain_token = next(_tokens)
        relay, image, luts = self._relay, res.image, self._luts
        options = dict(EXPLAIN_OPTIONS.get(method, {}))

        def work(abort):
            import torch

            from ...methods.registry import explain
            from ...values import ClassTarget

            t0 = time.perf_counter()
            vm = load()
            x = vm.preprocess.to_tensor(image)
            m = explain(vm.net, x, method, ClassTarget(cls, "logit"), layer=layer, vm=vm, abort=abort,
                        progress=lambda done, total: relay.progress.emit(token, int(done), int(total)), **options)
            heat = m.heat.detach()[0].float()
            relay.progress.emit(token, 0, 0)  # the trust figures: no known total
            figures = measure(vm.net, x, heat[None], cls)
            raw = heat.cpu().numpy()
            shown = heat_image(image, raw, method, luts)
            trust = TrustFigures(res.frame_id, method, layer or "", cls, *figures, cells=tuple(raw.shape))
            extra = {k: v for k, v in m.extra.items() if not isinstance(v, torch.Tensor)}
            return Explained(method, cls, res, raw, shown, trust, extra, time.perf_counter() - t0)

        self.explain_info.setText(f"{method_title(method)} of class <b>{self._class_text(cls)}</b> on frame "
                                  f"{res.frame_id}: running...")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.setEnabled(True)
        self.ctx.jobs.start(EXPLAIN_SLOT, work, on_done=self._show_explained, on_error=self._explain_failed)

    def cancel_explain(self) -> None:
        if self.ctx.jobs.current(EXPLAIN_SLOT) is not None:
            self.ctx.jobs.cancel(EXPLAIN_SLOT)
            self.explain_info.setText("cancelled")
        self._explain_done()

    def _explain_progress(self, token: int, done: int, total: int) -> None:
        if token != self._explain_token or self.ctx.jobs.current(EXPLAIN_SLOT) is None:
            return
        self.progress.setRange(0, max(0, total))
        if total:
            self.progress.setValue(done)
        else:
            self.explain_info.setText(self.explain_info.text().replace("running...", "measuring its trust..."))

    def _explain_done(self) -> None:
        self.progress.hide()
        self.cancel_button.setEnabled(False)

    def _explain_failed(self, msg: str) -> None:
        self._explain_done()
        self.explain_info.setText(f"failed: {msg}")

    def _show_explained(self, e: Explained) -> None:
        self._explain_done()
        self.explained = e
        self.explain_canvas.set_image(e.image)
        self.explain_canvas.caption = f"{method_title(e.method)}: {self._class_text(e.cls)}"
        level, sentence = verdict(e.trust)
        gap = e.extra.get("completeness_gap")
        more = f"; completeness gap {gap[0]:.3g}" if gap else ""
        self.explain_info.setText(f"<b>{method_title(e.method)}</b> of class <b>{self._class_text(e.cls)}</b> in "
                                  f"{e.seconds:.1f} s{more}. {headline(e.trust)}: "
                                  f"<b style='color:{LEVEL_COLORS[level]}'>{sentence}</b>")
        self.explain_tag.set_frame(e.res)
        self.explain_tag.refresh(self.ctx.live.shown)

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return [Panel("heatmap", "Heat map", self.panel, area="right", visible=False, tab_with=TOOLS)]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Heat map (CAM, trust meter, explain a frame)", self.open))]

    def keys(self) -> list[Key]:
        return [Key(("c",), lambda: self.cycle_overlay(1), "c / C",
                    "heat map over the input: off, Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM, HiResCAM, Eigen-CAM"),
                Key(("C",), lambda: self.cycle_overlay(-1))]

    def reset(self) -> None:
        self.ctx.state.reset("overlay", "overlay_class")

    def snapshot_state(self) -> dict:
        out: dict = {"overlay": self.ctx.state.overlay, "overlay_class": self.ctx.state.overlay_class}
        f = self.trust
        if f is not None:
            out["trust"] = {"frame": f.frame_id, "method": f.method, "class": f.cls, "score": f.score,
                            "deletion_auc": f.deletion, "insertion_auc": f.insertion,
                            "deletion_auc_random": f.deletion_random, "insertion_auc_random": f.insertion_random,
                            "verdict": verdict(f)[1], "stability": self.stability.value}
        return out

    def snapshot_images(self) -> dict:
        e = self.explained
        return {f"explained_{e.method.replace(':', '_')}": e.image} if e is not None else {}

    def shutdown(self) -> None:
        self.ctx.jobs.cancel(TRUST_SLOT)
        self.ctx.jobs.cancel(EXPLAIN_SLOT)
