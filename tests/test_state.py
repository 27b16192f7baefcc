"""The app-state model without Qt (tests/test_core_no_qt.py checks it imports none) and without torch: validated
fields, events on change (and only on change), reset to the defaults, the one derivation of the worker's request,
the command-line start state, the rules features share."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from deepvis_app.errors import ParamError
from deepvis_app.state import (
    BACKPROP_MODES,
    GAMMAS,
    AppEvents,
    AppState,
    OptimizedImage,
    clamp_unit,
    cycle,
    methods_for,
    state_from_request,
    view_request,
)
from deepvis_app.values import Unit, ViewRequest


def test_field_events_fire_once_per_real_change():
    state = AppState()
    seen: list[tuple] = []
    state.events.unit.connect(lambda new, old: seen.append(("unit", new, old)))
    state.events.all.connect(lambda info: seen.append(("all", info.signal.name)))
    state.unit = Unit("a", 1)
    state.unit = Unit("a", 1)  # equal value: no event
    state.norm = "channel"
    assert seen == [("unit", Unit("a", 1), None), ("all", "unit"), ("all", "norm")]


def test_update_sets_several_fields_and_rejects_unknown_ones():
    state = AppState()
    names: list[str] = []
    state.events.all.connect(lambda info: names.append(info.signal.name))
    state.update(layer="b", unit=Unit("b", 2), gamma=0.5)
    assert (state.layer, state.unit, state.gamma) == ("b", Unit("b", 2), 0.5)
    assert names == ["layer", "unit", "gamma"]
    with pytest.raises(AttributeError):
        state.update(no_such_field=1)


def test_view_request_is_derived_from_the_state():
    state = AppState(layer="x", unit=Unit("x", 3), norm="channel", gamma=0.7, backprop_mode="all",
                     backprop_view="gray", live_topk=True, live_topk_epoch=2, map_view="ERF")
    req = view_request(state, request_id=5)
    assert req == ViewRequest(request_id=5, layer="x", unit=Unit("x", 3), norm="channel", gamma=0.7,
                              attribution=("gradient", "deconv", "guided"), attribution_view="gray",
                              live_topk=True, live_topk_k=9, live_topk_epoch=2, erf=True)
    # no unit: nothing to explain; a blocked unit runs without backprop, another unit gets it again
    assert view_request(AppState(backprop_mode="guided"), request_id=0).attribution == ()
    state.backprop_blocked = Unit("x", 3)
    assert view_request(state, request_id=0).attribution == ()
    state.unit = Unit("x", 4)
    assert view_request(state, request_id=0).attribution == ("gradient", "deconv", "guided")
    # display-only choices do not change the request (the live session repaints for them: no hand-kept list)
    before = view_request(state, request_id=0)
    state.update(colormap="turbo", camera_frozen=True, pattern_mode=True, mirror=True, backprop_crop=False,
                 unit_frozen=True, store="/some/store", pattern_folder=("x", Path("/p")))
    assert view_request(state, request_id=0) == before
    state.map_view = "overlay"  # activation <-> overlay: drawing only; ERF is a worker request
    assert view_request(state, request_id=0) == replace(before, erf=False)


def test_state_from_command_line_request():
    req = ViewRequest(layer="l", unit=Unit("l", 1), attribution=("deconv",), attribution_view="raw", erf=True)
    st = state_from_request(req)
    assert (st.layer, st.unit, st.backprop_mode, st.backprop_view, st.map_view) == \
        ("l", Unit("l", 1), "deconv", "raw", "ERF")
    both = state_from_request(ViewRequest(attribution=("gradient", "guided")))
    assert both.backprop_mode == "all"
    assert state_from_request(ViewRequest(attribution_view="bogus")).backprop_view == "norm"
    assert state_from_request(ViewRequest(layer="l", gamma=0.6)).gamma == 0.6  # --gamma 0.6: not a preset, allowed


@pytest.mark.parametrize(("field", "bad"), [
    ("backprop_mode", "smooth"), ("backprop_view", "fancy"), ("map_view", "heat"), ("norm", "global"),
    ("colormap", "jet"), ("gamma", 0.0), ("gamma", 50.0), ("gamma", float("nan")), ("gamma", "0.5"),
    ("gamma", True), ("unit", "a:1"), ("unit", ("a", 1)), ("backprop_blocked", 3), ("unit_frozen", 1),
    ("live_topk", "yes"), ("live_topk_epoch", -1), ("live_topk_epoch", 1.5), ("crop", "zoom"), ("layer", None),
    ("store", ""), ("pattern_folder", ("x", "/not/a/path/object")), ("mirror", None),
])
def test_bad_values_are_refused_and_change_nothing(field, bad):
    state = AppState(layer="a", unit=Unit("a", 1))
    before = state.as_dict()
    seen: list = []
    state.events.all.connect(lambda info: seen.append(info.signal.name))
    with pytest.raises(ParamError) as err:
        setattr(state, field, bad)
    assert err.value.param == field and repr(bad) in str(err.value)
    with pytest.raises(ParamError):
        state.update(**{"live_topk" if field != "live_topk" else "mirror": True, field: bad})  # all checked first
    with pytest.raises(ParamError):
        AppState(**{field: bad})
    assert state.as_dict() == before and seen == []


def test_good_values_and_typos():
    state = AppState()
    state.update(gamma=0.6, crop="stretch", unit=Unit("a", 2, 3, 4), store="/s", live_topk_epoch=3)
    assert (state.gamma, state.crop, state.unit, state.store, state.live_topk_epoch) == \
        (0.6, "stretch", Unit("a", 2, 3, 4), "/s", 3)
    for gamma in GAMMAS:
        state.gamma = gamma
    with pytest.raises(AttributeError):
        state.gama = 0.5  # a typo is an error, not a new attribute nobody reads
    assert not hasattr(state, "gama")


def test_reset_goes_back_to_the_defaults_one_event_per_change():
    state = AppState(layer="a", unit=Unit("a", 1), norm="channel", gamma=0.5, backprop_mode="off",
                     camera_frozen=True, colormap="turbo")
    names: list[str] = []
    state.events.all.connect(lambda info: names.append(info.signal.name))
    state.reset("norm", "gamma", "camera_frozen")
    assert (state.norm, state.gamma, state.camera_frozen) == ("layer", 1.0, False)
    assert (state.backprop_mode, state.colormap, state.unit) == ("off", "turbo", Unit("a", 1))  # not named: kept
    assert names == ["norm", "gamma", "camera_frozen"]
    state.reset("norm")  # already the default: no event
    assert names == ["norm", "gamma", "camera_frozen"]
    state.reset()
    assert state == AppState()
    assert names[3:] == ["layer", "unit", "colormap", "backprop_mode"]
    with pytest.raises(AttributeError):
        state.reset("no_such_field")


def test_the_state_model_imports_no_torch():
    """The Qt-free model is light: importing it (and its value types) loads neither torch nor Qt."""
    code = ("import sys, deepvis_app.state\n"
            "heavy = ('torch', 'torchvision', 'PySide6', 'pyqtgraph', 'cv2')\n"
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"importing deepvis_app.state loaded {proc.stdout.strip()}"


def test_rules_shared_by_features():
    assert methods_for("all") == ("gradient", "deconv", "guided") and methods_for("off") == ()
    assert methods_for("deconv") == ("deconv",)
    assert clamp_unit("l", 99, 40) == Unit("l", 39) and clamp_unit("l", -3, 40) == Unit("l", 0)
    assert cycle(BACKPROP_MODES, "off", 1) == "guided" and cycle(BACKPROP_MODES, "guided", -1) == "off"
    assert cycle(GAMMAS, 0.6, 1) == GAMMAS[0]  # a value not in the list starts the cycle


def test_events_between_features_are_plain_signals():
    events = AppEvents()
    got: list = []
    events.class_chosen.connect(got.append)
    events.optimized_image.connect(got.append)
    events.class_chosen.emit(7)
    made = OptimizedImage("m", "l", 2, None)
    events.optimized_image.emit(made)
    assert got == [7, made]


def test_as_dict_is_json_friendly():
    import json

    st = AppState(unit=Unit("l", 1, 2, 3))
    data = json.loads(json.dumps(st.as_dict()))
    assert data["unit"] == "l:1:2:3" and data["backprop_mode"] == "guided"
