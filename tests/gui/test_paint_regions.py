"""What a live frame repaints (issue 30: the window paints >= 0.9x the headless pipeline's rate): the widgets that
change every frame -- the grid's view, the colour bar, the unit's value, the latency -- are opaque, so painting
them never paints the panes behind them; the colour bar repaints only when its scale changes; the latency label
changes at most 4 times a second. And they still look as before: the style sheet's background, not garbage."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QObject, QRect
from PySide6.QtWidgets import QApplication, QWidget

from deepvis_app.gui.widgets.colorbar import ColorBar
from deepvis_app.gui.widgets.images import make_lut
from deepvis_app.gui.widgets.opaque import LiveLabel
from deepvis_app.gui.widgets.style import STYLE
from deepvis_app.values import Unit, ViewRequest

BACKGROUND = (0x14, 0x16, 0x1C)  # the style sheet's QWidget background


class PaintCounter(QObject):
    """Counts paint events per watched widget and keeps the rectangles each painted (in its own coordinates)."""

    def __init__(self, widgets: dict[str, QWidget]) -> None:
        super().__init__()
        self.names = {id(w): k for k, w in widgets.items()}
        self.counts: Counter[str] = Counter()
        self.rects: dict[str, list[QRect]] = {k: [] for k in widgets}
        for w in widgets.values():
            w.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt naming
        if event.type() == QEvent.Type.Paint and id(obj) in self.names:
            name = self.names[id(obj)]
            self.counts[name] += 1
            self.rects[name].extend(QRect(r) for r in event.region())
        return False

    def painted_over(self, name: str, widget: QWidget, target: QWidget) -> int:
        """How many of `widget`'s (called `name`) painted rectangles covered the middle of `target`."""
        middle = target.mapTo(widget, target.rect().center())
        return sum(r.contains(middle) for r in self.rects[name])


def pixels(widget: QWidget) -> np.ndarray:
    from PySide6.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = image.width(), image.height(), image.bytesPerLine()
    return np.frombuffer(image.constBits(), np.uint8).reshape(h, bpl)[:, :w * 3].reshape(h, w, 3).copy()


def test_a_live_frame_repaints_its_views_not_the_panes_behind_them(qtbot, make_window):
    """Each painted result repaints the grid's viewport; the main window, the central widget and the grid pane
    behind it are not painted for it (they were, every frame: four more fills of the grid's area)."""
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5), attribution=("guided",)),
                      fps=15)
    grid = win.feature("grid").pane
    qtbot.waitUntil(lambda: win.live.paint_count >= 3, timeout=30000)
    watched = {"window": win, "central": win.centralWidget(), "grid_pane": grid,
               "viewport": grid.view.viewport(), "value": win.feature("inspector").pane.value}
    counter = PaintCounter(watched)
    start = win.live.paint_count
    qtbot.waitUntil(lambda: win.live.paint_count >= start + 12, timeout=60000)
    qtbot.wait(50)  # the last frame's paint events
    frames = win.live.paint_count - start
    c = counter.counts
    assert c["viewport"] >= frames * 0.8, c  # the grid itself is repainted for (about) every frame
    assert c["value"] >= frames * 0.5, c  # the unit's live value too
    viewport, value = watched["viewport"], watched["value"]
    # and nothing behind them is painted where they are (other changes may still paint other parts of the window)
    for behind in ("window", "central", "grid_pane"):
        assert counter.painted_over(behind, watched[behind], viewport) == 0, (behind, c, frames)
    assert counter.painted_over("window", win, value) == 0, (c, frames)


def test_opaque_widgets_paint_the_style_sheets_background(qtbot):
    """An opaque widget draws what Qt no longer draws under it: the style sheet's background, everywhere it has
    no text or bar."""
    host = QWidget()
    host.setStyleSheet(STYLE)
    label = LiveLabel("max 12.3", host)
    bar = ColorBar(host)
    bar.set_scale(make_lut("viridis"), ("0", "9.5"))
    label.setGeometry(0, 0, 120, 24)
    bar.setGeometry(0, 30, 170, bar.height())
    qtbot.addWidget(host)
    host.resize(200, 80)
    host.show()
    qtbot.waitExposed(host)
    for widget in (label, bar):
        img = pixels(widget)
        h, w = img.shape[:2]
        # the bottom-left and top-right corners hold neither text nor the colour strip
        for y, x in ((h - 1, 0), (h - 1, w - 1)):
            assert tuple(img[y, x]) == BACKGROUND, (type(widget).__name__, y, x, img[y, x])
    strip = pixels(bar)[2]  # the colour strip's row: viridis from dark purple to yellow
    assert strip[0, 2] > 60 and strip[-1, 1] > 180  # blue end, then a yellow end
    assert label.text() == "max 12.3" and (pixels(label) != BACKGROUND).any(axis=-1).sum() > 20  # the text shows


def test_colour_bar_repaints_only_when_its_scale_changes(qtbot):
    bar = ColorBar()
    qtbot.addWidget(bar)
    bar.resize(170, bar.height())
    bar.show()
    qtbot.waitExposed(bar)
    lut = make_lut("viridis")
    counter = PaintCounter({"bar": bar})
    bar.set_scale(lut, ("0", "9.5"), "tip")
    qtbot.waitUntil(lambda: counter.counts["bar"] >= 1)
    painted = counter.counts["bar"]
    for _ in range(5):  # the same scale frame after frame
        bar.set_scale(lut, ("0", "9.5"), "tip")
        QApplication.processEvents()
    assert counter.counts["bar"] == painted
    bar.set_scale(lut, ("0", "9.7"), "tip")  # the layer's max moved
    qtbot.waitUntil(lambda: counter.counts["bar"] > painted)
    assert bar.labels == ("0", "9.7")


@pytest.mark.parametrize("gap_s, expected", [(0.0, 1), (0.3, 3)])
def test_latency_label_changes_at_most_four_times_a_second(qtbot, make_window, monkeypatch, gap_s, expected):
    """Frames painted back to back set the latency once per LATENCY_EVERY_S; spaced wider, every one shows."""
    from deepvis_app.gui.features import status

    win = make_window("demo", ViewRequest(layer="_blocks.3"), fps=15)
    qtbot.waitUntil(lambda: win.live.latest is not None, timeout=30000)
    win.live.worker.stop()  # the test's results only, from here
    feature = win.feature("status")
    label = feature.labels["latency"]
    clock = [time.monotonic() + 10.0]
    monkeypatch.setattr(status, "time", SimpleNamespace(monotonic=lambda: clock[0]))  # this module's clock only
    base = win.live.latest
    texts = []
    for i in range(3):
        clock[0] += gap_s
        res = dataclasses.replace(base, t_capture=base.t_done - 0.01 * (i + 2))
        feature._latency(res)
        texts.append(label.text())
    assert len(set(texts)) == expected, texts
    assert texts[0] == "latency 20 ms"
