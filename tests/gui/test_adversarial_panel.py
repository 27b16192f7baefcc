"""The adversarial panel: pick a target, attack the shown frame, see the frame, the magnified perturbation and the
result (which the network now calls the target), with the change inside the eps ball; live mode carries on."""

from __future__ import annotations

import numpy as np

from deepvis_app.pipeline import Unit, ViewRequest

from .test_window import WAIT, wait_result


def test_attack_the_shown_frame_into_a_target_class(qtbot, make_window, vm):
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 0)))
    win.feature("inspector").set_backprop_mode("off")
    wait_result(qtbot, win, lambda r: bool(r.predictions))
    feat = win.feature("adversarial")
    assert not win.docks["adversarial"].isVisible()
    next(a for a in win.menus["&Tools"].actions() if a.text() == "Adversarial examples").trigger()
    assert win.docks["adversarial"].isVisible()
    assert feat.target == vm.categories.index("ostrich")  # the lecture's default target
    feat.picker.setText("goldfi")  # goldfish or goldfinch: not unique, refused
    feat.picker.returnPressed.emit()
    assert feat.target == vm.categories.index("ostrich") and "no single class" in feat.picker.toolTip()
    feat.picker.setText("goldfis")  # search box: a unique part of the name
    feat.picker.returnPressed.emit()
    goldfish = vm.categories.index("goldfish")
    assert feat.target == goldfish
    feat.eps.setValue(4.0)
    feat.run_button.click()
    qtbot.waitUntil(lambda: feat.state is not None and (feat.state.success or feat.state.done), timeout=WAIT * 2)
    qtbot.waitUntil(lambda: feat.ctx.jobs.current("adversarial") is None, timeout=WAIT)
    st = feat.state
    assert st.success and st.top1 == goldfish and st.linf <= 4
    frame, result, noise = feat.frame.array, feat.result.array, feat.noise.array
    assert np.abs(result.astype(int) - frame.astype(int)).max() <= 4  # a change too small to see
    assert np.array_equal(noise, np.clip(128 + 20.0 * (result.astype(np.float32) - frame), 0, 255).round()
                          .astype(np.uint8))
    assert "goldfish" in feat.result_top.text() and "now goldfish" in feat.info.text()
    # the saved state says the same
    state = win.feature("snapshots").state_dict()
    assert state["adversarial"]["success"] and state["adversarial"]["target"] == goldfish


def test_live_mode_carries_the_perturbation_over_frames(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3"))
    win.feature("inspector").set_backprop_mode("off")
    feat = win.feature("adversarial")
    feat.show_panel("adversarial")
    feat.per_frame.setValue(2)
    feat.live_box.setChecked(True)
    qtbot.waitUntil(lambda: feat.state is not None and feat.steps_done >= 4, timeout=WAIT * 2)
    assert feat.state.linf <= 2 and "carries over" in feat.info.text()
