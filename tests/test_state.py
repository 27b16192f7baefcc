"""The app-state model without Qt (tests/test_core_no_qt.py checks it imports none): events on change (and only on
change), the one derivation of the worker's request, the command-line start state, the rules features share."""

from __future__ import annotations

import pytest

from deepvis_app.pipeline import Unit, ViewRequest
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
    state = AppState(layer="", unit=Unit("x", 3), norm="channel", gamma=0.7, backprop_mode="all",
                     backprop_view="gray", live_topk=True, live_topk_epoch=2, map_view="ERF")
    req = view_request(state, request_id=5, default_layer="dflt")
    assert req == ViewRequest(request_id=5, layer="dflt", unit=Unit("x", 3), norm="channel", gamma=0.7,
                              attribution=("gradient", "deconv", "guided"), attribution_view="gray",
                              live_topk=True, live_topk_k=9, live_topk_epoch=2, erf=True)
    # no unit: nothing to explain; a blocked unit runs without backprop, another unit gets it again
    assert view_request(AppState(backprop_mode="guided"), request_id=0, default_layer="d").attribution == ()
    state.backprop_blocked = Unit("x", 3)
    assert view_request(state, request_id=0, default_layer="d").attribution == ()
    state.unit = Unit("x", 4)
    assert view_request(state, request_id=0, default_layer="d").attribution == ("gradient", "deconv", "guided")
    # display-only choices do not change the request
    before = view_request(state, request_id=0, default_layer="d")
    state.update(colormap="turbo", camera_frozen=True, pattern_mode=True)
    assert view_request(state, request_id=0, default_layer="d") == before


def test_state_from_command_line_request():
    req = ViewRequest(layer="l", unit=Unit("l", 1), attribution=("deconv",), attribution_view="raw", erf=True)
    st = state_from_request(req, model="m")
    assert (st.model, st.layer, st.unit, st.backprop_mode, st.backprop_view, st.map_view) == \
        ("m", "l", Unit("l", 1), "deconv", "raw", "ERF")
    both = state_from_request(ViewRequest(attribution=("gradient", "guided")), model="m")
    assert both.backprop_mode == "all"
    assert state_from_request(ViewRequest(attribution_view="bogus"), model="m").backprop_view == "norm"


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
