"""The app-state model: what the user has chosen, in one Qt-free, evented object (psygnal), as napari's are.

One owner: `AppState` holds the choices (layer, selected unit, boosts, modes, freezes, open store, ...). Every
field is validated when assigned (a bad value raises `ParamError` and nothing changes), `reset()` goes back to the
defaults, and changing a field emits `state.events.<field>` once. Nothing else keeps a copy: the loaded model and
the opened source are the live session's (`gui.live`), and the worker's `ViewRequest` is derived from the state in
exactly one place (`view_request`). `AppEvents` carries what is not a choice but a happening between features (a
class clicked in the predictions, an optimized image finished), so features never call each other. The same model
drives tests without Qt, and imports neither Qt nor torch (`deepvis_app.values` holds the value types).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from psygnal import Signal, SignalGroup, evented

from .errors import ParamError
from .values import LIVE_CAMS, Unit, ViewRequest

BACKPROP_MODES = ("guided", "deconv", "gradient", "all", "off")
BACKPROP_VIEWS = ("raw", "gray", "norm", "normblur")
MAP_VIEWS = ("activation", "overlay", "ERF")
NORM_MODES = ("layer", "channel")
GAMMAS = (1.0, 0.7, 0.5, 0.35)  # what t/T cycles through
GAMMA_RANGE = (0.05, 20.0)  # any gamma in here may be chosen (the command line's --gamma 0.6 is not in GAMMAS)
COLORMAPS = ("gray", "inferno", "viridis", "turbo")
CROPS = ("center", "stretch")
LIVE_TOPK_K = 9
OVERLAYS = ("", *LIVE_CAMS)


def methods_for(mode: str) -> tuple[str, ...]:
    """The attribution methods a backprop mode computes live."""
    if mode == "all":
        return ("gradient", "deconv", "guided")
    if mode == "off":
        return ()
    return (mode,)


# -- field validators: each returns what is wrong with a value (None: fine)
Check = Callable[[Any], "str | None"]


def _one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in choices:
            return None
        return f"must be one of {', '.join(choices)}, not {value!r}"
    return check


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be True or False, not {value!r}"


def _unit_or_none(value: Any) -> str | None:
    return None if value is None or isinstance(value, Unit) else f"must be a Unit or None, not {value!r}"


def _layer(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be a layer name, not {value!r}"


def _gamma(value: Any) -> str | None:
    low, high = GAMMA_RANGE
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
            and low <= value <= high:
        return None
    return f"must be a number from {low} to {high}, not {value!r}"


def _crop(value: Any) -> str | None:
    return None if value is None else _one_of(CROPS)(value)


def _epoch(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    return f"must be a whole number >= 0, not {value!r}"


def _store(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and value) else f"must be a folder or None, not {value!r}"


def _pattern_folder(value: Any) -> str | None:
    if value is None or (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
                         and isinstance(value[1], Path)):
        return None
    return f"must be (layer, Path) or None, not {value!r}"


def _class_or_none(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return f"must be a class index >= 0 or None (the top class), not {value!r}"


def _patch(value: Any) -> str | None:
    ok = value is None or (isinstance(value, tuple) and len(value) == 2
                           and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))
    return None if ok else f"must be (y, x) on the token grid or None (the class token), not {value!r}"


def _interventions(value: Any) -> str | None:
    from .interventions import Intervention  # torch-free (interventions.spec)

    if isinstance(value, tuple) and all(isinstance(v, Intervention) for v in value):
        return None
    return f"must be a tuple of Intervention values, not {value!r}"


CHECKS: dict[str, Check] = {
    "overlay": _one_of(OVERLAYS), "overlay_class": _class_or_none, "attention": _flag,
    "attention_block": lambda v: None if isinstance(v, str) else f"must be a module name, not {v!r}",
    "attention_patch": _patch, "interventions": _interventions,
    "layer": _layer, "unit": _unit_or_none, "unit_frozen": _flag, "norm": _one_of(NORM_MODES), "gamma": _gamma,
    "colormap": _one_of(COLORMAPS), "crop": _crop, "backprop_mode": _one_of(BACKPROP_MODES),
    "backprop_view": _one_of(BACKPROP_VIEWS), "backprop_blocked": _unit_or_none, "backprop_crop": _flag,
    "map_view": _one_of(MAP_VIEWS), "live_topk": _flag, "live_topk_epoch": _epoch, "camera_frozen": _flag,
    "mirror": _flag, "store": _store, "pattern_mode": _flag, "pattern_folder": _pattern_folder,
}


@evented
@dataclass
class AppState:
    """What the user has chosen. Assigning a field validates it and emits `events.<field>(new, old)` (only when it
    changes). The model and the source are not here: the live session owns what is loaded and opened."""

    layer: str = ""  # the layer shown in the grid (empty only before a model is loaded: the session sets it)
    unit: Unit | None = None  # the explained unit (may be in another layer when unit_frozen)
    unit_frozen: bool = False  # keep explaining `unit` while browsing layers
    norm: str = "layer"
    gamma: float = 1.0
    colormap: str = "viridis"
    crop: str | None = None  # how frames are fitted to the input; None: as the model's spec says
    backprop_mode: str = "guided"
    backprop_view: str = "norm"
    backprop_blocked: Unit | None = None  # backprop failed for this unit: it runs without until the unit changes
    backprop_crop: bool = True  # show backprop images cropped to the unit's receptive field when it is small
    map_view: str = "activation"
    live_topk: bool = False
    live_topk_epoch: int = 0  # bump to clear the live top-k
    camera_frozen: bool = False
    mirror: bool = False
    store: str | None = None  # the open top-k store (a directory)
    pattern_mode: bool = False
    pattern_folder: tuple[str, Path] | None = None  # (layer, folder of unit_NNNN.png) opened by the user
    overlay: str = ""  # the live CAM over the input ("" off; one of LIVE_CAMS)
    overlay_class: int | None = None  # the class the overlay explains (None: each frame's top class)
    attention: bool = False  # a transformer's attention heads and rollout, live
    attention_block: str = ""  # the attention module shown ("": the last one)
    attention_patch: tuple[int, int] | None = None  # the query patch on the token grid (None: the class token)
    interventions: tuple = ()  # Intervention values: the enabled ones change the live network

    def __setattr__(self, name: str, value: Any) -> None:
        # psygnal wraps this method: a value refused here is never stored and emits nothing
        check = CHECKS.get(name)
        if check is not None:
            problem = check(value)
            if problem is not None:
                raise ParamError(name, problem)
        elif not name.startswith("_") and name != "events":
            raise AttributeError(f"AppState has no field {name!r}")
        super().__setattr__(name, value)

    def update(self, **changes: object) -> None:
        """Set several fields, in the order given; unknown names are a programming error (AttributeError). All are
        validated before any is set, so a bad value leaves the state as it was."""
        for key, value in changes.items():
            check = CHECKS.get(key)
            if check is None:
                raise AttributeError(f"AppState has no field {key!r}")
            problem = check(value)
            if problem is not None:
                raise ParamError(key, problem)
        for key, value in changes.items():
            setattr(self, key, value)

    def reset(self, *names: str) -> None:
        """Back to the defaults: the named fields, or every field (one event per field that changes)."""
        defaults = {f.name: f.default for f in fields(self)}
        unknown = [n for n in names if n not in defaults]
        if unknown:
            raise AttributeError(f"AppState has no field {unknown[0]!r}")
        self.update(**{n: defaults[n] for n in (names or defaults)})

    def as_dict(self) -> dict:
        """JSON-friendly copy (snapshots); interventions in their written form (`_blocks.10:3,17:zero`)."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "interventions":
                out[f.name] = [str(v) for v in value]
            else:
                out[f.name] = str(value) if isinstance(value, (Unit, Path, tuple)) else value
        return out


