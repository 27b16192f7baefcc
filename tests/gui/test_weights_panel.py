"""The Weights panel: the first conv's filters in colour, trained next to a seeded random twin (noise), and a
deeper layer's filters as grey tiles with the caveat, the selected unit's filter first."""

from __future__ import annotations

import numpy as np

from deepvis_app import filters as F
from deepvis_app.pipeline import Unit, ViewRequest

from .test_window import WAIT


def test_trained_vs_random_filters(qtbot, make_window, vm):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 5)))
    win.feature("inspector").set_backprop_mode("off")
    feat = win.feature("weights")
    next(a for a in win.menus["&Tools"].actions() if a.text().startswith("Weights")).trigger()
    assert win.docks["weights"].isVisible()
    stem = F.filter_tiles(vm, F.first_conv(vm))
    assert np.array_equal(feat.trained.array, stem.image) and stem.kind == "rgb"
    qtbot.waitUntil(lambda: feat.random.array is not None, timeout=WAIT)
    twin = F.filter_tiles(F.random_twin(vm, seed=0), F.first_conv(vm))
    assert np.array_equal(feat.random.array, twin.image)
    assert not np.array_equal(feat.random.array, feat.trained.array)
    assert "_conv_stem" in feat.header.text() and not feat.caveat.isVisible()

    feat.first_box.setChecked(False)  # the shown layer's conv: grey tiles, the selected unit's filter first
    conv = F.conv_for_layer(vm, "_blocks.3")
    deep = F.filter_tiles(vm, conv, filters=[(5 + k) % 40 for k in range(8)])
    assert deep.kind == "grey" and deep.filters[0] == 5
    assert np.array_equal(feat.trained.array, deep.image)
    assert feat.caveat.isVisible() and "feature maps" in feat.caveat.text()
