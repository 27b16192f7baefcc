"""The "where it looks" panel on a frozen frame: the occlusion map of the top class is exactly the core's (coarse
pass first, then the fine one; a stride that does not divide size - window, so the last windows are cut at the
image edge as in Captum), drawn red where covering hurts; saliency and the GrabCut cut-out follow."""

from __future__ import annotations

import numpy as np
import torch

from deepvis_app.occlusion import occlusion_map
from deepvis_app.values import ClassTarget, Unit, ViewRequest

from .test_window import WAIT, wait_result


def test_occlusion_saliency_and_cutout_of_the_shown_frame(qtbot, make_window, vm, ref_vm):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    qtbot.keyClick(win, "f")  # freeze: study one frame
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    feat = win.feature("where")
    feat.live_box.setChecked(False)
    feat.window.setValue(56)
    feat.stride.setValue(30)
    seen_strides = []
    # the panel computes only while it is visible: open it from the Tools menu
    next(a for a in win.menus["&Tools"].actions() if a.text().startswith("Where it looks")).trigger()
    qtbot.waitUntil(lambda: (feat.map is not None and seen_strides.append(feat.map.stride) is None
                             and feat.map.final), timeout=WAIT * 3)
    m = feat.map
    res = win.live.shown
    top = int(res.predictions[0][0])
    assert m.target == ClassTarget(top) and m.stride == 30 and 60 in seen_strides
    assert m.ys == m.xs == list(range(0, 181, 30))  # the last window covers 180..223: the edge is occluded too
    ref = occlusion_map(ref_vm, res.image, top, window=56, stride=30)
    assert torch.allclose(m.scores, ref.scores, atol=1e-4) and abs(m.base_score - ref.base_score) < 1e-5
    # red (R > B) where covering hurts most
    drop = m.drop().numpy()
    i, j = np.unravel_index(np.nanargmax(drop), drop.shape)
    y, x = m.ys[i] + 28, m.xs[j] + 28
    pixel = feat.occ.array[y, x].astype(int)
    assert drop[i, j] > 0 and pixel[0] > pixel[2]
    assert vm.categories[top] in feat.occ_info.text() and feat.occ_bar.labels[0].startswith("-")
    assert feat.labels_canvas.array.shape[:2] == m.scores.shape
    qtbot.waitUntil(lambda: feat.segmentation is not None, timeout=WAIT * 2)
    seg = feat.segmentation
    assert 0.02 < seg.area < 0.95 and feat.cut.array.shape == res.image.shape
    assert np.array_equal(feat.cut.array[seg.mask], res.image[seg.mask])
    state = win.feature("snapshots").state_dict()
    assert state["occlusion"]["stride"] == 30 and state["occlusion"]["done"] == m.total
