"""Painting a FrameResult into the panes: input, grid, inspector (unit map / ERF / attributions),
predictions and the latency label."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from ..pipeline import FrameResult
from .images import make_lut, overlay

if TYPE_CHECKING:
    from .main_window import MainWindow

PLOT_EVERY_S = 0.1


def paint_result(win: MainWindow, res: FrameResult) -> None:
    if win._await_request is not None and res.request_id >= win._await_request:
        if win._t_request is not None:
            win.click_latencies.append(time.perf_counter() - win._t_request)
            del win.click_latencies[:-50]
        win._await_request = None
    vm = win.vm
    req = win.request
    win.input_pane.show_frame(res.image, res.frame_id, win._input_caption(),
                               f"frame {res.frame_id}  {res.latency * 1000:.0f} ms")
    labels = vm.categories if win._is_class_layer(res.layer) else None
    win.grid_pane.show_grid(res.grid, res.layer, labels)
    if req.unit is None and res.grid.layout.channels > 0:
        win.select_channel(int(res.grid.channel_max.argmax()))  # start on the layer's strongest unit
    win._paint_inspector(res)
    win.predictions.add(res.predictions, res.t_done)
    now = time.perf_counter()
    if now - win._last_plot > PLOT_EVERY_S:
        win._last_plot = now
        win.predictions.refresh()
    t = res.timings
    detail = f"forward {t.get('forward', 0) * 1000:.0f}"
    if "attribution" in t:
        detail += f", backprop {t['attribution'] * 1000:.0f}"
    win.status_labels["latency"].setText(f"latency {res.latency * 1000:.0f} ms ({detail})")
    win.status_labels["latency"].setToolTip("\n".join(f"{k}: {v * 1000:.1f} ms" for k, v in t.items()))


def paint_inspector(win: MainWindow, res: FrameResult) -> None:
    unit = res.unit
    insp = win.inspector
    if unit is None:
        insp.set_header("no unit selected: click a tile")
        insp.unit_map.clear("select a unit")
        return
    name = ""
    if win._is_class_layer(unit.layer) and unit.channel < len(win.vm.categories):
        name = f" &nbsp;<span style='color:#5ac8fa'>{win.vm.categories[unit.channel]}</span>"
    value = f"{res.unit_value:.3g}" if res.unit_value is not None else "-"
    frozen = " &nbsp;<span style='color:#ff6961'>[frozen]</span>" if win.unit_frozen else ""
    insp.set_header(f"<b>{unit.layer}</b> &nbsp;unit <b style='color:#ffd60a'>{unit.channel}</b>{name}"
                    f" &nbsp;max {value}{frozen}")
    shape = win.vm.info(unit.layer).shape
    if win.map_view == "ERF":
        win._paint_erf(res, shape)
    elif res.unit_map is not None:
        signed = res.grid.signed and unit.layer == res.layer  # zero is mid-scale: use the diverging map
        lut = win.grid_pane._luts["CET-D1"] if signed else inferno()
        img = overlay(res.image, res.unit_map, lut) if win.overlay_on else lut[res.unit_map]
        insp.unit_map.caption = "overlay" if win.overlay_on else ""
        insp.unit_map.marker = None
        if res.unit_position is not None and len(shape) == 3:
            y, x = res.unit_position  # the neuron the attributions explain, in layer cells
            insp.unit_map.marker = ((x + 0.5) / shape[2], (y + 0.5) / shape[1])
        insp.unit_map.set_image(img)
    else:
        insp.unit_map.clear(f"fully-connected unit: no spatial map\nvalue {value}")
    if win.live_topk_on:
        win._paint_live_topk(res)
    for method, canvas in insp.attr.items():
        img = res.attributions.get(method)
        if img is not None:
            canvas.caption = win.backprop_view
            canvas.set_image(img)


def paint_erf(win: MainWindow, res: FrameResult, shape: tuple) -> None:
    canvas = win.inspector.unit_map
    canvas.marker = None
    if len(shape) != 3:
        canvas.clear("ERF: needs a unit with a spatial map\n(this layer is fully connected)")
    elif res.erf_map is None or res.erf_frames == 0:
        canvas.clear("ERF: accumulating gradients...")
    else:
        # sqrt: the gradient mass is concentrated near the centre; its faint tails are the point of an ERF
        canvas.caption = f"ERF (sqrt), {res.erf_frames} frame{'s' if res.erf_frames != 1 else ''}"
        canvas.set_image(inferno()[SQRT_LUT[res.erf_map]])


_INFERNO = None
SQRT_LUT = np.round(np.sqrt(np.arange(256) / 255.0) * 255).astype(np.uint8)


def inferno():
    global _INFERNO
    if _INFERNO is None:
        _INFERNO = make_lut("inferno", border=False)
    return _INFERNO
