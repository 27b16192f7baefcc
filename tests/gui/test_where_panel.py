"""The "where it looks" panel on a frozen frame: the occlusion map of the top class is exactly the core's (coarse
pass first, then the fine one), drawn red where covering hurts; saliency and the GrabCut cut-out follow."""

from __future__ import annotations

import numpy as np
import torch

from deepvis_app.occlusion import OcclusionTarget, occlusion_map
from deepvis_app.pipeline import Unit, ViewRequest

from .test_window import WAIT, wait_result


def test_occlusion_saliency_and_cutout_of_the_shown_frame(qtbot, make_window, vm, ref_vm):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    qtbot.keyClick(win, "f")  # freeze: study one frame
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    feat = win.feature("where")
    feat.live_box.setChecked(False)
    feat.window.setValue(56)
    feat.stride.setValue(28)
    seen_strides = []
    # the panel computes only while it is visible: open it from the Tools menu
    next(a for a in win.menus["&Tools"].actions() if a.text().startswith("Where it looks")).trigger()
    qtbot.waitUntil(lambda: (feat.map is not None and seen_strides.append(feat.map.stride) is None
                             and feat.map.final), timeout=WAIT * 3)
    m = feat.map
    res = win.live.shown
    top = int(res.predictions[0][0])
    assert m.target == OcclusionTarget(cls=top) and m.stride == 28 and 56 in seen_strides
    ref = occlusion_map(ref_vm, res.image, top, window=56, stride=28)
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
    assert state["occlusion"]["stride"] == 28 and state["occlusion"]["done"] == m.total
