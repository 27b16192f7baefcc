"""The attention panel on DeiT-tiny (random weights): one labelled picture per head (three), each the head's map of
the frame's attention over the frame; the rollout over the frame, where a click on a patch makes it the query (and
the class-token button undoes it); the class token's features as a row apart from the grid; attention computed
only while the panel is shown. On a CNN the panel says why it has nothing to show."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from deepvis_app.gui.features.attention import head_maps, head_pictures
from deepvis_app.render import overlay_heat
from deepvis_app.values import ViewRequest

from .test_window import WAIT, wait_result


@pytest.fixture(scope="module")
def deit():
    from deepvis_app.zoo import load_model

    return load_model("deit_tiny", weights="random", device="cpu")


@pytest.fixture
def deit_window(make_window, deit):
    return make_window(request=ViewRequest(layer="blocks.5.mlp.act"), fps=6.0, model=deit)


def test_heads_rollout_patch_query_and_class_token_row(qtbot, deit_window, deit):
    win = deit_window
    win.feature("inspector").set_backprop_mode("off")
    feat = win.feature("attention")
    assert feat.supported and not win.state.attention  # nothing computed while the panel is hidden
    blocks = [feat.block_box.itemData(i) for i in range(feat.block_box.count())]
    assert blocks[0] == "" and blocks[1:] == [f"blocks.{i}.attn" for i in range(12)]
    next(a for a in win.menus["&Tools"].actions() if a.text().startswith("Attention")).trigger()
    assert feat.panel.isVisible() and win.state.attention
    res = wait_result(qtbot, win, lambda r: r.attention is not None)
    qtbot.waitUntil(lambda: feat.heads.count == 3, timeout=WAIT)
    res = win.live.shown
    att = res.attention
    assert att.heads.layout.channels == 3 and att.block == "blocks.11.attn" and att.query == "class token"
    drawn = feat.heads_res  # the mosaic is redrawn at most every 0.1 s: the frame it shows
    assert feat.heads.labels == [f"head {i}  max {drawn.attention.heads.channel_max[i]:.3f}" for i in range(3)]
    rects = feat.heads.tile_rects()
    assert len(rects) == 3 and all(r.width() > 30 and r.height() > 30 for r in rects)
    assert not any(a.intersects(b) for i, a in enumerate(rects) for b in rects[i + 1:])
    maps = head_maps(att.heads)
    assert [m.shape for m in maps] == [(14, 14)] * 3 and all(m.max() == 255 for m in maps)
    assert all(np.array_equal(a, b) for a, b in zip(feat.heads.arrays, head_pictures(drawn.image,
                                                                                      drawn.attention.heads),
                                                     strict=True))
    assert np.array_equal(feat.rollout.array, overlay_heat(res.image, att.rollout))
    # the class token's features: one row of 768 values, apart from the grid (which shows the 14x14 patches)
    assert res.prefix.shape == (1, 768) and res.grid.layout.channels == 768
    assert feat.strip.values.shape == (1, 768) and feat.strip.names == ["class token"]
    assert feat.strip.title.startswith("class token: 768 features of blocks.5.mlp.act")
    assert np.array_equal(feat.strip.values, res.prefix)

    # a click on a patch of the rollout makes it the query
    qtbot.waitUntil(lambda: feat.rollout.has_image, timeout=WAIT)
    point = feat.rollout.point_at((10 + 0.5) / 14, (3 + 0.5) / 14)
    qtbot.mouseClick(feat.rollout, Qt.MouseButton.LeftButton, pos=QPoint(round(point.x()), round(point.y())))
    assert win.state.attention_patch == (3, 10) and feat.query_label.text() == "query: patch (3, 10)"
    res = wait_result(qtbot, win, lambda r: r.attention is not None)
    assert res.attention.query == "patch (3, 10)"
    assert feat.rollout.marker == pytest.approx((10.5 / 14, 3.5 / 14))
    feat.block_box.setCurrentIndex(feat.block_box.findData("blocks.2.attn"))
    assert win.state.attention_block == "blocks.2.attn"
    res = wait_result(qtbot, win, lambda r: r.attention is not None)
    assert res.attention.block == "blocks.2.attn"
    qtbot.mouseClick(feat.class_button, Qt.MouseButton.LeftButton)
    assert win.state.attention_patch is None and not feat.class_button.isEnabled()
    # hidden: the worker stops computing it
    win.docks["attention"].hide()
    assert not win.state.attention
    wait_result(qtbot, win, lambda r: r.attention is None)


def test_panel_says_why_on_a_cnn(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3"))
    feat = win.feature("attention")
    feat.open()
    assert not feat.supported and not win.state.attention and not feat.block_box.isEnabled()
    assert "no self-attention blocks" in feat.note.text() and "deit_tiny" in feat.note.text()
    res = wait_result(qtbot, win, lambda r: True)
    assert res.attention is None and res.prefix is None
    assert not feat.strip.isVisibleTo(feat.panel)  # no token layers: no class token row at all
