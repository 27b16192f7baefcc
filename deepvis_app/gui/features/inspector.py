"""The unit inspector: the selected unit's header, its activation map (or overlay, or effective receptive field)
and its gradient / deconvnet / guided-backprop images, live. b/m cycle the backprop mode and view, x freezes the
unit while browsing layers. Other features add their sections to this pane (top-k, optimized image)."""

from __future__ import annotations

import numpy as np

from ...pipeline import FrameResult
from ...state import BACKPROP_MODES, BACKPROP_VIEWS, MAP_VIEWS, clamp_unit, cycle, methods_for, view_request
from ..backprop_facts import deconv_static_at, rectifier_cap
from ..feature import Feature, Key, Panel
from ..labels import layer_title
from ..widgets.images import SIGNED_COLORMAP, make_lut, overlay
from ..widgets.inspector_pane import InspectorPane

RF_SLOT = "rf"  # the receptive-field measurement job (and its model copy)
RULES_SLOT = "backprop-rules"  # whether the deconvnet map depends on the image (and its model copy)
STATIC_NOTE = "image-independent on this network"
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
        self._caps: dict[tuple, float | None] = {}  # (model, layer) -> its rectifier's ceiling
        self._static: dict[tuple, bool | None] = {}  # (model, layer) -> deconvnet map image-independent
        for name in ("backprop_mode", "backprop_view", "map_view", "unit", "unit_frozen", "backprop_blocked",
                     "backprop_crop"):
            getattr(st.events, name).connect(self._sync)
        ctx.live.painted.connect(self.paint)
        ctx.live.model_changed.connect(lambda _vm: (self._rf.clear(), self._caps.clear(), self._static.clear()))
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
        if not frozen and unit is not None and unit.layer != st.layer:
            layer = st.layer  # unfreezing comes back to the shown layer
            st.update(unit_frozen=False, unit=clamp_unit(layer, unit.channel, ctx.vm.channels(layer)))
        else:
            st.unit_frozen = bool(frozen)

    def reset(self) -> None:
        st = self.ctx.state
        unit = st.unit
        if unit is not None and unit.layer != st.layer:  # a frozen unit of another layer: back to the shown one
            st.unit = clamp_unit(st.layer, unit.channel, self.ctx.vm.channels(st.layer))
        st.reset("backprop_mode", "backprop_view", "unit_frozen", "map_view")

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
        # what the worker is asked for (none for a blocked unit), derived as the session derives it
        methods = view_request(st, request_id=0).attribution if st.unit is not None else methods_for(st.backprop_mode)
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
        if vm.is_class_layer(unit.layer) and unit.channel < len(vm.categories):
            name = f" &nbsp;<span style='color:#5ac8fa'>{vm.categories[unit.channel]}</span>"
        value = f"{res.unit_value:.3g}" if res.unit_value is not None else "-"
        frozen = " &nbsp;<span style='color:#ff6961'>[frozen]</span>" if ctx.state.unit_frozen else ""
        title = layer_title(vm, unit.layer)
        layer = (f"<b>{title}</b> <span style='color:#a9b0c0'>{unit.layer}</span>" if title
                 else f"<b>{unit.layer}</b>")
        # "unit 151" and "max 0.338" never break inside (a narrow dock wraps between the parts)
        pane.set_header(f"{layer} &nbsp;unit&nbsp;<b style='color:#ffd60a'>{unit.channel}</b>{name}{frozen}",
                        f"max {value}")
        info = vm.info(unit.layer)
        grid = info.grid if info.spatial else None  # (h, w) of the unit's map, None for vectors and sequences
        view = ctx.state.map_view
        canvas = pane.unit_map
        if view == "ERF":
            self._paint_erf(res, grid)
        elif res.unit_map is not None:
            signed = res.grid.signed and unit.layer == res.layer  # zero is mid-scale: use the diverging map
            lut = self._signed if signed else self._lut()
            canvas.caption = "overlay" if view == "overlay" else ""
            canvas.marker = None
            if res.unit_position is not None and grid is not None:
                y, x = res.unit_position  # the neuron the attributions explain, in layer cells
                canvas.marker = ((x + 0.5) / grid[1], (y + 0.5) / grid[0])
            if view == "overlay":
                canvas.set_image(overlay(res.image, res.unit_map, lut))
            else:  # coloured where it is scaled for the screen, off the GIL (`widgets.scaled`)
                canvas.set_image(res.unit_map, lut)
        else:
            canvas.clear(f"fully-connected unit: no spatial map\nvalue {value}")
        box = self._crop_box(res) if res.attributions and grid is not None else None
        for method, attr_canvas in pane.attr.items():
            img = res.attributions.get(method)
            if img is not None:
                detail = ctx.state.backprop_view
                if box is not None:
                    top, left, bottom, right = box
                    img = img[top:bottom, left:right]
                    detail += f", RF {bottom - top}x{right - left} px"
                attr_canvas.caption = ""  # said in the title: a badge would cover the patch
                attr_canvas.footer = STATIC_NOTE if method == "deconv" and self._deconv_static(unit.layer) else ""
                zero = self._zero_reason(res, img) if method == "gradient" else None
                if zero is not None:  # a blank image says nothing: say why it is blank
                    short, why = zero
                    pane.set_method_title(method, f"{detail}: zero")
                    attr_canvas.setToolTip(why)
                    attr_canvas.clear(short)
                    continue
                attr_canvas.setToolTip("")
                pane.set_method_title(method, detail)
                attr_canvas.set_image(img)

    # -- what the backprop images cannot show by themselves
    def rectifier_cap(self, layer: str) -> float | None:
        """The ceiling of the clipped rectifier whose output `layer` is (ReLU6: 6), None for anything else.
        Read from the module's type: the unit's value at the cap means its gradient is exactly zero there."""
        key = (self.ctx.vm.name, layer)
        if key not in self._caps:
            self._caps[key] = rectifier_cap(self.ctx.vm.net, layer)
        return self._caps[key]

    def _zero_reason(self, res: FrameResult, img: np.ndarray) -> tuple[str, str] | None:
        """(short, full) reason why the gradient image is blank (every pixel the same), None when it is not."""
        if img.size == 0 or img.min() != img.max():
            return None
        cap = self.rectifier_cap(res.unit.layer)
        at_peak = res.unit.y is None  # the explained neuron is the channel's maximum: `unit_value` is its value
        if cap is not None and at_peak and res.unit_value is not None and res.unit_value >= cap:
            return (f"gradient = 0:\nthe unit is at its\nReLU6 cap ({cap:g})",
                    f"The unit's value {res.unit_value:g} is at its rectifier's cap ({cap:g}): a clipped unit does "
                    f"not change when its input does, so its true gradient is exactly zero everywhere. Guided "
                    f"backprop and deconvnet still show what drives it.")
        return ("gradient = 0\non this frame", "No input pixel changes this unit on this frame: its gradient is "
                                                "exactly zero everywhere.")

    def _deconv_static(self, layer: str) -> bool:
        """True when the deconvnet map of `layer`'s units cannot depend on the image on this network (no max-pool
        switches, gating, ...: `AttributionContext.deconv_static`); checked once per layer by a background job on
        a private model copy, False until it is known."""
        key = (self.ctx.vm.name, layer)
        if key not in self._static:
            self._static[key] = None
            load = self.ctx.live.model_copy_loader(RULES_SLOT)
            size = self.ctx.vm.input_size

            def check(_abort):
                return deconv_static_at(load(), layer, size)

            self.ctx.jobs.start(RULES_SLOT, check, on_done=lambda static, k=key: self._set_static(k, static),
                                on_error=lambda _msg, k=key: self._static.pop(k, None))
        return bool(self._static[key])

    def _set_static(self, key: tuple, static: bool) -> None:
        self._static[key] = bool(static)
        if static:
            self.ctx.live.repaint()

    def _crop_box(self, res: FrameResult) -> tuple[int, int, int, int] | None:
        """The explained neuron's receptive field, clipped to the frame, when cropping is on and the field
        covers less than half of the input; None otherwise (the geometry is measured once per layer, on a
        private model copy in the background, and the full image is shown until it is known)."""
        if not self.ctx.state.backprop_crop or res.unit is None or res.unit_position is None:
            return None
        size = res.image.shape[0]
        key = (self.ctx.vm.name, res.unit.layer, size)
        if key not in self._rf:
            # One slot (and so one model copy): a new layer's measurement replaces a pending one, whose key is
            # forgotten so that it is measured again when its layer comes back.
            for stale in [k for k, geom in self._rf.items() if geom is None]:
                del self._rf[stale]
            self._rf[key] = None
            load = self.ctx.live.model_copy_loader(RF_SLOT)
            layer = res.unit.layer

            def measure(_abort):
                from ...receptive_field import rf_geometry

                return rf_geometry(load().net, layer, size)

            self.ctx.jobs.start(RF_SLOT, measure, on_done=lambda geom, k=key: self._rf.__setitem__(k, geom),
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

    def _paint_erf(self, res: FrameResult, grid: tuple[int, int] | None) -> None:
        canvas = self.pane.unit_map
        canvas.marker = None
        if grid is None:
            canvas.clear("ERF: needs a unit with a spatial map\n(this layer is fully connected)")
        elif res.erf_map is None or res.erf_frames == 0:
            canvas.clear("ERF: accumulating gradients...")
        else:
            # sqrt: the gradient mass is concentrated near the centre; its faint tails are the point of an ERF
            canvas.caption = f"ERF (sqrt), {res.erf_frames} frame{'s' if res.erf_frames != 1 else ''}"
            canvas.set_image(SQRT_LUT[res.erf_map], self._lut())

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
