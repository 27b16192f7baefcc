"""The app-state model: what the user has chosen, in one Qt-free, evented object (psygnal).

One owner: `AppState` holds the choices (layer, selected unit, boosts, modes, freezes, open store, ...); changing a
field emits `state.events.<field>` and nothing else keeps a copy. Feature controllers in the GUI subscribe and
redraw; the live session derives the worker's `ViewRequest` from it in exactly one place (`view_request`).
`AppEvents` carries what is not a choice but a happening between features (a class clicked in the predictions, an
optimized image finished), so features never call each other. The same model drives tests without Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from psygnal import Signal, SignalGroup, evented

from .pipeline import Unit, ViewRequest

BACKPROP_MODES = ("guided", "deconv", "gradient", "all", "off")
BACKPROP_VIEWS = ("raw", "gray", "norm", "normblur")
MAP_VIEWS = ("activation", "overlay", "ERF")
NORM_MODES = ("layer", "channel")
GAMMAS = (1.0, 0.7, 0.5, 0.35)
COLORMAPS = ("gray", "inferno", "viridis", "turbo")
LIVE_TOPK_K = 9


def methods_for(mode: str) -> tuple[str, ...]:
    """The attribution methods a backprop mode computes live."""
    if mode == "all":
        return ("gradient", "deconv", "guided")
    if mode == "off":
        return ()
    return (mode,)


@evented
@dataclass
class AppState:
    """What the user has chosen. Assigning a field emits `events.<field>(new, old)` (only when it changes)."""

    model: str = ""  # the model name the live worker runs (the loaded VisModel lives with the live session)
    weights: str = "default"
    source: str = ""  # the source's display name
    layer: str = ""  # the layer shown in the grid ("" = the model's default layer)
    unit: Unit | None = None  # the explained unit (may be in another layer when unit_frozen)
    unit_frozen: bool = False  # keep explaining `unit` while browsing layers
    norm: str = "layer"
    gamma: float = 1.0
    colormap: str = "viridis"
    crop: str | None = None
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

    def update(self, **changes: object) -> None:
        """Set several fields; unknown names are a programming error (raises)."""
        names = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise AttributeError(f"AppState has no field {key!r}")
            setattr(self, key, value)

    def as_dict(self) -> dict:
        """JSON-friendly copy (snapshots)."""
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
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


def view_request(state: AppState, *, request_id: int, default_layer: str) -> ViewRequest:
    """The worker's request derived from the state: the only place where choices become a ViewRequest."""
    unit = state.unit
    attribution = methods_for(state.backprop_mode) if unit is not None and state.backprop_blocked != unit else ()
    return ViewRequest(request_id=request_id, layer=state.layer or default_layer, unit=unit, norm=state.norm,
                       gamma=state.gamma, crop=state.crop, attribution=attribution,
                       attribution_view=state.backprop_view, live_topk=state.live_topk, live_topk_k=LIVE_TOPK_K,
                       live_topk_epoch=state.live_topk_epoch, erf=state.map_view == "ERF")


def state_from_request(request: ViewRequest, *, model: str, weights: str = "default") -> AppState:
    """The initial state of the window from a command-line request (`deepvis --select L:U --attribution ...`)."""
    wanted = tuple(request.attribution)
    mode = wanted[0] if len(wanted) == 1 else ("all" if len(wanted) > 1 else "guided")
    view = request.attribution_view if request.attribution_view in BACKPROP_VIEWS else "norm"
    return AppState(model=model, weights=weights, layer=request.layer, unit=request.unit, norm=request.norm,
                    gamma=request.gamma, crop=request.crop, backprop_mode=mode, backprop_view=view,
                    map_view="ERF" if request.erf else "activation", live_topk=request.live_topk)


def clamp_unit(layer: str, channel: int, channels: int) -> Unit:
    """The unit `channel` of `layer`, clamped into 0..channels-1 (keys and layer switches never go out of range)."""
    return Unit(layer, max(0, min(channels - 1, channel)))


def cycle(values: tuple, current: object, step: int) -> object:
    """The next (step=1) or previous (step=-1) value after `current` in `values`, wrapping around."""
    i = values.index(current) if current in values else -step if step > 0 else 0
    return values[(i + step) % len(values)]
