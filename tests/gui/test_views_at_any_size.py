"""Views that must stay right at any window size (issue 25: ConvNeXt / ViT layers drawn right): the activation grid
keeps every tile border when shown smaller than 1:1 (384 ConvNeXt tiles read as 20 stripes before); the layer list
says units @ positions for channels-last and token layers and keeps long names' tails; every attention head is
inside its mosaic; the predictions plot shows only y labels that fit (or hides itself); the status bar's facts
are shortened, never cut through their letters."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QImage, QPainter

from deepvis_app.gui.widgets.attention_views import HeadsView
from deepvis_app.gui.widgets.grid_pane import GridPane
from deepvis_app.gui.widgets.layers_pane import ROLE_ELIDE, ROLE_LAYER, LayersPane, layer_shape_text
from deepvis_app.gui.widgets.predictions_pane import PredictionsPane
from deepvis_app.render import render_grid
from deepvis_app.values import LayerInfo, Layout


def rgb(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = image.width(), image.height(), image.bytesPerLine()
    return np.frombuffer(image.constBits(), np.uint8).reshape(h, bpl)[:, :w * 3].reshape(h, w, 3).copy()


def runs(indices: np.ndarray) -> list[int]:
    """Lengths of the runs of consecutive indices."""
    if not len(indices):
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1)
    return np.diff(np.concatenate([[-1], breaks, [len(indices) - 1]])).tolist()


@pytest.fixture
def grid_pane(qtbot):
    import pyqtgraph as pg

    pg.setConfigOptions(imageAxisOrder="row-major")
    pane = GridPane()
    qtbot.addWidget(pane)
    return pane


@pytest.mark.parametrize("size", [(420, 460), (300, 340), (560, 600)])
def test_every_tile_border_shows_when_the_grid_is_scaled_down(qtbot, grid_pane, size):
    """ConvNeXt-T features.1.0.block.4: 384 tiles of 56x56 (20 x 20, 1-px borders) in a few hundred pixels: every
    row and column of tiles is separated on screen, by a line one or two pixels wide."""
    grid = render_grid(torch.rand(384, 56, 56, generator=torch.Generator().manual_seed(0)) * 0.2 + 0.8)
    lay = grid.layout
    assert (lay.rows, lay.cols, lay.pad) == (20, 20, 1)
    grid_pane.resize(*size)
    grid_pane.show()
    grid_pane.show_grid(grid, "features.1.0.block.4")
    qtbot.waitExposed(grid_pane)
    qtbot.wait(20)
    lum = rgb(grid_pane.view.viewport().grab().toImage()).astype(int).sum(axis=2)
    bright, dark = lum > 300, lum < 150  # tiles are >= 0.8 of the colormap: bright; borders are near black
    ys, xs = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    shown = dark[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]  # the tiles' area on screen
    assert shown.shape[1] < lay.width / 2  # shown well under 1:1: the image alone would lose most borders
    columns = runs(np.flatnonzero(shown[2:8].all(axis=0)))  # dark columns through the first row of tiles
    rows = runs(np.flatnonzero(shown[:, 2:8].all(axis=1)))  # dark rows through the first column of tiles
    assert len(columns) == lay.cols - 1 and len(rows) == lay.rows - 1, (columns, rows)
    assert max(columns + rows) <= 2
    assert grid_pane.separators.drawn == lay.rows + lay.cols + 2


def test_no_separators_drawn_over_a_grid_shown_larger_than_1_to_1(qtbot, grid_pane):
    grid = render_grid(torch.rand(6, 8, 8, generator=torch.Generator().manual_seed(0)))
    grid_pane.resize(500, 540)
    grid_pane.show()
    grid_pane.show_grid(grid, "small")
    qtbot.waitExposed(grid_pane)
    qtbot.wait(20)
    grid_pane.view.viewport().grab()
    assert grid_pane.separators.drawn == 0  # every border pixel reaches the screen by itself


def test_layer_list_says_units_at_positions_from_the_layout(qtbot, tmp_path):
    """A channels-last layer (H x W x C) reads C @ HxW; a ViT-style token layer (1 class token + 8x8 patches)
    reads C @ 8x8 +1; the tooltip keeps the raw shape."""
    import layout_nets

    from deepvis_app.zoo import load_model

    assert layer_shape_text(LayerInfo("x", "Linear", (56, 56, 384), Layout.CHANNELS_LAST)) == "384 @ 56x56"
    assert layer_shape_text(LayerInfo("x", "MLP", (197, 768), Layout.TOKENS, 1, (14, 14))) == "768 @ 14x14 +1"
    assert layer_shape_text(LayerInfo("x", "MLP", (50, 64), Layout.TOKENS)) == "64 @ 50 tokens"
    assert layer_shape_text(LayerInfo("x", "Conv2d", (96, 56, 56))) == "96 @ 56x56"
    assert layer_shape_text(LayerInfo("x", "Linear", (1000,), Layout.VECTOR)) == "1000"
    pane = LayersPane()
    qtbot.addWidget(pane)
    rows = {}
    for builder in ("channels_last", "tokens"):
        vm = load_model(layout_nets.write_spec(tmp_path, builder), device="cpu")
        pane.set_model(vm)
        for i in range(pane.tree.topLevelItemCount()):
            item = pane.tree.topLevelItem(i)  # read now: the next model's list deletes the items
            rows[(builder, item.data(0, ROLE_LAYER))] = (item.text(1), item.toolTip(1))
    assert rows[("channels_last", "lin")][0] == "6 @ 32x32"  # not "32 @ 32x6"
    assert rows[("channels_last", "conv")][0] == "4 @ 32x32"
    assert "output 32 x 32 x 6" in rows[("channels_last", "lin")][1]
    assert rows[("tokens", "mix")][0] == "8 @ 8x8 +1"  # not "65 x 8"
    assert rows[("tokens", "head")][0] == "5"


def test_long_layer_names_keep_their_tails(qtbot):
    """Two names that differ only near their end still differ on screen in a narrow pane (the start is shortened);
    a curated title keeps its start."""
    names = [f"encoder.layers.encoder_layer_{i}.mlp.linear_fc2" for i in (3, 7)]
    infos = [LayerInfo(n, "Linear", (197, 768), Layout.TOKENS, 1, (14, 14)) for n in names]
    shown = [SimpleNamespace(name=names[0], title="block 4 MLP output")]
    vm = SimpleNamespace(shown_layers=shown, layers=names, layer_info=infos,
                         info=lambda name: infos[names.index(name)])
    pane = LayersPane()
    qtbot.addWidget(pane)
    pane.set_model(vm)
    pane.resize(200, 300)  # narrow: the shape column goes, the names are still cut
    pane.show()
    qtbot.waitExposed(pane)
    tree = pane.tree
    a, b = (tree.visualItemRect(tree.topLevelItem(i)) for i in (2, 3))  # after the curated row and "all N layers"
    shot = tree.viewport().grab()
    fm = tree.fontMetrics()
    assert fm.horizontalAdvance(names[0]) > a.width()  # the names do not fit: they are shortened

    def row(rect: QRect) -> np.ndarray:
        return rgb(shot.copy(rect.adjusted(0, 1, 0, -1)).toImage())

    assert not np.array_equal(row(a), row(b))  # cut from the end, both would read "encoder.layers.enc..."
    assert tree.topLevelItem(3).toolTip(0).startswith(names[1])
    assert Qt.TextElideMode(tree.topLevelItem(0).data(0, ROLE_ELIDE)) is Qt.TextElideMode.ElideRight  # a title


@pytest.mark.parametrize("size", [(353, 123), (250, 90), (640, 330), (120, 300)])
def test_every_attention_head_is_inside_the_mosaic(qtbot, size):
    """ViT-B's 12 heads at the sizes the panel gets at 1600x1000 and 1024x700 (and odd ones): every tile lies
    inside the widget with a margin, none overlaps another, and each is painted to its last column and row."""
    view = HeadsView()
    qtbot.addWidget(view)
    colors = [(20 * i + 15, 255 - 15 * i, (97 * i) % 256) for i in range(12)]
    view.set_tiles([np.full((112, 112, 3), c, np.uint8) for c in colors], [""] * 12)
    view.resize(*size)
    view.show()
    qtbot.waitExposed(view)
    rects = view.tile_rects()
    inner = view.rect().toRectF().adjusted(2, 2, -2, -2)  # a last column flush with the edge reads as cut off
    assert len(rects) == 12 and all(inner.contains(r) and r.width() >= 8 for r in rects), (rects, inner)
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    shot = rgb(view.grab().toImage())
    for r, c in zip(rects, colors, strict=True):
        last_x, last_y = int(r.right()) - 1, int(r.bottom()) - 1
        assert tuple(shot[last_y, last_x]) == c and tuple(shot[int(r.top()), int(r.left())]) == c


def tick_texts(pane: PredictionsPane) -> list[tuple[str, float, float]]:
    """(text, top, bottom) of each y label pyqtgraph draws now."""
    axis = pane.plot.getAxis("left")
    image = QImage(10, 10, QImage.Format.Format_RGB32)
    p = QPainter(image)
    try:
        _axis, _ticks, texts = axis.generateDrawSpecs(p)
    finally:
        p.end()
    return sorted((t, r.top(), r.bottom()) for r, _flags, t in texts)


@pytest.mark.parametrize("height", [170, 200, 240, 300, 420])
def test_prediction_plot_shows_only_labels_that_fit(qtbot, height):
    pane = PredictionsPane()
    qtbot.addWidget(pane)
    for k in range(30):
        pane.add([(1, "beacon", 0.4), (2, "park bench", 0.3), (3, "mitten", 0.1)], t=k * 0.2)
    pane.refresh()
    pane.resize(360, height)
    pane.show()
    qtbot.waitExposed(pane)
    qtbot.wait(30)
    if height < 190:  # too low for a readable plot: hidden, the top rows take the room
        assert not pane.plot.isVisible() and pane.bars.height() >= height - 10
        return
    assert pane.plot.isVisible()
    texts = tick_texts(pane)
    assert [t for t, _a, _b in sorted(texts, key=lambda x: -x[1])] == [f"{v:g}" for v in pane.y_ticks]
    assert pane.y_ticks[0] == 0 and pane.y_ticks[-1] == 1 and len(pane.y_ticks) >= 2  # 0 and 1 are labelled
    spans = sorted((top, bottom) for _t, top, bottom in texts)
    assert all(b0 <= t1 for (_t0, b0), (t1, _b1) in zip(spans, spans[1:], strict=False)), spans  # none touch
    if height >= 300:
        assert len(pane.y_ticks) == 6  # a roomy plot keeps the 0.2 steps


def test_prediction_curves_follow_the_rows_and_redraw_only_when_asked(qtbot):
    """The history plot draws the top three classes, each in its row's colour; `refresh(curves=False)` moves the
    bars only; a curve's pen is made again only when its class changed rank (a new pen re-renders the curve)."""
    pane = PredictionsPane()
    qtbot.addWidget(pane)
    rows = [(1, "beacon", 0.5), (2, "park bench", 0.3), (3, "mitten", 0.1)]
    for k in range(10):
        pane.add(rows, t=k * 0.1)
    pane.refresh()
    pens = {i: c.opts["pen"] for i, c in pane.curves.items()}
    assert set(pens) == {1, 2, 3} and pens[1].color() != pens[2].color()
    assert list(pane.curves[1].getData()[1]) == [0.5] * 10
    pane.add(rows, t=1.0)
    pane.refresh()
    assert {i: c.opts["pen"] for i, c in pane.curves.items()} == pens  # same pen objects: nothing re-rendered
    assert len(pane.curves[1].getData()[1]) == 11
    swapped = [(2, "park bench", 0.6), (1, "beacon", 0.2), (3, "mitten", 0.1)]
    pane.add(swapped, t=1.1)
    pane.refresh(curves=False)
    assert pane.bars.rows == swapped and len(pane.curves[1].getData()[1]) == 11  # bars moved, curves did not
    pane.refresh()
    assert pane.curves[2].opts["pen"].color() == pens[1].color()  # the new first row took the first colour
    assert pane.curves[1].opts["pen"].color() == pens[2].color() and pane.curves[3].opts["pen"] is pens[3]


