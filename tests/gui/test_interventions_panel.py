"""The interventions panel on a real photo (scikit-image's coffee, a still source): switching units off changes the
predictions the window shows exactly as a hand-written forward hook on another copy of the model does, the real
network's top-5 stays beside them, "switch off top N" takes rank_gradxact's best N on the ranked frame, a ranked
tile selects its unit, the ablation ranking equals the core's, and K clears everything."""

from __future__ import annotations

import cv2
import pytest
import torch
from PySide6.QtCore import Qt

from deepvis_app.interventions import Intervention, rank_ablation, rank_gradxact
from deepvis_app.values import ClassTarget, Unit, ViewRequest

from .test_window import WAIT, wait_result

LAYER = "_blocks.10"
ESPRESSO_UNITS = (102, 48, 36, 101, 71, 56, 1, 79, 43, 39)  # docs/interventions.md: together they carry "espresso"


@pytest.fixture(scope="module")
def coffee(tmp_path_factory) -> str:
    import skimage.data

    path = tmp_path_factory.mktemp("photos") / "coffee.png"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR))
    return str(path)


def hooked_top5(vm, image, layer: str, channels) -> list[tuple[int, float]]:
    """The top-5 (index, prob) of `vm` on `image` with `channels` of `layer` zeroed by a plain forward hook."""
    module = dict(vm.net.named_modules())[layer]
    idx = torch.tensor(channels)
    handle = module.register_forward_hook(lambda _m, _i, out: out.clone().index_fill_(1, idx, 0.0))
    try:
        with torch.no_grad():
            probs = vm.net(vm.preprocess.to_tensor(image)).softmax(1)[0]
    finally:
        handle.remove()
    p, i = probs.topk(5)
    return list(zip(i.tolist(), p.tolist(), strict=True))


def plain_top5(vm, image) -> list[tuple[int, float]]:
    with torch.no_grad():
        p, i = vm.net(vm.preprocess.to_tensor(image)).softmax(1)[0].topk(5)
    return list(zip(i.tolist(), p.tolist(), strict=True))


def same_rows(rows, ref, tol: float) -> bool:
    return [r[0] for r in rows] == [c for c, _ in ref] and all(abs(r[2] - p) <= tol for r, p in
                                                                  zip(rows, (p for _, p in ref), strict=True))


def open_panel(qtbot, win):
    qtbot.keyClick(win, "i")
    feat = win.feature("interventions")
    qtbot.waitUntil(feat.panel.isVisible, timeout=WAIT)
    return feat


