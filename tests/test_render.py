"""Grid rendering: tile placement, normalization modes, gamma, signed layers, FC layers, hit-testing."""

from __future__ import annotations

import numpy as np
import torch

from deepvis_app.layouts import as_maps
from deepvis_app.render import grid_layout, render_grid, top_predictions
from deepvis_app.values import LayerInfo, Layout


def test_layer_norm_tiles_and_borders():
    act = torch.tensor([0.0, 1.0, 2.0, 4.0]).view(4, 1, 1).expand(4, 2, 2).clone()
    g = render_grid(act, norm="layer")
    assert (g.layout.rows, g.layout.cols) == (2, 2)
    assert g.image.shape == (2 * 3 + 1, 2 * 3 + 1)
    # tile value = 1 + 254 * v / max
    for ch, v in enumerate([0.0, 1.0, 2.0, 4.0]):
        y, x = g.layout.tile_origin(ch)
        assert np.all(g.image[y:y + 2, x:x + 2] == round(1 + 254 * v / 4))
    assert g.image[0].max() == 0 and g.image[:, 3].max() == 0  # borders
    assert np.allclose(g.channel_max, [0, 1, 2, 4])


def test_channel_norm_and_gamma():
    act = torch.tensor([1.0, 4.0]).view(2, 1, 1) * torch.tensor([[0.25, 1.0]]).view(1, 1, 2)
    g = render_grid(act, norm="channel")
    y, x = g.layout.tile_origin(0)
    assert list(g.image[y, x:x + 2]) == [round(1 + 254 * 0.25), 255]
    y, x = g.layout.tile_origin(1)
    assert list(g.image[y, x:x + 2]) == [round(1 + 254 * 0.25), 255]
    boosted = render_grid(act, norm="channel", gamma=0.5)
    y, x = boosted.layout.tile_origin(0)
    assert boosted.image[y, x] == round(1 + 254 * 0.5)  # 0.25 ** 0.5


def test_signed_layers_map_zero_to_gray():
    act = torch.tensor([-2.0, 0.0, 2.0]).view(3, 1, 1)
    g = render_grid(act, norm="layer")
    values = [g.image[g.layout.tile_origin(c)] for c in range(3)]
    assert g.signed and values == [1, 128, 255]


def test_fc_layer_becomes_enlarged_tiles():
    fc = LayerInfo("fc", "Linear", (10,), Layout.VECTOR)
    g = render_grid(as_maps(torch.arange(10.0)[None], fc)[0], min_tile=4)
    assert g.layout.channels == 10 and (g.layout.tile_h, g.layout.tile_w) == (4, 4)
    y, x = g.layout.tile_origin(9)
    assert np.all(g.image[y:y + 4, x:x + 4] == 255)


def test_hit_testing_round_trips():
    layout = grid_layout(37, 5, 7, pad=1)
    assert layout.rows * layout.cols >= 37
    for ch in range(37):
        y, x = layout.tile_origin(ch)
        assert layout.channel_at(y + 2, x + 3) == ch
    assert layout.channel_at(0, 0) is None
    assert layout.channel_at(layout.height - 2, layout.width - 2) in (None, 36)


def test_top_predictions():
    logits = torch.tensor([0.0, 2.0, 1.0])
    preds = top_predictions(logits, ["a", "b", "c"], k=2)
    p = torch.softmax(logits, 0)
    assert [(i, n) for i, n, _ in preds] == [(1, "b"), (2, "c")]
    assert abs(preds[0][2] - float(p[1])) < 1e-6
