"""The status bar's facts: model (and whether its weights are random), device, source, the smoothed capture /
inference / attribution rates and the newest frame's latency (at most 4 times a second: read, not flicker, and a
label repainted 30 times a second costs the GUI thread). Fixed-width labels, so numbers do not jump.

On a small screen the model and source names give way first, shortened where they say least ("model
convnex...ndom weights)", "...chelsea.png"; full text in the tooltip), never cut through their letters; the device
name is short and never shortened."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QSizePolicy

from ...pipeline import FrameResult
from ..feature import Feature
from ..widgets.opaque import LiveLabel
from ..widgets.shortened_label import ShortenedLabel

RATE_LABELS = ("capture", "inference", "attribution")
ROOMY = ("model", "device", "source")  # as wide as their texts; model and source may shrink (elided)
SHRINKS = {"model": Qt.TextElideMode.ElideMiddle,  # "model convnex...ndom weights)"
           "source": Qt.TextElideMode.ElideLeft}  # "...chelsea.png": the file's own name
MIN_CHARS = 14  # what a shortened model or source name keeps, about
PAD = 16  # px beside a rate's text (the style sheet pads labels by 12): a small screen has no room to spare
LATENCY_EVERY_S = 0.25  # the latency label shows the newest painted frame's, this often


class StatusFeature(Feature):
    name = "status"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.labels: dict[str, QLabel] = {}
        self._latency_at = -LATENCY_EVERY_S  # when the latency label was last set (monotonic s)
        for key in (*ROOMY, *RATE_LABELS, "latency"):
            label = ShortenedLabel(mode=SHRINKS[key]) if key in SHRINKS else LiveLabel("") if key == "latency" \
                else QLabel("")
            label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.labels[key] = label
        for key in SHRINKS:  # give way (shortened) when the bar is full; else as wide as their texts
            self.labels[key].setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        # never shortened: exactly its text's width, padding included (the style sheet's, known once shown)
        self.labels["device"].setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        metrics = self.labels["capture"].fontMetrics()
        for key, sample in (("capture", "capture 00.0 fps"), ("inference", "inference 00.0 fps"),
                            ("attribution", "attribution 00.0 fps"), ("latency", "latency 00000 ms")):
            # fixed in both directions: a label whose text changes every frame then asks for no new layout
            self.labels[key].setFixedSize(metrics.horizontalAdvance(sample) + PAD, self.labels[key].sizeHint().height())
        ctx.live.stats_changed.connect(self._rates)
        ctx.live.painted.connect(self._latency)
        ctx.live.model_changed.connect(lambda _vm: self._facts())
        ctx.live.source_changed.connect(lambda _src: self._facts())
        self._facts()
        self._rates(ctx.live.stats)

    def _facts(self) -> None:
        vm = self.ctx.vm
        random = " (random weights)" if str(vm.weights) == "random" else ""
        src = self.ctx.live.source
        facts = {"model": f"model {vm.name}{random}", "device": str(vm.device),
                 "source": f"source {src.name}" if src is not None else ""}
        for key, text in facts.items():
            label = self.labels[key]
            label.setText(text)
            label.setToolTip(text)
            if key in SHRINKS:  # shortened, but never below about a dozen letters ("model con...weights)")
                fm = label.fontMetrics()
                label.setMinimumWidth(min(fm.horizontalAdvance(text), fm.averageCharWidth() * MIN_CHARS) + PAD)

    def _rates(self, stats: dict) -> None:
        for key in RATE_LABELS:
            self.labels[key].setText(f"{key} {stats[key + '_fps']:.1f} fps")

    def _latency(self, res: FrameResult) -> None:
        now = time.monotonic()
        if now - self._latency_at < LATENCY_EVERY_S:
            return
        self._latency_at = now
        t = res.timings
        detail = f"forward {t.get('forward', 0) * 1000:.0f}"
        if "attribution" in t:
            detail += f", backprop {t['attribution'] * 1000:.0f}"
        label = self.labels["latency"]
        label.setText(f"latency {res.latency * 1000:.0f} ms")
        label.setToolTip(f"{detail} ms\n" + "\n".join(f"{k}: {v * 1000:.1f} ms" for k, v in t.items()))

    def status_widgets(self) -> list:
        return list(self.labels.values())

    def snapshot_state(self) -> dict:
        return {"stats": dict(self.ctx.live.stats)}