def test_toggling_interventions_changes_the_shown_predictions_beside_the_real_ones(qtbot, make_window, ref_vm,
                                                                                  coffee):
    win = make_window(coffee, ViewRequest(layer=LAYER, unit=Unit(LAYER, 102)))
    win.feature("inspector").set_backprop_mode("off")
    st = win.state
    base = wait_result(qtbot, win, lambda r: bool(r.predictions) and r.layer == LAYER)
    assert base.predictions_clean is None and base.interventions == ()
    real = plain_top5(ref_vm, base.image)
    assert ref_vm.categories[real[0][0]] == "espresso"
    feat = open_panel(qtbot, win)
    assert not feat.status.isVisible()

    # "off" on the selected unit, then the other nine units gathered by shift-clicks on the grid's tiles
    qtbot.mouseClick(feat.off_button, Qt.MouseButton.LeftButton)
    assert st.interventions == (Intervention(LAYER, (102,), "zero"),)
    grid = win.feature("grid").pane
    for c in ESPRESSO_UNITS[1:]:
        qtbot.mouseClick(grid.view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier,
                         grid.tile_center(c))
    assert feat.gathered == {LAYER: set(ESPRESSO_UNITS)}  # 102 was the selected unit when the set started
    qtbot.mouseClick(feat.off_button, Qt.MouseButton.LeftButton)
    assert st.interventions[1] == Intervention(LAYER, ESPRESSO_UNITS, "zero") and not feat.gathered
    feat.remove(0)  # 102 alone is part of the ten
    ten = st.interventions
    assert ten == (Intervention(LAYER, ESPRESSO_UNITS, "zero"),)

    res = wait_result(qtbot, win, lambda r: r.interventions == ten and r.predictions_clean is not None)
    hooked = hooked_top5(ref_vm, res.image, LAYER, list(ESPRESSO_UNITS))
    assert ref_vm.categories[hooked[0][0]] != "espresso"  # without those ten units it is no longer an espresso
    assert same_rows(res.predictions, hooked, 2e-3)  # the live (channels-last) copy: float rounding only
    assert same_rows(res.predictions_clean, real, 2e-3)
    assert [r[0] for r in res.predictions_clean] == [r[0] for r in base.predictions]
    assert all(abs(a[2] - b[2]) < 1e-5 for a, b in zip(res.predictions_clean, base.predictions, strict=True))
    # the panel shows both, with the change of a class that is in both top-5 lists
    qtbot.waitUntil(lambda: feat.compare.intervened == res.predictions, timeout=WAIT)
    assert feat.compare.real == res.predictions_clean
    clean = {i: p for i, _n, p in res.predictions_clean}
    for (i, text), (_i, _n, p) in zip(feat.compare.deltas(), res.predictions, strict=True):
        assert text == (f"{(p - clean[i]) * 100:+.1f}" if i in clean else "new")
    # said wherever one looks: the panel, its dock tab, the status bar; and snapshots keep the written form
    assert feat.note.text().count("[intervened: _blocks.10 1,36,39,43,48,56,71,79,101,102 zeroed]") == 1
    assert win.docks["interventions"].windowTitle() == "Interventions \u00b7 1 on"
    assert feat.status.isVisible() and feat.status.text().startswith("[intervened")
    snap = win.feature("snapshots").state_dict()
    assert snap["interventions"] == ["_blocks.10:1,36,39,43,48,56,71,79,101,102:zero"]
    assert [r["index"] for r in snap["predictions_without_interventions"]] == [c for c, _ in real]

    # unticking the box switches it off (kept in the list): the real network's predictions again
    feat.listing.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert st.interventions == (ten[0].toggled(False),)
    res = wait_result(qtbot, win, lambda r: r.interventions == () and r.frame_id > base.frame_id)
    assert res.predictions_clean is None and same_rows(res.predictions, real, 2e-3)
    qtbot.waitUntil(lambda: not feat.status.isVisible(), timeout=WAIT)
    assert win.docks["interventions"].windowTitle() == "Interventions"
    feat.listing.item(0).setCheckState(Qt.CheckState.Checked)
    res = wait_result(qtbot, win, lambda r: r.interventions == ten)
    assert same_rows(res.predictions, hooked, 2e-3)

    # a channel the layer does not have: refused with a banner, the list unchanged; edit rewrites one
    assert not feat.add_text("_blocks.10:500")
    assert "500" in win.ctx.last_error and st.interventions == ten
    assert feat.edit(0, "_blocks.10:3:scale:2") and st.interventions == (Intervention(LAYER, (3,), "scale:2"),)
    # k switches the selected unit off and on again; K clears every intervention
    st.unit = Unit(LAYER, 7)
    qtbot.keyClick(win, "k")
    assert st.interventions[-1] == Intervention(LAYER, (7,), "zero")
    qtbot.keyClick(win, "k")
    assert st.interventions == (Intervention(LAYER, (3,), "scale:2"),)
    qtbot.keyClick(win, "K")
    assert st.interventions == ()
    wait_result(qtbot, win, lambda r: r.interventions == () and r.predictions_clean is None)


