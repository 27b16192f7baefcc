"""The unit inspector: the selected unit's header, its activation map (or overlay, or effective receptive field)
and its gradient / deconvnet / guided-backprop images, live. b/m cycle the backprop mode and view, x freezes the
unit while browsing layers. Other features add their sections to this pane (top-k, optimized image)."""

from __future__ import annotations

import numpy as np

from ...pipeline import FrameResult
from ...state import BACKPROP_MODES, BACKPROP_VIEWS, MAP_VIEWS, clamp_unit, cycle, methods_for
from ..feature import Feature, Key, Panel
from ..widgets.images import SIGNED_COLORMAP, make_lut, overlay
from ..widgets.inspector_pane import InspectorPane

SQRT_LUT = np.round(np.sqrt(np.arange(256) / 255.0) * 255).astype(np.uint8)


class InspectorFeature(Feature):
    name = "inspector"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.pane = InspectorPane()
        self._signed = make_lut(SIGNED_COLORMAP)
        self._luts: dict[str, object] = {}
        st = ctx.state
        self.pane.backprop_mode_changed.connect(self.set_backprop_mode)
        self.pane.view_changed.connect(self.set_backprop_view)
        self.pane.freeze_unit_toggled.connect(self.set_unit_frozen)
        self.pane.map_view_changed.connect(self.set_map_view)
        self.pane.crop_toggled.connect(lambda on: setattr(st, "backprop_crop", bool(on)))
        self._rf: dict[tuple, object] = {}  # (model, layer, input size) -> RFGeometry, or None while measured
        for name in ("backprop_mode", "backprop_view", "map_view", "unit", "unit_frozen", "backprop_blocked",
                     "backprop_crop"):
            getattr(st.events, name).connect(self._sync)
        ctx.live.painted.connect(self.paint)
        self._sync()

    # -- choices
    def set_backprop_mode(self, mode: str) -> None:
        st = self.ctx.state
        if mode in BACKPROP_MODES and mode != st.backprop_mode:
            for canvas in self.pane.attr.values():
                canvas.set_image(None)
            st.update(backprop_blocked=None, backprop_mode=mode)

    def set_backprop_view(self, view: str) -> None:
        if view in BACKPROP_VIEWS:
            self.ctx.state.backprop_view = view

    def set_map_view(self, view: str) -> None:
        """activation / overlay redraw the newest result; ERF asks the worker to accumulate gradients."""
        if view in MAP_VIEWS:
            self.ctx.state.map_view = view

    def set_unit_frozen(self, frozen: bool) -> None:
        ctx = self.ctx
        st = ctx.state
        unit = st.unit
        if not frozen and unit is not None and unit.layer != ctx.live.layer:
            layer = ctx.live.layer  # unfreezing comes back to the shown layer
            st.update(unit_frozen=False, unit=clamp_unit(layer, unit.channel, ctx.channels(layer)))
        else:
            st.unit_frozen = bool(frozen)

    def reset(self) -> None:
        ctx = self.ctx
        unit = ctx.state.unit
        if unit is not None and unit.layer != ctx.live.layer:
            unit = clamp_unit(ctx.live.layer, unit.channel, ctx.channels(ctx.live.layer))
        ctx.state.update(backprop_mode="guided", backprop_view="norm", unit_frozen=False, map_view="activation",
                         unit=unit)

    # -- drawing
    def _lut(self):
        """The grid's colormap (one colour policy for grid and inspector), without the grid's border entry."""
        name = self.ctx.state.colormap
        if name not in self._luts:
            self._luts[name] = make_lut(name, border=False)
        return self._luts[name]

    def _sync(self, *_args) -> None:
        st = self.ctx.state
        self.pane.set_modes(st.backprop_mode, st.backprop_view, st.map_view)
        self.pane.set_frozen(st.unit_frozen, st.backprop_crop)
        methods = self.ctx.live.request.attribution if st.unit is not None else methods_for(st.backprop_mode)
        self.pane.set_methods(methods)

    def paint(self, res: FrameResult) -> None:
        ctx, pane = self.ctx, self.pane
        unit = res.unit
        if unit is None:
            pane.set_header("no unit selected: click a tile")
            pane.unit_map.clear("select a unit")
            return
        vm = ctx.vm
        name = ""
        if ctx.is_class_layer(unit.layer) and unit.channel < len(vm.categories):
            name = f" &nbsp;<span style='color:#5ac8fa'>{vm.categories[unit.channel]}</span>"
        value = f"{res.unit_value:.3g}" if res.unit_value is not None else "-"
        frozen = " &nbsp;<span style='color:#ff6961'>[frozen]</span>" if ctx.state.unit_frozen else ""
        pane.set_header(f"<b>{unit.layer}</b> &nbsp;unit <b style='color:#ffd60a'>{unit.channel}</b>{name}"
                        f" &nbsp;max {value}{frozen}")
        shape = vm.info(unit.layer).shape
        view = ctx.state.map_view
        canvas = pane.unit_map
        if view == "ERF":
            self._paint_erf(res, shape)
        elif res.unit_map is not None:
            signed = res.grid.signed and unit.layer == res.layer  # zero is mid-scale: use the diverging map
            lut = self._signed if signed else self._lut()
            canvas.caption = "overlay" if view == "overlay" else ""
            canvas.marker = None
            if res.unit_position is not None and len(shape) == 3:
                y, x = res.unit_position  # the neuron the attributions explain, in layer cells
                canvas.marker = ((x + 0.5) / shape[2], (y + 0.5) / shape[1])
            canvas.set_image(overlay(res.image, res.unit_map, lut) if view == "overlay" else lut[res.unit_map])
        else:
            canvas.clear(f"fully-connected unit: no spatial map\nvalue {value}")
        box = self._crop_box(res, shape) if res.attributions else None
        for method, attr_canvas in pane.attr.items():
            img = res.attributions.get(method)
            if img is not None:
                detail = ctx.state.backprop_view
                if box is not None:
                    top, left, bottom, right = box
                    img = img[top:bottom, left:right]
                    detail += f", RF {bottom - top}x{right - left} px"
                attr_canvas.caption = ""  # said in the title: a badge would cover the patch
                pane.set_method_title(method, detail)
                attr_canvas.set_image(img)

    def _crop_box(self, res: FrameResult, shape: tuple) -> tuple[int, int, int, int] | None:
        """The explained neuron's receptive field, clipped to the frame, when cropping is on and the field
        covers less than half of the input; None otherwise (the geometry is measured once per layer, on a
        private model copy in the background, and the full image is shown until it is known)."""
        if not self.ctx.state.backprop_crop or res.unit is None or res.unit_position is None or len(shape) != 3:
            return None
        size = res.image.shape[0]
        key = (self.ctx.vm.name, res.unit.layer, size)
        if key not in self._rf:
            self._rf[key] = None
            load = self.ctx.live.model_copy_loader("rf")
            layer = res.unit.layer

            def measure(_abort):
                from ...receptive_field import rf_geometry

                return rf_geometry(load().net, layer, size)

            self.ctx.jobs.start(f"rf:{layer}", measure, on_done=lambda geom, k=key: self._rf.__setitem__(k, geom),
                                on_error=lambda _msg, k=key: self._rf.pop(k, None))
            return None
        geom = self._rf[key]
        if geom is None or geom.full:
            return None
        top, left, bottom, right = geom.box(*res.unit_position)
        top, left, bottom, right = max(0, top), max(0, left), min(size, bottom), min(size, right)
        if bottom - top < 4 or right - left < 4 or (bottom - top) * (right - left) > 0.5 * size * size:
            return None
        return top, left, bottom, right

    def _paint_erf(self, res: FrameResult, shape: tuple) -> None:
        canvas = self.pane.unit_map
        canvas.marker = None
        if len(shape) != 3:
            canvas.clear("ERF: needs a unit with a spatial map\n(this layer is fully connected)")
        elif res.erf_map is None or res.erf_frames == 0:
            canvas.clear("ERF: accumulating gradients...")
        else:
            # sqrt: the gradient mass is concentrated near the centre; its faint tails are the point of an ERF
            canvas.caption = f"ERF (sqrt), {res.erf_frames} frame{'s' if res.erf_frames != 1 else ''}"
            canvas.set_image(self._lut()[SQRT_LUT[res.erf_map]])

    # -- what the window gathers
    def panels(self) -> list[Panel]:
        return [Panel("inspector", "Unit inspector", self.pane, area="right")]

    def keys(self) -> list[Key]:
        st = self.ctx.state
        return [
            Key(("b",), lambda: self.set_backprop_mode(cycle(BACKPROP_MODES, st.backprop_mode, 1)), "b",
                "cycle backprop mode: guided, deconv, gradient, all, off"),
            Key(("B",), lambda: self.set_backprop_mode(cycle(BACKPROP_MODES, st.backprop_mode, -1))),
            Key(("m",), lambda: self.set_backprop_view(cycle(BACKPROP_VIEWS, st.backprop_view, 1)), "m",
                "cycle backprop view: raw, gray, norm, normblur"),
            Key(("M",), lambda: self.set_backprop_view(cycle(BACKPROP_VIEWS, st.backprop_view, -1))),
            Key(("x", "X"), lambda: self.set_unit_frozen(not st.unit_frozen), "x",
                "freeze / unfreeze the explained unit while browsing layers"),
        ]

    def snapshot_images(self) -> dict:
        res = self.ctx.live.shown
        return {f"attribution_{m}": img for m, img in res.attributions.items()} if res is not None else {}
