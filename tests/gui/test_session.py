"""The live session as the state's one reader: a state change becomes a new request only when the derived request
differs (no hand-kept list of display-only fields), painting never writes the state, the first result of a layer
with no unit chosen selects the layer's strongest unit, and a model switch is announced once, after the state moved
to the new model's default layer."""

from __future__ import annotations

import dataclasses

import numpy as np

from deepvis_app.state import AppState
from deepvis_app.values import Unit, ViewRequest

from .test_window import WAIT, wait_result


def test_requests_repaints_and_the_starting_unit(qtbot, make_window):
    win = make_window("demo", ViewRequest(layer="_blocks.3"))  # no unit chosen
    assert win.state.layer == "_blocks.3" and win.state.unit is None
    res = wait_result(qtbot, win, lambda r: r.unit is not None)
    assert res.unit.layer == "_blocks.3" and 0 <= res.unit.channel < win.ctx.vm.channels("_blocks.3")

    rid = win.live.request.request_id
    for change in ({"colormap": "turbo"}, {"backprop_crop": False}, {"unit_frozen": True}, {"mirror": True},
                   {"map_view": "overlay"}, {"pattern_mode": True}, {"pattern_mode": False}):
        win.state.update(**change)
        assert win.live.request.request_id == rid, change  # drawing only: the same request, repainted
    win.state.norm = "channel"
    assert win.live.request.request_id == rid + 1 and win.live.request.norm == "channel"
    win.state.map_view = "ERF"
    assert win.live.request.request_id == rid + 2 and win.live.request.erf

    # painting draws and writes nothing, even with no unit chosen
    writes: list[str] = []
    win.state.events.all.connect(lambda info: writes.append(info.signal.name))
    win.state.unit = None
    writes.clear()
    shown = win.live.shown
    win.live.painted.emit(dataclasses.replace(shown, unit=None))
    assert writes == []
    # a result of the shown layer without a unit, while none is chosen: its strongest unit is selected
    maxima = np.zeros(win.ctx.vm.channels("_blocks.3"), np.float32)
    maxima[7] = 5.0
    fresh = dataclasses.replace(shown, unit=None, request_id=win.live.request.request_id, layer="_blocks.3",
                                grid=dataclasses.replace(shown.grid, channel_max=maxima))
    win.live.on_result(fresh)
    assert win.state.unit == Unit("_blocks.3", 7) and writes == ["unit"]


def test_a_model_switch_is_announced_once_after_the_state_moved(qtbot, make_window, tmp_path):
    assert {"model", "weights", "source"}.isdisjoint(f.name for f in dataclasses.fields(AppState))
    win = make_window("demo", ViewRequest(layer="_blocks.3", unit=Unit("_blocks.3", 4)))
    wait_result(qtbot, win, lambda r: r.unit is not None)
    heard: list = []
    win.live.model_changed.connect(lambda vm: heard.append(("model_changed", vm.name, win.state.layer,
                                                            win.state.unit)))
    win.state.events.all.connect(lambda info: heard.append(info.signal.name))
    spec = tmp_path / "lite_copy.toml"
    spec.write_text('name = "lite_copy"\nbuilder = "deepvis_app.builders:efficientnet_lite0"\ninput_size = 224\n'
                    'mean = [0.498, 0.498, 0.498]\nstd = [0.502, 0.502, 0.502]\n'
                    'default_layer = "_blocks.7"\n[[layers]]\nname = "_blocks.7"\ntitle = "block 7"\n')
    win.feature("models").switch_model(str(spec))
    qtbot.waitUntil(lambda: any(h[0] == "model_changed" for h in heard if isinstance(h, tuple)), timeout=WAIT)
    announced = [h for h in heard if isinstance(h, tuple)]
    assert announced == [("model_changed", "lite_copy", "_blocks.7", None)]  # once, the state already moved
    assert heard.index(announced[0]) > heard.index("layer")
    assert win.live.request.layer == "_blocks.7" and win.live.request.unit is None
    assert win.ctx.vm.title in win.windowTitle()  # the title follows the one announcement
    res = wait_result(qtbot, win, lambda r: r.model == "lite_copy" and r.unit is not None)
    assert res.layer == "_blocks.7" and win.state.unit == res.unit  # the new layer's strongest unit