class AppEvents(SignalGroup):
    """Happenings between features that are not choices (choices live in AppState)."""

    class_chosen = Signal(int)  # a class clicked in the predictions: its optimized image is wanted
    optimized_image = Signal(object)  # OptimizedImage: a unit's optimized image was made (any job)
    message = Signal(str, str, float)  # (text, level "info"|"error", seconds or 0): shown in the banner
    patterns = Signal(object)  # PatternContent | None: what pattern mode shows as the grid (None: live grid)


@dataclass(frozen=True)
class OptimizedImage:
    model: str
    layer: str
    channel: int
    image: object  # np.ndarray uint8 HxWx3


@dataclass(frozen=True)
class PatternContent:
    layer: str
    images: tuple  # per unit: np.ndarray uint8 HxWx3 or None (not optimized yet)
    labels: tuple[str, ...] | None
    status: str


def view_request(state: AppState, *, request_id: int) -> ViewRequest:
    """The worker's request derived from the state: the only place where choices become a ViewRequest. Two states
    that give equal requests (ids aside) look the same to the worker: what differs is drawing only."""
    unit = state.unit
    attribution = methods_for(state.backprop_mode) if unit is not None and state.backprop_blocked != unit else ()
    return ViewRequest(request_id=request_id, layer=state.layer, unit=unit, norm=state.norm, gamma=state.gamma,
                       crop=state.crop, attribution=attribution, attribution_view=state.backprop_view,
                       live_topk=state.live_topk, live_topk_k=LIVE_TOPK_K, live_topk_epoch=state.live_topk_epoch,
                       erf=state.map_view == "ERF", overlay=state.overlay, overlay_class=state.overlay_class,
                       attention=state.attention, attention_block=state.attention_block,
                       attention_patch=state.attention_patch, interventions=state.interventions)


def state_from_request(request: ViewRequest) -> AppState:
    """The initial state of the window from a command-line request (`deepvis --select L:U --attribution ...`)."""
    wanted = tuple(request.attribution)
    mode = wanted[0] if len(wanted) == 1 else ("all" if len(wanted) > 1 else "guided")
    view = request.attribution_view if request.attribution_view in BACKPROP_VIEWS else "norm"
    return AppState(layer=request.layer, unit=request.unit, norm=request.norm, gamma=request.gamma,
                    crop=request.crop, backprop_mode=mode, backprop_view=view,
                    map_view="ERF" if request.erf else "activation", live_topk=request.live_topk)


def clamp_unit(layer: str, channel: int, channels: int) -> Unit:
    """The unit `channel` of `layer`, clamped into 0..channels-1 (keys and layer switches never go out of range)."""
    return Unit(layer, max(0, min(channels - 1, channel)))


def cycle(values: tuple, current: object, step: int) -> object:
    """The next (step=1) or previous (step=-1) value after `current` in `values`, wrapping around."""
    i = values.index(current) if current in values else -step if step > 0 else 0
    return values[(i + step) % len(values)]
