"""The user's commands on what is shown: selecting units and layers, boosts, backprop mode and view, the
unit freeze, the activation-map view, live top-k on / clear, and Esc (reset). Each one changes the request
through `MainWindow._change`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..pipeline import Unit
from .grid_pane import GAMMAS
from .inspector_pane import BACKPROP_MODES, BACKPROP_VIEWS, MAP_VIEWS

if TYPE_CHECKING:
    from .main_window import MainWindow


def select_channel(win: MainWindow, channel: int) -> None:
    layer = win.layer
    channel = max(0, min(win.channels(layer) - 1, channel))
    win._change(unit=Unit(layer, channel))


def on_tile_clicked(win: MainWindow, channel: int) -> None:
    if win.grid_pane.layer == win.layer:  # not a click on the previous layer's grid, still on screen
        win.select_channel(channel)


def move_selection(win: MainWindow, dx: int, dy: int) -> None:
    lay = win.grid_pane.layout_
    req = win.request
    cols = lay.cols if lay is not None else 1
    current = req.unit.channel if (req.unit is not None and req.unit.layer == win.layer) else -1
    if current < 0:
        win.select_channel(0)
        return
    win.select_channel(current + dx + dy * cols)


def set_layer(win: MainWindow, layer: str) -> None:
    if layer == win.layer:
        return
    unit = win.request.unit
    if unit is not None and not win.unit_frozen:
        unit = Unit(layer, min(unit.channel, win.channels(layer) - 1))
    win._change(layer=layer, unit=unit)


def step_layer(win: MainWindow, step: int) -> None:
    win.set_layer(win.layers_pane.neighbour(win.layer, step))


def set_boost(win: MainWindow, norm: str, gamma: float) -> None:
    if (norm, gamma) != (win.request.norm, win.request.gamma):
        win._change(norm=norm, gamma=gamma)


def cycle_boost(win: MainWindow, step: int) -> None:
    if step == 1:  # t: whole layer <-> per channel
        win.set_boost("channel" if win.request.norm == "layer" else "layer", win.request.gamma)
    else:  # T: next gamma
        gammas = list(GAMMAS)
        g = win.request.gamma
        nxt = gammas[(gammas.index(g) + 1) % len(gammas)] if g in gammas else gammas[0]
        win.set_boost(win.request.norm, nxt)


def set_backprop_mode(win: MainWindow, mode: str) -> None:
    if mode in BACKPROP_MODES and mode != win.backprop_mode:
        win.backprop_mode = mode
        win._attr_blocked = None
        for canvas in win.inspector.attr.values():
            canvas.set_image(None)
        win._change()


def set_backprop_view(win: MainWindow, view: str) -> None:
    if view in BACKPROP_VIEWS and view != win.backprop_view:
        win.backprop_view = view
        win._change()


def set_unit_frozen(win: MainWindow, frozen: bool) -> None:
    win.unit_frozen = bool(frozen)
    if not frozen and win.request.unit is not None and win.request.unit.layer != win.layer:
        layer = win.layer
        win._change(unit=Unit(layer, min(win.request.unit.channel, win.channels(layer) - 1)))
    else:
        win._sync_controls()
    win._repaint = True


def set_map_view(win: MainWindow, view: str) -> None:
    """activation / overlay repaint the newest result; ERF asks the worker to accumulate gradients."""
    if view not in MAP_VIEWS or view == win.map_view:
        return
    erf_changed = (view == "ERF") != (win.map_view == "ERF")
    win.map_view = view
    if erf_changed:
        win._change()
    else:
        win._sync_controls()
    win._repaint = True


def set_live_topk(win: MainWindow, on: bool) -> None:
    """Start / stop the live top-k of the selected unit's layer (the worker keeps what it collected)."""
    if bool(on) == win.live_topk_on:
        return
    win.live_topk_on = bool(on)
    win._live_shown = None
    win._topk_key = None
    win._change()


def clear_live_topk(win: MainWindow) -> None:
    win._live_shown = None
    win._change(live_topk_epoch=win.request.live_topk_epoch + 1)
    win.inspector.topk.show_message("live top-k: no frames yet", "live top-k: cleared")


def reset(win: MainWindow) -> None:
    """Esc: back to defaults (zoom, boosts, modes, freezes); the layer and unit stay."""
    win.help.hide()
    win.grid_pane.reset_zoom()
    win.backprop_mode = "guided"
    win.backprop_view = "norm"
    win.unit_frozen = False
    win.map_view = "activation"
    if win.camera_frozen:
        win.toggle_camera_freeze()
    unit = win.request.unit
    if unit is not None and unit.layer != win.layer:
        unit = Unit(win.layer, min(unit.channel, win.channels(win.layer) - 1))
    win._change(norm="layer", gamma=1.0, unit=unit)
