"""Interventions, live: switch the selected unit (or a set of units) off, scale it, clamp it or replace it by its
recent mean, and watch the predictions and every view of the intervened network; rank a layer's channels by what
they contribute to a class and select or switch off the ones that matter (docs/interventions.md).

The list lives in the app state (`state.interventions`, a tuple of immutable `Intervention` values: the worker
applies the enabled ones to every frame). This panel edits that tuple, shows the top-5 of the real network
(`FrameResult.predictions_clean`) beside the intervened one's, and runs the rankings in a background job on a
private model copy of the *real* network, on the frame shown when asked. While any intervention is on, the panel,
its dock tab and the status bar say "[intervened: ...]".

Keys: i opens the panel, k switches the selected unit off (again: back on), K clears every intervention.
Shift-click tiles in the grid while the panel is open to gather a set of units for the next action.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...errors import DeepVisError
from ...interventions import Intervention, title_note
from ...interventions.spec import channels_text
from ...pipeline import FrameResult
from ...values import Unit
from ..channel_rank import RANK_BY, RankRunner, describe, ranked_tiles
from ..feature import TOOLS, Feature, Key, MenuItem, Panel
from ..labels import layer_label, layer_title
from ..widgets.class_picker import ClassPicker
from ..widgets.frame_tag import FrameTag
from ..widgets.images import SIGNED_COLORMAP, make_lut
from ..widgets.inspector_pane import titled
from ..widgets.intervene_views import (
    CompareTop5,
    InterventionList,
    RankStrip,
    SideBySide,
    action_button,
    joined,
    number_box,
)
from ..widgets.panel import ToolPanel, assemble, control_row, small_progress

RANK_SLOT = "interventions-rank"  # the ranking job (and its model copy of the real network)
STRIP_MAX = 40  # ranked tiles shown
NOTE_COLOR = "#ff9f0a"
STATUS_MAX_PX = 200


def unit_problem(vm, iv: Intervention) -> str | None:
    """What keeps `iv` from applying to model `vm` (an unknown layer, a channel out of range), None when it fits."""
    try:
        info = vm.info(iv.layer)
    except DeepVisError as err:
        return str(err)
    bad = [c for c in iv.channels if c >= info.channels]
    if bad:
        return f"unit {bad[0]} of {iv.layer} does not exist: valid units are 0..{info.channels - 1}"
    return None


class InterventionsFeature(Feature):
    name = "interventions"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.gathered: dict[str, set[int]] = {}  # the set of units the next action applies to (shift-click)
        self.class_index: int | None = None  # the class to rank for (None: the real network's top class)
        self.ranking = None  # interventions.Ranking shown in the strip
        self.rank_res: FrameResult | None = None  # the frame it was computed on
        self.rank_progress: tuple[int, int] | None = None
        self.runner = RankRunner(ctx.jobs, RANK_SLOT)
        self._luts: dict[str, object] = {}
        self.panel = self._build()
        self.status = QLabel("")
        self.status.setStyleSheet(f"color: {NOTE_COLOR}; font-weight: bold;")
        self.status.hide()
        st = ctx.state
        st.events.interventions.connect(self._sync)
        st.events.unit.connect(self._unit_changed)
        st.events.layer.connect(self._layer_changed)
        ctx.live.painted.connect(self.paint)
        ctx.live.painted.connect(self.tag.refresh)
        ctx.live.model_changed.connect(self._model_changed)
        ctx.events.class_chosen.connect(self.choose_class)
        self.picker.set_categories(list(ctx.vm.categories))
        self._sync()

    # ------------------------------------------------------------------ widgets
    def _build(self) -> ToolPanel:
        w = ToolPanel()
        w.shown.connect(self._sync)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        self.note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        self.target = QLabel("")
        self.target.setTextFormat(Qt.TextFormat.RichText)
        self.off_button = action_button("off", lambda: self.apply_mode("zero"),
                                       "switch the unit(s) off: zero at every position (k)")
        self.scale = number_box(QDoubleSpinBox(), -100.0, 100.0, 2.0, "the factor of \u00d7 (a negative one flips)")
        self.scale_button = action_button("\u00d7", lambda: self.apply_mode(f"scale:{self.scale.value():g}"),
                                         "multiply the unit(s) by the factor")
        self.clamp = number_box(QDoubleSpinBox(), -1e4, 1e4, 3.0, "the value of clamp")
        self.clamp_button = action_button("clamp =", lambda: self.apply_mode(f"clamp:{self.clamp.value():g}"),
                                         "set the unit(s) to this value at every position")
        self.mean_button = action_button("mean", lambda: self.apply_mode("mean"),
                                        "replace the unit(s) by their mean over the recent frames, per position")
        self.gather_button = action_button("+ set", self.gather_selected,
                                          "add the selected unit to the set the next action applies to (or "
                                          "shift-click tiles in the grid while this panel is open)")
        self.forget_button = action_button("clear set", self.forget_gathered, "empty the set of units")

        self.picker = ClassPicker(placeholder="top class (type to choose)")
        self.picker.chosen.connect(self._picked)
        self.picker.textChanged.connect(lambda text: self._picked(None) if not text.strip() else None)
        self.picker.setToolTip("the class the units are ranked for: empty = the real network's top class; click "
                               "a class in Predictions to choose it")
        self.rank_by = QComboBox()
        self.rank_by.addItems(list(RANK_BY))
        self.rank_by.setToolTip("activation x gradient: one backward, a first-order estimate (fast); ablation: "
                                "the class probability lost when each channel alone is zeroed (batched)")
        self.rank_button = action_button("rank channels", self.rank,
                                        "rank the shown layer's channels for the class, on the shown frame")
        self.cancel_button = action_button("cancel", self.cancel_rank, "stop the ranking (the part done is kept)")
        self.cancel_button.hide()
        self.progress = small_progress()
        self.top_n = QSpinBox()
        self.top_n.setRange(1, 4096)
        self.top_n.setValue(10)
        self.top_n.setToolTip("how many of the best-ranked channels to switch off")
        self.top_button = action_button("switch off", self.switch_off_top,
                                       "rank the shown layer's channels for the class and switch the best N off")

        self.list_box = InterventionList()
        self.listing = self.list_box.view
        self.list_box.toggled.connect(self._row_toggled)
        self.list_box.edit_requested.connect(self.edit_dialog)
        self.list_box.remove_requested.connect(self.remove)
        self.list_box.clear_requested.connect(self.clear_all)

        self.compare = CompareTop5()
        self.compare.class_clicked.connect(self.choose_class)
        self.strip = RankStrip()
        self.strip.chosen.connect(self.select_ranked)
        self.rank_info = QLabel("rank: the shown layer's channels for the class, best first (click one: select it)")
        self.rank_info.setWordWrap(True)
        self.tag = FrameTag("ranked on")

        self.rank_info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        about = QHBoxLayout()  # what the strip shows, and from which frame
        about.setSpacing(6)
        about.addWidget(self.rank_info, 3)
        about.addWidget(self.tag, 2)
        strip_box = QWidget()
        slay = QVBoxLayout(strip_box)
        slay.setContentsMargins(0, 2, 0, 0)
        slay.setSpacing(1)
        slay.addLayout(about)
        slay.addWidget(self.strip)
        self.pair = SideBySide(self.compare, titled("interventions (tick = on)", self.list_box))
        body = QGridLayout()
        body.setVerticalSpacing(3)
        body.addWidget(self.pair, 0, 0)
        body.addLayout(control_row("class", self.picker, self.rank_by, self.rank_button, self.cancel_button,
                                   self.progress, "top", self.top_n, self.top_button), 1, 0)
        body.addWidget(strip_box, 2, 0)
        body.setRowStretch(0, 1)
        head = QVBoxLayout()  # the note spans the panel's width (one line while it fits)
        head.addWidget(self.note)
        assemble(w, [head,
                     control_row(self.target, self.off_button, joined(self.scale_button, self.scale),
                                 joined(self.clamp_button, self.clamp), self.mean_button, self.gather_button,
                                 self.forget_button)],
                 body, [])
        return w

    # ------------------------------------------------------------------ the list (state.interventions)
    @property
    def interventions(self) -> tuple[Intervention, ...]:
        return self.ctx.state.interventions

    def set_all(self, items: tuple[Intervention, ...] | list[Intervention]) -> None:
        """Replace the list (the state holds immutable values: every change is a new tuple)."""
        self.ctx.state.interventions = tuple(items)

    def add(self, iv: Intervention) -> bool:
        """Append `iv` when the model has its layer and channels (else a banner says why); the same change
        already listed is switched on instead of repeated."""
        problem = unit_problem(self.ctx.vm, iv)
        if problem is not None:
            self.ctx.notify(f"intervention refused: {problem}", "error")
            return False
        items = list(self.interventions)
        for k, old in enumerate(items):
            if (old.layer, old.channels, old.mode) == (iv.layer, iv.channels, iv.mode):
                if old.enabled == iv.enabled:
                    self.ctx.notify(f"already listed: {iv.label()}", "info", 4)
                    return False
                items[k] = old.toggled(iv.enabled)
                self.set_all(items)
                return True
        self.set_all([*items, iv])
        return True

    def add_text(self, text: str) -> bool:
        """Add an intervention written as `LAYER:CHANNELS[:MODE][:off]` (scripts, `gui_shot --call`)."""
        try:
            iv = Intervention.parse(text)
        except DeepVisError as err:
            self.ctx.notify(f"intervention refused: {err}", "error")
            return False
        return self.add(iv)

    def toggle(self, index: int, enabled: bool | None = None) -> None:
        items = list(self.interventions)
        if 0 <= index < len(items):
            items[index] = items[index].toggled(enabled)
            self.set_all(items)

    def remove(self, index: int) -> None:
        items = list(self.interventions)
        if 0 <= index < len(items):
            del items[index]
            self.set_all(items)

    def edit(self, index: int, text: str) -> bool:
        """Replace intervention `index` by the one `text` writes (refused with a banner when it does not parse or
        does not fit the model: the list stays as it was)."""
        items = list(self.interventions)
        if not 0 <= index < len(items):
            return False
        try:
            iv = Intervention.parse(text)
        except DeepVisError as err:
            self.ctx.notify(f"intervention not changed: {err}", "error")
            return False
        problem = unit_problem(self.ctx.vm, iv)
        if problem is not None:
            self.ctx.notify(f"intervention not changed: {problem}", "error")
            return False
        items[index] = iv
        self.set_all(items)
        return True

    def edit_dialog(self, index: int) -> None:
        if not 0 <= index < len(self.interventions):
            return
        text, ok = QInputDialog.getText(self.ctx.top_widget, "Edit intervention",
                                        "LAYER:CHANNELS[:MODE][:off]   modes: zero, mean, scale:F, clamp:V",
                                        text=str(self.interventions[index]))
        if ok:
            self.edit(index, text)

    def clear_all(self) -> None:
        if self.interventions:
            n = len(self.interventions)
            self.set_all(())
            self.ctx.notify(f"{n} intervention{'s' if n != 1 else ''} cleared: the network is the real one", "info",
                            4)

    def _row_toggled(self, row: int, on: bool) -> None:
        if 0 <= row < len(self.interventions) and self.interventions[row].enabled != on:
            self.toggle(row, on)

    # ------------------------------------------------------------------ acting on units
    def targets(self) -> dict[str, list[int]]:
        """What the next action applies to: the gathered set, else the selected unit."""
        if self.gathered:
            return {layer: sorted(chans) for layer, chans in self.gathered.items() if chans}
        unit = self.ctx.state.unit
        return {unit.layer: [unit.channel]} if unit is not None else {}

    def apply_mode(self, mode: str) -> None:
        """Add one intervention per layer of the targets: "zero", "scale:F", "clamp:V" or "mean"."""
        targets = self.targets()
        if not targets:
            self.ctx.notify("select a unit first (click a tile)", "error")
            return
        try:
            ivs = [Intervention(layer, tuple(chans), mode) for layer, chans in targets.items()]
        except DeepVisError as err:
            self.ctx.notify(f"intervention refused: {err}", "error")
            return
        for iv in ivs:
            self.add(iv)
        self.forget_gathered()

    def knock_out_selected(self) -> None:
        """k: switch the selected unit off; when exactly that is listed already, take it out again."""
        unit = self.ctx.state.unit
        if unit is None:
            self.ctx.notify("select a unit first (click a tile)", "error")
            return
        mine = [k for k, iv in enumerate(self.interventions)
                if (iv.layer, iv.channels, iv.mode) == (unit.layer, (unit.channel,), "zero")]
        if mine:
            self.remove(mine[0])
        else:
            self.add(Intervention(unit.layer, (unit.channel,), "zero"))

    def gather(self, unit: Unit) -> None:
        self.gathered.setdefault(unit.layer, set()).add(unit.channel)
        self._sync_target()

    def gather_selected(self) -> None:
        if self.ctx.state.unit is not None:
            self.gather(self.ctx.state.unit)

    def forget_gathered(self) -> None:
        self.gathered.clear()
        self._sync_target()

    def _unit_changed(self, new: Unit | None, old: Unit | None = None) -> None:
        """A shift-click on a tile (or shift + arrows) while the panel is open gathers the unit into the set (the
        unit selected before it too, when the set starts)."""
        shift = QGuiApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier
        if new is not None and shift and self.panel.isVisible():
            if not self.gathered and old is not None:
                self.gathered.setdefault(old.layer, set()).add(old.channel)
            self.gather(new)
        self._sync_target()

    # ------------------------------------------------------------------ classes and rankings
    def choose_class(self, index: int | None) -> None:
        """The class to rank for (a class clicked in Predictions or here); None: the top class."""
        if index is None:
            self.picker.clear()
        else:
            self.picker.set_index(index)  # emits chosen -> _picked

    def _picked(self, index: int | None) -> None:
        self.class_index = index

    def target_class(self, res: FrameResult) -> int | None:
        """The chosen class, else the real network's top class on `res`."""
        if self.class_index is not None:
            return self.class_index
        rows = res.predictions_clean if res.predictions_clean is not None else res.predictions
        return int(rows[0][0]) if rows else None

    def rank(self, by: str | None = None, *, then_switch_off: int | None = None) -> None:
        """Rank the shown layer's channels for the class on the shown frame, in the background (one job at a time:
        a new request replaces the running one). `by`: "gradxact" or "ablation" (default: the box's choice)."""
        ctx = self.ctx
        by = by or RANK_BY[self.rank_by.currentText()]
        if by not in RANK_BY.values():
            ctx.notify(f"rank by {by!r}? choose one of {', '.join(RANK_BY.values())}", "error")
            return
        res = ctx.live.shown
        if res is None:
            ctx.notify("no frame yet to rank on", "error")
            return
        cls = self.target_class(res)
        if cls is None:
            ctx.notify("this model has no classes to rank for", "error")
            return
        layer, model = ctx.state.layer, ctx.vm.name
        self.rank_by.setCurrentIndex(list(RANK_BY.values()).index(by))
        self.rank_progress = None
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        self.rank_info.setText(f"ranking the channels of {layer_label(ctx.vm, layer)} for "
                               f"<b>{self._class_name(cls)}</b> on frame {res.frame_id}\u2026")
        self.runner.start(ctx.live.model_copy_loader(RANK_SLOT), res, model, layer, cls, by,
                          on_partial=lambda part: self._ranked(res, part[2], (part[0], part[1])),
                          on_done=lambda ranking: self._rank_done(res, ranking, model, then_switch_off),
                          on_error=self._rank_failed)

    def switch_off_top(self, n: int | None = None) -> None:
        """Rank (by the box's choice) and switch the best `n` (default: the spin box) channels off together."""
        self.rank(then_switch_off=int(n or self.top_n.value()))

    def cancel_rank(self) -> None:
        self.runner.cancel()
        self._idle()
        if self.ranking is not None and self.rank_progress is not None:
            done, total = self.rank_progress
            self.rank_info.setText(self.rank_info.text() + f" \u2014 cancelled after {done} of {total} channels")

    def _idle(self) -> None:
        self.progress.hide()
        self.cancel_button.hide()

    def _ranked(self, res: FrameResult, ranking, progress: tuple[int, int] | None) -> None:
        self.ranking, self.rank_res, self.rank_progress = ranking, res, progress
        if progress is not None:
            self.progress.setRange(0, progress[1])
            self.progress.setValue(progress[0])
        self.tag.set_frame(res)
        self._describe_ranking()
        self._refresh_strip(self.ctx.live.shown or res)

    def _rank_done(self, res: FrameResult, ranking, model: str, switch_off: int | None) -> None:
        self._idle()
        if ranking is None:
            return
        self._ranked(res, ranking, None)
        if switch_off is not None and model == self.ctx.vm.name:
            chans = ranking.top(switch_off)
            if chans:
                self.add(Intervention(ranking.layer, tuple(chans), "zero"))

    def _rank_failed(self, message: str) -> None:
        self._idle()
        self.rank_info.setText(f"ranking failed: {message}")
        self.ctx.notify(f"ranking failed: {message}", "error")

    def _describe_ranking(self) -> None:
        text, tip = describe(self.ranking, self.ctx.vm, self.rank_progress)
        self.rank_info.setText(text)
        self.rank_info.setToolTip(tip)

    def select_ranked(self, channel: int) -> None:
        """A ranked tile clicked: select that unit (on its layer), so its top-k and optimized image appear."""
        if self.ranking is None:
            return
        st = self.ctx.state
        unit = Unit(self.ranking.layer, int(channel))
        if st.layer != unit.layer and not st.unit_frozen:
            st.update(layer=unit.layer, unit=unit)
        else:
            st.unit = unit

    # ------------------------------------------------------------------ drawing
    def _class_name(self, index: int) -> str:
        cats = self.ctx.vm.categories
        return cats[index] if 0 <= index < len(cats) else str(index)

    def _dock(self) -> QDockWidget | None:
        w = self.panel.parentWidget()
        while w is not None and not isinstance(w, QDockWidget):
            w = w.parentWidget()
        return w

    def _sync(self, *_args) -> None:
        """The list, the notes and the dock's title from the state."""
        items = self.interventions
        self.list_box.set_rows([(self._item_text(iv), f"{iv}\n{layer_label(self.ctx.vm, iv.layer)}", iv.enabled)
                                for iv in items])
        note = title_note(items)
        on = sum(iv.enabled for iv in items)
        if note:
            self.note.setText(f"<span style='color:{NOTE_COLOR};font-weight:bold'>{note}</span>")
            self.note.setToolTip("every view shows the intervened network: the predictions, the deeper layers' "
                                 "grids, every explanation. The real network's top-5 is beside the intervened one "
                                 "below. K clears them all.")
        else:
            off = f" ({len(items)} listed, all off)" if items else ""
            self.note.setText(f"<span style='color:#a9b0c0'>no intervention on: the network is the real one{off}"
                              f"</span>")
        dock = self._dock()
        if dock is not None:
            dock.setWindowTitle(f"Interventions \u00b7 {on} on" if on else "Interventions")
        self._sync_target()

    def _item_text(self, iv: Intervention) -> str:
        """"off  block 10  #3,17" / "\u00d72 ..." / "=3 ..." / "mean ...": what is done first (the channels are
        what a narrow list cuts)."""
        kind, value = iv.kind, iv.value
        what = {"zero": "off", "mean": "mean"}.get(kind) or ("\u00d7" if kind == "scale" else "=") + f"{value:g}"
        return f"{what}  {layer_title(self.ctx.vm, iv.layer) or iv.layer}  #{channels_text(iv.channels)}"

    def _sync_target(self) -> None:
        if self.gathered:
            parts = [f"{layer_title(self.ctx.vm, layer) or layer} #{', '.join(map(str, sorted(ch)))}"
                     for layer, ch in self.gathered.items() if ch]
            self.target.setText(f"set: <b style='color:#ffd60a'>{'; '.join(parts)}</b>")
            self.forget_button.show()
        else:
            unit = self.ctx.state.unit
            name = (f"{layer_title(self.ctx.vm, unit.layer) or unit.layer} <b style='color:#ffd60a'>"
                    f"#{unit.channel}</b>") if unit is not None else "no unit selected"
            self.target.setText(f"unit {name}")
            self.forget_button.hide()
        self.target.setToolTip("what off / \u00d7 / clamp / mean act on: the selected unit, or the set "
                               "(shift-click tiles in the grid, or + set)")

    def _set_status(self, active: tuple) -> None:
        note = title_note(active)
        if not note:
            self.status.hide()
            return
        fm = self.status.fontMetrics()
        text = fm.elidedText(note, Qt.TextElideMode.ElideMiddle, STATUS_MAX_PX)
        self.status.setText(text)
        self.status.setMinimumWidth(fm.horizontalAdvance(text) + 16)  # the rates and names give way, not this
        self.status.setToolTip(f"{note}\nthe live network is changed: open Tools > Interventions (i); K clears")
        self.status.show()

    def paint(self, res: FrameResult) -> None:
        self._set_status(res.interventions)
        if not self.panel.isVisible():
            return
        if res.predictions_clean is not None:
            self.compare.set_rows(res.predictions_clean, res.predictions)
        else:
            self.compare.set_rows(res.predictions, None)
        self._refresh_strip(res)

    def _lut(self, signed: bool):
        name = SIGNED_COLORMAP if signed else self.ctx.state.colormap
        if name not in self._luts:
            self._luts[name] = make_lut(name)
        return self._luts[name]

    def _refresh_strip(self, res: FrameResult | None) -> None:
        """The ranked tiles with the channels' current activation tiles."""
        r = self.ranking
        if r is None:
            self.strip.set_items([], None)
            return
        changed = {(iv.layer, c) for iv in self.interventions if iv.enabled for c in iv.channels}
        unit = self.ctx.state.unit
        self.strip.set_items(ranked_tiles(r, res, changed, self._lut, STRIP_MAX),
                             unit.channel if unit is not None and unit.layer == r.layer else None)

    # ------------------------------------------------------------------ model and layer changes
    def _layer_changed(self, *_args) -> None:
        """During a model switch the state moves to the new model's default layer before the worker gets its
        request: the interventions the new model cannot apply are dropped here, so that request carries none."""
        self._drop_unfit()

    def _drop_unfit(self) -> None:
        vm = self.ctx.vm
        keep = tuple(iv for iv in self.interventions if unit_problem(vm, iv) is None)
        if keep != self.interventions:
            dropped = len(self.interventions) - len(keep)
            self.set_all(keep)
            self.ctx.notify(f"{dropped} intervention{'s' if dropped != 1 else ''} removed: not in model {vm.name}",
                            "info", 6)

    def _model_changed(self, vm) -> None:
        self._drop_unfit()
        self.runner.forget()
        self._idle()
        self.gathered.clear()
        self.ranking, self.rank_res = None, None
        self.picker.set_categories(list(vm.categories))
        self.choose_class(None)
        self.tag.set_frame(None)
        self.strip.set_items([], None)
        self._sync()

    # ------------------------------------------------------------------ what the window gathers
    def open(self) -> None:
        self.show_panel("interventions")

    def panels(self) -> list[Panel]:
        return [Panel("interventions", "Interventions", self.panel, area="right", visible=False, tab_with=TOOLS)]

    def menu_items(self) -> list[MenuItem]:
        return [MenuItem("&Tools", self.action("Interventions (switch units off, rank units for a class)  (i)",
                                               self.open))]

    def keys(self) -> list[Key]:
        return [Key(("i",), self.open, "i", "interventions: switch units off / scale / clamp; rank the units of "
                                            "a class"),
                Key(("k",), self.knock_out_selected, "k / K",
                    "switch the selected unit off (again: back on) / clear every intervention"),
                Key(("K",), self.clear_all)]

    def status_widgets(self) -> list[QWidget]:
        return [self.status]

    def snapshot_state(self) -> dict:
        res = self.ctx.live.shown
        out: dict = {"interventions": [str(iv) for iv in self.interventions],
                     "intervened": title_note(self.interventions)}
        if res is not None and res.predictions_clean is not None:
            out["predictions_without_interventions"] = [{"index": i, "name": n, "prob": p}
                                                        for i, n, p in res.predictions_clean]
        if self.ranking is not None:
            r = self.ranking
            out["channel_ranking"] = {"layer": r.layer, "by": r.by, "class": r.target.index,
                                      "frame": self.rank_res.frame_id if self.rank_res is not None else None,
                                      "top": r.as_list(20)}
        return out

    def reset(self) -> None:
        """Esc empties the gathered set; the interventions stay (they are a choice, not a view: K clears them)."""
        self.forget_gathered()

    def shutdown(self) -> None:
        self.runner.cancel()
