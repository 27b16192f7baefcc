"""Where the network looks, on the camera: occlusion maps (Zeiler & Fergus), class saliency (Simonyan et al.) and
the object cut out by GrabCut seeded from the saliency.

Occlusion slides a grey (or mean, or blurred) patch over the frame and plots how the target's score changes: red
where covering hurts, blue where it *helps* (the class gets more likely when that part is hidden). The target is
the top class, a chosen class (search box, or a class clicked in Predictions) or the selected unit. Maps are drawn
coarse-to-fine in the background and restart when the frame, model or target changes; freeze the camera (f) to
study one frame. Exact scores come from `deepvis_app.occlusion` (incremental inference, see docs/occlusion.md).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QLabel,
    QPushButton,
    QSpinBox,
)

from ...occlusion import FILLS, Target, iter_occlusion, patch_positions, target_label
from ...pipeline import FrameResult
from ...segment import DEFAULT_SMOOTH, segment
from ...values import ClassTarget, Unit
from ..feature import Feature, MenuItem, Panel
from ..rounds import FrameRound
from ..widgets.canvas import ImageCanvas
from ..widgets.class_picker import ClassPicker
from ..widgets.colorbar import ColorBar
from ..widgets.frame_tag import FrameTag, same_picture
from ..widgets.images import SIGNED_COLORMAP, make_lut
from ..widgets.inspector_pane import titled
from ..widgets.panel import ToolPanel, assemble, control_row

OCC_SLOT, SAL_SLOT = "occlusion", "saliency"
TARGETS = ("top class", "chosen class", "selected unit")


def diverging_overlay(rgb: np.ndarray, values: np.ndarray, lut: np.ndarray, scale: float) -> np.ndarray:
    """`values` (float HxW, signed) over the frame: red > 0, blue < 0, opacity growing with |value| / scale."""
    v = np.clip(values / max(scale, 1e-12), -1.0, 1.0)
    idx = np.round(128 + v * 127).astype(np.uint8)
    colored = lut[idx].astype(np.float32)
    a = (0.15 + 0.7 * np.abs(v))[..., None]
    return np.clip(rgb.astype(np.float32) * (1 - a) + colored * a, 0, 255).round().astype(np.uint8)


def heat_overlay(rgb: np.ndarray, values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """A non-negative map (normalized to its max) over the frame."""
    v = values / max(float(values.max()), 1e-12)
    idx = np.round(v * 255).astype(np.uint8)
    a = (0.1 + 0.75 * v)[..., None]
    return np.clip(rgb.astype(np.float32) * (1 - a) + lut[idx].astype(np.float32) * a, 0, 255).astype(np.uint8)


class WhereFeature(Feature):
    name = "where"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.map = None  # the newest OcclusionMap drawn
        self.segmentation = None  # the newest Segmentation drawn
        self.round = FrameRound()  # occlusion, saliency and cut-out of one frame (see `_start`)
        self._signed_lut = make_lut(SIGNED_COLORMAP, border=False)
        self._heat_lut = make_lut("inferno", border=False)
        self.panel = self._build()
        ctx.live.painted.connect(self._on_frame)
        ctx.live.painted.connect(self.tag.refresh)
        ctx.live.model_changed.connect(self._model_changed)
        ctx.events.class_chosen.connect(self._class_clicked)
        ctx.state.events.unit.connect(lambda *_: self._target_changed() if self.target_mode() == 2 else None)
        self._model_changed(ctx.vm)

    # -- widgets
    def _build(self) -> ToolPanel:
        w = ToolPanel()
        w.shown.connect(self.restart)
        self.target_box = QComboBox()
        self.target_box.addItems(TARGETS)
        self.target_box.setToolTip("score the top class of each frame, a class you choose, or the selected unit "
                                   "(its channel's mean activation)")
        self.target_box.currentIndexChanged.connect(lambda _i: self._target_changed())
        self.picker = ClassPicker(placeholder="class (type to search)")
        self.picker.chosen.connect(lambda _i: self._chose_class())
        self.window = QSpinBox()
        self.window.setRange(8, 112)
        self.window.setValue(32)
        self.window.setToolTip("patch size in input pixels")
        self.stride = QSpinBox()
        self.stride.setRange(2, 64)
        self.stride.setValue(16)
        self.stride.setToolTip("patch step; a coarse pass (twice this) is drawn first")
        self.fill = QComboBox()
        self.fill.addItems(FILLS)
        self.fill.setToolTip("what covers the patch: zero = mid-grey, mean = the frame's mean colour, "
                             "blur = the frame blurred under the patch")
        for box in (self.window, self.stride):
            box.valueChanged.connect(lambda _v: self._target_changed())
        self.fill.currentIndexChanged.connect(lambda _i: self._target_changed())
        self.live_box = QCheckBox("live")
        self.live_box.setChecked(True)
        self.live_box.setToolTip("recompute on new frames (freeze the camera with f to study one frame)")
        self.run_button = QPushButton("this frame")
        self.run_button.setToolTip("compute the maps once on the shown frame")
        self.run_button.clicked.connect(lambda: self.restart(force=True))
        self.smooth_box = QCheckBox("SmoothGrad")
        self.smooth_box.setToolTip(f"average the saliency over {DEFAULT_SMOOTH} noisy copies of the frame (the "
                                   "default: plain saliency is speckled and its seeds can fall on the background)")
        self.smooth_box.setChecked(True)
        self.smooth_box.toggled.connect(lambda _on: self._restart_saliency())

        self.occ = ImageCanvas("occlusion map", smooth=True)
        self.labels_canvas = ImageCanvas("predicted label per patch", smooth=False)
        self.sal = ImageCanvas("saliency", smooth=True)
        self.cut = ImageCanvas("GrabCut", smooth=True)
        self.occ_bar = ColorBar()
        self.occ_info, self.sal_info, self.legend = QLabel(""), QLabel(""), QLabel("")
        self.tag = self.round.tag = FrameTag("maps of")
        for label in (self.occ_info, self.sal_info, self.legend):
            label.setWordWrap(True)

        grid = QGridLayout()
        grid.addWidget(titled("red hurts \u00b7 blue helps", self.occ), 0, 0)
        grid.addWidget(titled("winning class", self.labels_canvas), 0, 1)
        grid.addWidget(titled("saliency", self.sal), 0, 2)
        grid.addWidget(titled("GrabCut cut-out", self.cut), 0, 3)
        for canvas, tip in ((self.occ, "the target's score with a patch over each spot, as a drop from the "
                             "unoccluded score: red = covering hurts, blue = covering helps"),
                            (self.labels_canvas, "which class wins with the patch at each position (yellow: the "
                             "unoccluded winner)"),
                            (self.sal, "class saliency: max over colours of |d score / d pixel| (Simonyan 2013)"),
                            (self.cut, "GrabCut seeded by the saliency's top (object) and bottom (background)")):
            canvas.setToolTip(tip)
        grid.addWidget(self.occ_bar, 1, 0)
        grid.addWidget(self.legend, 1, 1)
        grid.addWidget(self.smooth_box, 1, 2)
        for c in range(4):
            grid.setColumnStretch(c, 1)
        # two short rows rather than one long one: the dock stays narrow
        assemble(w, [control_row("target", self.target_box, self.picker, self.live_box, self.run_button),
                     control_row("patch", self.window, "stride", self.stride, "fill", self.fill)],
                 grid, [self.tag, self.occ_info, self.sal_info])
        return w

    # -- targets
    def target_mode(self) -> int:
        return self.target_box.currentIndex()

    def _model_changed(self, vm) -> None:
        self.picker.set_categories(list(vm.categories))
        self._target_changed()

    def _class_clicked(self, index: int) -> None:
        if self.panel.isVisible():
            self.picker.set_index(index)

    def _chose_class(self) -> None:
        if self.target_box.currentIndex() != 1:
            self.target_box.setCurrentIndex(1)  # restarts via the combo
        else:
            self._target_changed()

    def _target_changed(self) -> None:
        self.restart(force=True)  # a new round: the maps of one round come from one frame

    def _restart_saliency(self) -> None:
        """SmoothGrad on or off: the saliency again, of the round's frame (the occlusion stays)."""
        self.ctx.jobs.cancel(SAL_SLOT)
        res = self.round.res
        cls = self.saliency_class(res) if res is not None else None
        if cls is not None and self.panel.isVisible() and "saliency" in self.round.parts:
            self._run_saliency(res.image, cls, self.round.round)

    def occlusion_target(self, res: FrameResult) -> Target | None:
        mode = self.target_mode()
        if mode == 0:
            return ClassTarget(int(res.predictions[0][0])) if res.predictions else None
        if mode == 1:
            return ClassTarget(self.picker.index) if self.picker.index is not None else None
        unit = self.ctx.state.unit
        return None if unit is None else Unit(unit.layer, unit.channel)

    def saliency_class(self, res: FrameResult) -> int | None:
        if self.target_mode() == 1 and self.picker.index is not None:
            return self.picker.index
        return int(res.predictions[0][0]) if res.predictions else None

    # -- jobs
    def restart(self, force: bool = False) -> None:
        res = self.ctx.live.shown
        if res is not None and self.panel.isVisible():
            self._start(res, force=force)

    def _on_frame(self, res: FrameResult) -> None:
        if self.panel.isVisible() and self.live_box.isChecked():
            self._start(res)

    def _start(self, res: FrameResult, force: bool = False) -> None:
        """One round: the occlusion and the saliency (with its cut-out) of the same frame, started together once
        both jobs are idle (`force`: cancel them now); the saliency waits for the occlusion's first map
        (`FrameRound`), so the panel never shows two pictures. The same picture again (a frozen camera) starts
        nothing."""
        jobs = self.ctx.jobs
        if force:
            jobs.cancel(OCC_SLOT)
            jobs.cancel(SAL_SLOT)
        elif jobs.current(OCC_SLOT) is not None or jobs.current(SAL_SLOT) is not None:
            return
        elif self.round.complete and same_picture(res.image, self.round.image):
            return
        target, cls = self.occlusion_target(res), self.saliency_class(res)
        parts = [part for part, on in (("occlusion", target is not None), ("saliency", cls is not None)) if on]
        n = self.round.start(res, parts, lead="occlusion", clear={"saliency": self._clear_saliency})
        if target is not None:
            self._run_occlusion(res.image, target, n)
        else:
            self.occ_info.setText("choose a class (type in the box or click one in Predictions) or select a "
                                  "unit")
        if cls is not None:
            self._run_saliency(res.image, cls, n)

    def _clear_saliency(self) -> None:
        for canvas in (self.sal, self.cut):
            canvas.clear("computing for this frame...")
        self.sal_info.setText("")

    def _run_occlusion(self, image: np.ndarray, target: Target, round_no: int) -> None:
        load = self.ctx.live.model_copy_loader(OCC_SLOT)
        window, stride, fill = int(self.window.value()), int(self.stride.value()), self.fill.currentText()
        size = min(image.shape[:2])  # a coarse pass (Captum's placement, as the core) when it has fewer windows
        coarse = window <= size and len(patch_positions(size, window, 2 * stride)) < len(
            patch_positions(size, window, stride))
        strides = (2 * stride, stride) if coarse else (stride,)

        def work(abort):
            yield from iter_occlusion(load(), image, target, window=window, stride=stride, fill=fill,
                                      strides=strides, abort=abort)

        deliver = self.round.deliver
        self.ctx.jobs.start(OCC_SLOT, work,
                            on_yield=lambda m: deliver(round_no, "occlusion", lambda: self._draw_occlusion(image, m)),
                            on_error=lambda msg: deliver(round_no, "occlusion",
                                                         lambda: self.occ_info.setText(f"occlusion failed: {msg}")))

    def _run_saliency(self, image: np.ndarray, cls: int, round_no: int) -> None:
        load = self.ctx.live.model_copy_loader(SAL_SLOT)
        smooth = DEFAULT_SMOOTH if self.smooth_box.isChecked() else 0

        def work(_abort):
            return segment(load(), image, cls, smooth=smooth)

        deliver = self.round.deliver
        self.ctx.jobs.start(SAL_SLOT, work,
                            on_done=lambda s: deliver(round_no, "saliency", lambda: self._draw_saliency(image, cls, s)),
                            on_error=lambda msg: deliver(round_no, "saliency",
                                                         lambda: self.sal_info.setText(f"saliency failed: {msg}")))

    # -- drawing
    def _draw_occlusion(self, image: np.ndarray, m) -> None:
        self.map = m
        drop = m.upsampled()
        scale = float(np.nanmax(np.abs(m.drop().numpy()))) if np.isfinite(m.drop().numpy()).any() else 0.0
        self.occ.set_image(diverging_overlay(image, drop, self._signed_lut, scale))
        self.occ.caption = f"stride {m.stride}" + ("" if m.complete else f"  {m.done}/{m.total}")
        unit = "probability" if isinstance(m.target, ClassTarget) and m.target.score == "prob" else "score"
        self.occ_bar.set_scale(self._signed_lut, (f"-{scale:.2g}", "0", f"+{scale:.2g}"),
                               f"drop in the target's {unit} when that patch is covered")
        cats = self.ctx.vm.categories
        what = (cats[m.target.index] if isinstance(m.target, ClassTarget) and m.target.index < len(cats)
                else target_label(m.target))
        ext = m.extremes()
        text = f"<b>{what}</b>: {unit} {m.base_score:.3g} unoccluded"
        if ext:
            text += (f"; lowest {ext['min']:.3g} with the patch at {tuple(ext['min_at'])}, highest {ext['max']:.3g} "
                     f"at {tuple(ext['max_at'])} (row, col)")
        if m.final and m.note:
            text += f". {m.note}"
        self.occ_info.setText(text)
        if m.labels is not None:
            self._draw_labels(m)

    def _draw_labels(self, m) -> None:
        labels = m.labels.numpy()
        done = labels >= 0
        if not done.any():
            return
        classes, counts = np.unique(labels[done], return_counts=True)
        order = classes[np.argsort(-counts)]
        rng = np.random.default_rng(0)
        palette = {int(c): rng.integers(60, 255, 3).astype(np.uint8) for c in order}
        if m.base_label is not None:
            palette[m.base_label] = np.array([255, 214, 10], np.uint8)  # the unoccluded winner: yellow
        img = np.zeros((*labels.shape, 3), np.uint8)
        for c, color in palette.items():
            img[labels == c] = color
        self.labels_canvas.set_image(img)
        cats = self.ctx.vm.categories
        self.legend.setText(", ".join(f"<span style='color:rgb({p[0]},{p[1]},{p[2]})'>\u25a0</span> "
                                      f"{cats[c] if c < len(cats) else c}" for c, p in
                                      ((int(c), palette[int(c)]) for c in order[:4])))

    def _draw_saliency(self, image: np.ndarray, cls: int, seg) -> None:
        self.segmentation = seg
        self.sal.set_image(heat_overlay(image, seg.saliency, self._heat_lut))
        self.cut.set_image(seg.cutout(image, background=(24, 26, 32)))
        box = f", box {seg.bbox}" if seg.bbox is not None else ""
        cats = self.ctx.vm.categories
        self.sal_info.setText(f"saliency of <b>{cats[cls]}</b>; the cut-out covers {seg.area * 100:.0f}% of the "
                              f"frame{box}")

    # -- what the window gathers
    def open(self) -> None:
        self.show_panel("where")

    def panels(self) -> list[Panel]:
        return [Panel("where", "Where it looks", self.panel, area="right", visible=False, tab_with="predictions")]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Where it looks (occlusion, saliency, cut-out)", self.open))]

    def snapshot_state(self) -> dict:
        m = self.map
        if m is None:
            return {}
        return {"occlusion": {"target": target_label(m.target), "stride": m.stride, "window": m.window, "done": m.done,
                              "total": m.total, "base_score": m.base_score, **m.extremes()}}

    def snapshot_images(self) -> dict:
        out = {}
        for name, canvas in (("occlusion", self.occ), ("saliency", self.sal), ("cutout", self.cut)):
            if self.panel.isVisible() and canvas.array is not None:
                out[name] = canvas.array
        return out

    def shutdown(self) -> None:
        self.ctx.jobs.cancel(OCC_SLOT)
        self.ctx.jobs.cancel(SAL_SLOT)