def test_top_n_takes_the_gradxact_ranking_and_a_ranked_tile_selects_its_unit(qtbot, make_window, ref_vm, coffee):
    win = make_window(coffee, ViewRequest(layer=LAYER, unit=Unit(LAYER, 0)))
    win.feature("inspector").set_backprop_mode("off")
    st = win.state
    wait_result(qtbot, win, lambda r: bool(r.predictions) and r.layer == LAYER)
    feat = open_panel(qtbot, win)
    feat.top_n.setValue(5)
    qtbot.mouseClick(feat.top_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(st.interventions) == 1, timeout=WAIT)
    frame = feat.rank_res
    cls = frame.predictions[0][0]
    assert feat.ranking.target == ClassTarget(cls, "logit") and ref_vm.categories[cls] == "espresso"
    ref = rank_gradxact(ref_vm.net, ref_vm.preprocess.to_tensor(frame.image), LAYER, ClassTarget(cls, "logit"),
                        ref_vm.info(LAYER))
    assert st.interventions[0] == Intervention(LAYER, tuple(ref.top(5)), "zero")
    assert feat.ranking.order()[:20] == ref.order()[:20]
    # the strip shows the ranking best first, each tile with the channel's live activation tile
    shown = feat.strip.shown_channels()
    assert shown == ref.order()[:len(shown)] and len(shown) >= 20
    tile = feat.strip.tile_of(ref.order()[7])
    assert tile.item.image is not None and tile.item.image.shape[2] == 3
    qtbot.waitUntil(lambda: feat.strip.tile_of(ref.order()[0]).item.intervened, timeout=WAIT)  # switched off
    assert not tile.item.intervened
    qtbot.mouseClick(tile, Qt.MouseButton.LeftButton)
    chosen = Unit(LAYER, ref.order()[7])
    assert st.unit == chosen
    res = wait_result(qtbot, win, lambda r: r.unit == chosen)
    assert res.unit_map is not None
    # a class clicked in Predictions is the class ranked next (here: a class of the real network's top-5)
    other = res.predictions_clean[2][0]
    win.feature("predictions").choose_class(other)
    assert feat.class_index == other
    feat.rank("gradxact")
    qtbot.waitUntil(lambda: feat.ranking.target.index == other, timeout=WAIT)
    ref2 = rank_gradxact(ref_vm.net, ref_vm.preprocess.to_tensor(feat.rank_res.image), LAYER,
                         ClassTarget(other, "logit"), ref_vm.info(LAYER))
    assert feat.ranking.order()[:10] == ref2.order()[:10]
    snap = win.feature("snapshots").state_dict()["channel_ranking"]
    assert snap["class"] == other and [d["channel"] for d in snap["top"]] == ref2.order()[:20]


def test_ablation_ranking_in_the_background_equals_the_core(qtbot, make_window, ref_vm, coffee):
    layer = "_blocks.3"
    win = make_window(coffee, ViewRequest(layer=layer, unit=Unit(layer, 0)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: bool(r.predictions) and r.layer == layer)
    feat = open_panel(qtbot, win)
    partial = []
    feat.rank("ablation")
    assert feat.cancel_button.isVisibleTo(feat.panel)
    qtbot.waitUntil(lambda: (partial.append(feat.rank_progress) is None and feat.ranking is not None
                             and feat.rank_progress is None and len(feat.ranking.channels) == 40), timeout=WAIT)
    assert (32, 40) in partial  # a batch of 32 channels was shown before the rest
    assert not feat.cancel_button.isVisibleTo(feat.panel)
    frame = feat.rank_res
    cls = frame.predictions[0][0]
    ref = rank_ablation(ref_vm.net, ref_vm.preprocess.to_tensor(frame.image), layer, ClassTarget(cls),
                        ref_vm.info(layer))
    assert feat.ranking.order()[:10] == ref.order()[:10]
    assert all(abs(feat.ranking.score_of(c) - ref.score_of(c)) < 1e-5 for c in range(40))
    assert "probability lost" in feat.rank_info.text()


def test_a_model_switch_drops_the_interventions_the_new_model_cannot_apply(qtbot, make_window, coffee):
    win = make_window(coffee, ViewRequest(layer=LAYER, unit=Unit(LAYER, 0)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    feat = win.feature("interventions")
    assert feat.add_text("_blocks.10:3,17") and feat.add_text("_blocks.14:5:scale:2:off")
    wait_result(qtbot, win, lambda r: len(r.interventions) == 1)
    handed = []  # what the worker gets with the new model
    worker_set_model = win.live.worker.set_model
    win.live.worker.set_model = lambda vm, request=None: (handed.append(request), worker_set_model(vm, request))
    win.feature("models").switch_model("resnet18", "random")
    qtbot.waitUntil(lambda: win.live.vm.name == "resnet18", timeout=WAIT * 2)
    assert handed[0].interventions == () and win.state.interventions == ()  # gone before the worker saw them
    res = wait_result(qtbot, win, lambda r: r.model == "resnet18")
    assert res.interventions == () and res.predictions_clean is None
    assert not [m for m in win.ctx.messages if m.level == "error"]  # the worker never saw a layer it lacks
    assert any("2 interventions removed" in m.text for m in win.ctx.messages)
    # the new model's units can be switched off as before
    assert feat.add_text("layer4.1.conv2:0-3")
    wait_result(qtbot, win, lambda r: r.interventions == (Intervention("layer4.1.conv2", (0, 1, 2, 3)),))