def test_status_facts_are_shortened_not_cut_on_a_small_screen(qtbot, make_window, tmp_path):
    """At 983x658 (a 1024x700 screen) the status bar's facts keep their ends and a dozen letters: a long source name
    is shortened at its start ("...camera_roll.png"; Qt cut "source chelsea.png" to "helsea.png", clipping letters),
    the model keeps "model", the device is never shortened."""
    import cv2
    import skimage.data

    from deepvis_app.gui.widgets.elided_label import ElidedLabel

    from .test_window import WAIT

    photo = tmp_path / "chelsea_the_cat_on_a_rather_long_file_name_from_a_camera_roll.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    win = make_window(str(photo))
    win.resize(983, 658)
    qtbot.waitUntil(lambda: win.size().toTuple() == (983, 658), timeout=WAIT)
    qtbot.wait(50)
    labels = win.feature("status").labels
    for key in ("model", "device", "source"):
        label = labels[key]
        assert label.isVisible() and label.width() > 0, key
        if isinstance(label, ElidedLabel):
            shown = label.shown_text()
            assert label.fontMetrics().horizontalAdvance(shown) <= label.contentsRect().width()
            assert shown[-5:] == label.text()[-5:] and len(shown) >= 10, (shown, label.text())
        else:
            assert label.sizeHint().width() <= label.width(), (key, label.text())
    assert labels["device"].text() == "cpu"
    assert labels["source"].shown_text().startswith("\u2026")  # it did not fit: shortened at its start, not cut
    assert labels["model"].shown_text().startswith("model")
