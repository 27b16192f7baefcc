"""Adversarial examples: turn the frame into any class by a change too small to see, live or on a frozen frame.

The panel shows the frame as the network sees it, the perturbation magnified (x20, labelled) and the result,
each with its top predictions. "live" runs a few attack steps on every new frame, carrying the perturbation
over from the previous frame; "run on this frame" attacks the shown frame to completion. Everything happens in
8-bit pixel space (`deepvis_app.adversarial`): what is shown is what a PNG would hold. The "why" box has the
lecture's linear example and its growth with input size, and measures the same on the real model.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ... import adversarial as adv
from ...pipeline import FrameResult
from ..feature import TOOLS, Feature, MenuItem, Panel
from ..widgets.canvas import ImageCanvas
from ..widgets.class_picker import ClassPicker
from ..widgets.frame_tag import FrameTag
from ..widgets.inspector_pane import titled
from ..widgets.panel import assemble, control_row

SLOT = "adversarial"  # the attack job (and its model copy)
WHY_SLOT = "adversarial-why"  # the "why" measurement (its own copy: it may run beside an attack)
GAIN = 20.0
DEFAULT_TARGET = "ostrich"
NO_TARGET = "pick a target class"


def top_text(probs: np.ndarray, categories: list[str], mark: int | None = None, k: int = 3) -> str:
    """The top-k classes as short HTML lines; the `mark` class (the target) is highlighted wherever it is."""
    order = np.argsort(-probs)[:k]
    lines = []
    for i in order:
        name = categories[i] if i < len(categories) else str(i)
        style = "color:#ffd60a;font-weight:bold" if mark is not None and i == mark else ""
        lines.append(f"<span style='{style}'>{name} {probs[i] * 100:.1f}%</span>")
    if mark is not None and mark not in order:
        lines.append(f"<span style='color:#ffd60a'>target {categories[mark]} {probs[mark] * 100:.2f}%</span>")
    return "<br>".join(lines)


class AdversarialFeature(Feature):
    name = "adversarial"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.state: adv.AttackState | None = None  # the newest attack state shown
        self.target: int | None = None
        self.steps_done = 0
        self._delta: np.ndarray | None = None  # carried from frame to frame in live mode
        self._frame_id = -1
        self.panel = self._build()
        ctx.live.painted.connect(self._on_frame)
        ctx.live.painted.connect(self.tag.refresh)
        ctx.live.model_changed.connect(self._model_changed)
        ctx.events.class_chosen.connect(self._class_clicked)
        self._model_changed(ctx.vm)

    # -- widgets
    def _build(self) -> QWidget:
        w = QWidget()
        self.picker = ClassPicker()
        self.picker.chosen.connect(self.set_target)
        self.method = QComboBox()
        self.method.addItems(["pgd", "fgsm"])
        self.method.setToolTip("pgd: small projected sign-gradient steps (targeted); fgsm: one step of eps")
        self.eps = QDoubleSpinBox()
        self.eps.setRange(1.0, 32.0)
        self.eps.setValue(2.0)
        self.eps.setSuffix(" levels")
        self.eps.setToolTip("L-inf size of the change, in 8-bit pixel levels (0..255)")
        self.per_frame = QSpinBox()
        self.per_frame.setRange(1, 50)
        self.per_frame.setValue(3)
        self.per_frame.setToolTip("attack steps per camera frame in live mode")
        self.live_box = QCheckBox("live")
        self.live_box.setToolTip("attack every new frame a few steps, carrying the perturbation over")
        self.live_box.toggled.connect(self._live_toggled)
        self.run_button = QPushButton("run on this frame")
        self.run_button.setToolTip("attack the shown frame until the target wins (or the step budget ends)")
        self.run_button.clicked.connect(self.run_on_frame)
        self.frame = ImageCanvas("the frame the network sees", smooth=True)
        self.noise = ImageCanvas("perturbation", smooth=False)
        self.result = ImageCanvas(NO_TARGET, smooth=True)
        self.tag = FrameTag("attacked")
        self.frame_top, self.result_top = QLabel(""), QLabel("")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        self.why = QLabel(self._why_text())
        self.why.setWordWrap(True)
        self.why_button = QPushButton("measure on this frame")
        self.why_button.setToolTip("move a growing share of the pixels by eps levels against the gradient of the "
                                   "top class and watch its score fall: each moves a little, together a lot")
        self.why_button.clicked.connect(self.measure_why)
        self.why_box = QCheckBox("why does it work?")
        self.why_box.toggled.connect(lambda on: (self.why.setVisible(on), self.why_button.setVisible(on)))
        self.why.hide()
        self.why_button.hide()

        grid = QGridLayout()
        for col, (title, canvas, label) in enumerate((("frame", self.frame, self.frame_top),
                                                      (f"perturbation x{GAIN:g} (grey = unchanged)", self.noise,
                                                       QLabel("")),
                                                      ("adversarial result", self.result, self.result_top))):
            grid.addWidget(titled(title, canvas), 0, col)
            grid.addWidget(label, 1, col)
            grid.setColumnStretch(col, 1)
        why = QHBoxLayout()
        why.addWidget(self.why, 1)
        why.addWidget(self.why_button)
        why_box = QWidget()
        why_box.setLayout(why)
        # two short rows rather than one long one: the dock stays narrow
        assemble(w, [control_row("target", self.picker, self.live_box, self.run_button),
                     control_row(self.method, "eps", self.eps, "steps/frame", self.per_frame)],
                 grid, [self.tag, self.info, self.why_box, why_box])
        return w

    def _why_text(self) -> str:
        d = adv.linear_demo()
        rows = adv.linear_growth((10, 1000, 150_528))
        growth = ", ".join(f"n={r['dim']:,}: change {r['score_change']:.2g} vs score ~{r['typical_score']:.0f}"
                           for r in rows)
        return (f"<b>Why:</b> a linear classifier on 10 numbers: moving each by {d['eps']} along its weight's sign "
                f"moves the score {d['score']:+.0f} \u2192 {d['score_adv']:+.0f} (P {d['prob']:.3f} \u2192 "
                f"{d['prob_adv']:.2f}). The change grows with the number of inputs, the score only like its square "
                f"root: one level per value ({growth}).")

    # -- choices
    def _model_changed(self, vm) -> None:
        self.picker.set_categories(list(vm.categories))
        self.ctx.jobs.cancel(SLOT)
        self._delta, self.state = None, None
        if DEFAULT_TARGET in vm.categories and self.target is None:
            self.picker.set_index(vm.categories.index(DEFAULT_TARGET))
        self._placeholder()

    def set_target(self, index: int) -> None:
        if index != self.target:
            self.target = index
            self._delta, self.steps_done = None, 0
            self.ctx.jobs.cancel(SLOT)
        self._placeholder()

    def _placeholder(self) -> None:
        """What the result canvas says before an attack: the chosen target, or that one is needed."""
        cats = self.ctx.vm.categories
        if self.target is None or not 0 <= self.target < len(cats):
            self.result.placeholder = NO_TARGET
        else:
            self.result.placeholder = (f"target: {cats[self.target]}\npress 'run on this frame'\n"
                                       f"(or tick live)")
        self.result.update()

    def _class_clicked(self, index: int) -> None:
        if self.panel.isVisible():  # a class clicked in the predictions becomes the target while the panel is open
            self.picker.set_index(index)

    def _live_toggled(self, on: bool) -> None:
        self._delta, self.steps_done = None, 0
        if not on:
            self.ctx.jobs.cancel(SLOT)

    # -- attacks
    def _attack(self, res: FrameResult, *, steps: int, carry: bool) -> None:
        ctx = self.ctx
        if self.target is None:
            self.info.setText("pick a target class first (type in the box, or click a class in Predictions)")
            return
        image = res.image
        load = ctx.live.model_copy_loader(SLOT)
        target, method, eps = self.target, self.method.currentText(), float(self.eps.value())
        delta = self._delta if carry else None

        def work(abort):
            vm = load()
            last = None
            for st in adv.iter_attack(vm, image, target, method=method, eps=eps, steps=steps, abort=abort,
                                      delta=delta):
                last = st
                yield st
            return last

        ctx.jobs.start(SLOT, work, on_yield=lambda st: self._show(st, res), on_done=self._finished,
                       on_error=lambda msg: self.info.setText(f"attack failed: {msg}"))

    def _on_frame(self, res: FrameResult) -> None:
        if not self.live_box.isChecked() or not self.panel.isVisible() or res.frame_id == self._frame_id:
            return
        if self.ctx.jobs.current(SLOT) is not None:
            return  # still busy with the previous frame: frames in between are skipped
        self._frame_id = res.frame_id
        self._attack(res, steps=int(self.per_frame.value()), carry=True)

    def run_on_frame(self) -> None:
        res = self.ctx.live.shown
        if res is None:
            self.info.setText("no frame yet")
            return
        self.live_box.setChecked(False)
        self._attack(res, steps=200, carry=False)

    def _show(self, st: adv.AttackState, res: FrameResult | None = None) -> None:
        cats = self.ctx.vm.categories
        self.state = st
        if res is not None and res.frame_id != self.tag.frame_id:
            self.tag.set_frame(res)
        self.steps_done += 1 if st.step > 0 else 0
        self._delta = st.delta
        orig = st.image.astype(np.int16) - st.delta
        self.frame.set_image(np.clip(orig, 0, 255).astype(np.uint8))
        self.noise.set_image(adv.magnify(st.delta, GAIN))
        self.result.set_image(st.image)
        self.result.caption = "success" if st.success else f"step {st.step}"
        self.frame_top.setText(f"<b>original:</b> {cats[st.orig_top1]} {st.orig_prob * 100:.1f}%")
        self.result_top.setText(top_text(st.probs, cats, mark=st.target))
        rate = st.step / st.seconds if st.seconds > 0 and st.step else 0.0
        self.info.setText(f"L-inf {st.linf} levels, L2 {st.l2:.0f} levels; step {st.step}; {rate:.1f} steps/s"
                          + ("; live: the perturbation carries over to the next frame"
                             if self.live_box.isChecked() else ""))

    def _finished(self, st: adv.AttackState | None) -> None:
        if st is not None and not self.live_box.isChecked():
            cats = self.ctx.vm.categories
            verdict = (f"now {cats[st.top1]} ({st.top1_prob * 100:.1f}%)" if st.success
                       else f"not there yet after {st.step} steps: raise eps")
            self.info.setText(f"{verdict}; change L-inf {st.linf} levels, L2 {st.l2:.0f}; {st.seconds:.1f} s")

    def measure_why(self) -> None:
        res = self.ctx.live.shown
        if res is None:
            return
        load = self.ctx.live.model_copy_loader(WHY_SLOT)
        image, eps = res.image, float(self.eps.value())

        def show(rows) -> None:
            text = "; ".join(f"{r['fraction'] * 100:g}% of values: logit -{r['logit_drop']:.2f}" for r in rows
                             if "fraction" in r)
            self.why.setText(self._why_text() + f"<br><b>On this frame</b> (eps {eps:g} level): {text}")

        self.ctx.jobs.start(WHY_SLOT, lambda _abort: adv.effect_vs_pixels(load(), image, eps=eps),
                            on_done=show, on_error=lambda msg: self.info.setText(f"measure failed: {msg}"))

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return [Panel("adversarial", "Adversarial", self.panel, area="right", visible=False,
                      tab_with=TOOLS)]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Adversarial examples", lambda: self.show_panel("adversarial")))]

    def snapshot_state(self) -> dict:
        st = self.state
        if st is None:
            return {}
        return {"adversarial": {"target": st.target, "step": st.step, "success": st.success, "linf": st.linf,
                                "top1": st.top1, "target_prob": st.target_prob}}

    def snapshot_images(self) -> dict:
        st = self.state
        return {} if st is None else {"adversarial": st.image, "adversarial_perturbation": adv.magnify(st.delta)}

    def shutdown(self) -> None:
        self.ctx.jobs.cancel(SLOT)
        self.ctx.jobs.cancel(WHY_SLOT)
