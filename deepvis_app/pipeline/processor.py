"""One frame + one request -> one immutable FrameResult, with a single forward pass (no threads here).

Every layer is drawn and indexed through `layouts.as_maps(act, info)`: a channels-last ConvNeXt layer shows its
384 channels as 56x56 tiles, a ViT token layer its 768 features on the 14x14 patch grid (the class token apart, in
`FrameResult.prefix`), a vector one 1x1 tile per value. For channels-first maps `as_maps` is the tensor itself.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..devices import batch_threads
from ..errors import ParamError
from ..layouts import as_maps, prefix_tokens
from ..probe import Capture, Probe
from ..render import Grid, finish_predictions, grid_parts, prediction_parts, to_host, top_predictions, upscale_tensor
from ..values import ATTRIBUTION_METHODS, LIVE_CAMS, LayerInfo, Layout, TopKTile, Unit, ViewRequest
from ..zoo import VisModel
from .frames import Frame
from .replayed import REPLAYABLE, ReplayedForward
from .traced import SplitChoice, TracedForward
from .views import AttentionView, OverlayView, attention_view, needs_gradient, overlay_view, recorder_for

if TYPE_CHECKING:
    from ..topk.live import LiveTopK

# Live top-k diversity (grey levels, see LiveTopK.similar): a camera on a still scene offers the same view every
# frame; a repeat replaces the held shot only when it excites the unit more, so the k tiles are k moments.
LIVE_TOPK_SIMILAR = 6.0
# With interventions on, the predictions of the real network are refreshed every CLEAN_EVERY frames (a second
# forward; 1/25 of the frame rate) and at once when the interventions change.
CLEAN_EVERY = 25
# The attention rollout (every block's weights recomputed and multiplied: DeiT-tiny's 12 blocks cost a fifth of a
# forward) is refreshed every ROLLOUT_EVERY frames -- 5-6 times a second at DeiT-tiny's live rate on 2 CPU cores
# -- and at once when the block or the query changes; the chosen block's heads every frame.
ROLLOUT_EVERY = 8


@dataclass(frozen=True)
class FrameResult:
    """Everything one frame produced; immutable, safe to hand to any thread."""

    frame_id: int
    request_id: int
    model: str
    layer: str
    image: np.ndarray  # uint8 SxSx3: the frame as the network saw it
    grid: Grid  # one tile per channel of `layer` (features of a token layer), tiles on the layer's grid
    predictions: list[tuple[int, str, float]]
    unit: Unit | None = None
    unit_map: np.ndarray | None = None  # uint8 SxS: the unit's channel map, upscaled to the input
    unit_value: float | None = None  # the channel's maximum over its grid (a vector unit: its value)
    unit_position: tuple[int, int] | None = None  # (y, x) on the unit layer's grid: the request's position, else
    #                                               the channel's argmax; the neuron the attributions explain
    attributions: dict[str, np.ndarray] = field(default_factory=dict)  # method -> uint8 SxSx3
    live_topk: tuple[TopKTile, ...] | None = None  # the selected unit's live top-k (None: not tracked)
    live_topk_frames: int = 0  # frames the live top-k holds (bounded by units x k)
    erf_map: np.ndarray | None = None  # uint8 SxS: mean |d centre unit / d input| over the frames so far
    erf_frames: int = 0
    prefix: np.ndarray | None = None  # float32 P x C: the extra tokens (class, distillation, registers) of a
    #                                   token `layer`, kept out of the grid; None for other layers
    interventions: tuple = ()  # the interventions active in this frame's network (view titles say so)
    predictions_clean: list[tuple[int, str, float]] | None = None  # top-5 without them (refreshed every
    #                                                                CLEAN_EVERY frames and on every change)
    overlay: OverlayView | None = None  # the request's live CAM of a class over the input
    attention: AttentionView | None = None  # a transformer's attention heads and rollout
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    t_capture: float = 0.0
    t_done: float = 0.0

    @property
    def latency(self) -> float:
        return self.t_done - self.t_capture


def peak_parts(chan: torch.Tensor) -> torch.Tensor:
    """float64 [maximum, flat index of its first occurrence] of one map (a NaN wins, as `max` reports it), on the
    device: not read yet (`to_host`)."""
    value, index = chan.detach().reshape(-1).max(dim=0)
    return torch.stack([value.double(), index.double()])


def unit_peak(chan: torch.Tensor) -> tuple[float, tuple[int, int]]:
    """(maximum, (y, x) where it is) of one H x W map, with one host copy (the first occurrence; a NaN wins,
    as `max` reports it)."""
    both = peak_parts(chan).cpu().tolist()
    return both[0], divmod(int(both[1]), chan.shape[-1])


def whole_frame_units(info: LayerInfo) -> bool:
    """True when each unit of the layer sees the whole image: vectors, and tokens (attention mixes all patches),
    so a top-k crop is the whole frame; maps (channels first or last) have local receptive fields."""
    return info.layout in (Layout.VECTOR, Layout.TOKENS) or info.grid is None


@dataclass
class Begun:
    """A frame after `FrameProcessor.begin` (its forward): what `finish` needs, nothing `begin` changes later."""

    frame: Frame
    req: ViewRequest
    fitted: np.ndarray
    x: torch.Tensor
    layer: str
    unit: Unit | None
    uinfo: LayerInfo | None
    methods: tuple[str, ...]
    ctx: object  # attribution.AttributionContext holding the recorded graph, or None
    acts: dict[str, torch.Tensor]
    parts: object  # render's grid parts (finished with the host copy)
    send: dict[str, torch.Tensor | None]
    position: tuple[int, int] | None
    umaps: torch.Tensor | None
    overlay: OverlayView | None
    attention: AttentionView | None
    clean: list | None
    interventions: tuple
    timings: dict[str, float]
    t0: float
    net: torch.nn.Module | None = None  # what the forward ran through
    deferred: TracedForward | None = None  # a split frame's graph, run by `finish` (the predictions)
    split: tuple | None = None  # the SplitChoice key `finish` records this frame's stage time under (two stages)
    split_ran: bool = False  # whether the frame ran split (graph + the eager forward to the unit's layer)
    staged_s: float = 0.0  # seconds `begin` took



def explains(req: ViewRequest) -> bool:
    """Whether a frame of `req` records the rules' graph and `finish` backpropagates through it (a unit's views or
    its ERF): a backward's worth of work, worth a thread of its own (`pipeline.worker`)."""
    return req.unit is not None and (any(req.attribution) or req.erf)


class FrameProcessor:
    """Turns one frame + one request into a FrameResult with a single forward pass (no threads here)."""

    def __init__(self, model: VisModel) -> None:
        self.model = model
        self.live: LiveTopK | None = None
        self._live_key: tuple | None = None
        self._live_tiles: tuple[tuple[str, int], tuple[TopKTile, ...]] | None = None
        self._erf = None
        self._erf_key: tuple[str, int] | None = None
        self._deconv = None  # attribution.DeconvCache, made on the first explained unit
        self._net: torch.nn.Module | None = None  # what frames run through (see `_runnable`)
        self._infos: dict[str, LayerInfo] = {}
        self._cam_layer: str | None = None
        self._iv = None  # interventions.Intervened for the current list (made when it changes)
        self._iv_key: tuple = ()
        self._means = None  # interventions.RecentMeans: per-unit means over recent frames (mode "mean")
        self._clean: tuple[int, list] | None = None  # (frame id, predictions without interventions)
        self._rollout: tuple[tuple, int, AttentionView] | None = None  # (block, query, layer), frame id, view
        self.traced: TracedForward | None = None  # the plain forward's graphs (CPU; see `traced`)
        self.split = SplitChoice()  # per unit and layers: is the traced graph + a short eager forward faster?
        self.replayed: ReplayedForward | None = None  # explained frames without an eager forward (`replayed`)

    def info(self, layer: str) -> LayerInfo:
        """The model's facts about `layer` (layout, grid, channels), looked up once per processor."""
        info = self._infos.get(layer)
        if info is None:
            info = self._infos[layer] = self.model.info(layer)
        return info

    def cam_layer(self, req: ViewRequest) -> str:
        """The live overlay's layer: the request's, else the model's last layer with positions."""
        if req.overlay_layer:
            return req.overlay_layer
        if self._cam_layer is None:
            from ..evaluate.job import default_cam_layer

            self._cam_layer = default_cam_layer(self.model)
        return self._cam_layer

    def token_info(self, info: LayerInfo) -> LayerInfo:
        """A token layer's info for the attention maps: the shown layer's when it is one of the blocks' token layers,
        else the model's token layer with the most prefix tokens (the blocks', class token included: a patch
        embedding's tokens have none)."""
        tokens = [i for i in self.model.layer_info if i.layout is Layout.TOKENS and i.token_grid is not None]
        if not tokens:
            return info
        most = max(i.prefix_tokens for i in tokens)
        if info in tokens and info.prefix_tokens == most:
            return info
        return next(i for i in tokens if i.prefix_tokens == most)

    def interventions(self, req: ViewRequest, net: torch.nn.Module):
        """The context applying the request's enabled interventions to `net` (made once per list), or None."""
        from ..interventions import active

        if not active(req.interventions):
            self._iv, self._iv_key, self._clean = None, (), None
            return None
        if self._iv is None or self._iv_key != req.interventions:
            from ..interventions import Intervened, RecentMeans

            self._means = self._means or RecentMeans()
            self._iv = Intervened.for_model(self.model, req.interventions, net=net, means=self._means)
            self._iv_key, self._clean = req.interventions, None
        return self._iv

    def clean_predictions(self, frame_id: int, net: torch.nn.Module, x: torch.Tensor) -> list:
        """The real network's top-5 on this frame, at most every CLEAN_EVERY frames (else the last ones)."""
        if self._clean is not None and frame_id - self._clean[0] < CLEAN_EVERY:
            return self._clean[1]
        with torch.inference_mode():
            logits = net(x.detach())
        rows = top_predictions(logits[0], self.model.categories) if logits.dim() == 2 else []
        self._clean = (frame_id, rows)
        return rows

    def _runnable(self, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
        """The network and input this frame's forward runs: on the CPU a private channels-last copy of the model
        (same modules and layer names, made on the first frame; `fastnet` says why and what it gains) and `x` in
        that layout; on a GPU the model itself. A model's weights do not change while a processor runs it (a
        new model comes with a new processor)."""
        if x.device.type != "cpu" or x.dim() != 4:
            return self.model.net, x
        if self._net is None:
            from ..fastnet import fast_copy

            self._net = fast_copy(self.model.net, x, fold=False)
        return self._net, x.contiguous(memory_format=torch.channels_last)

    def _graphs(self, net: torch.nn.Module, recorder, intervened) -> TracedForward | None:
        """The traced graphs of this processor's CPU copy (made on first use), or None where a frame's forward
        must run eagerly: on a GPU, and with per-frame hooks on the net (attention recorder, interventions)."""
        if recorder is not None or intervened is not None or net is not self._net:
            return None
        self.traced = self.traced or TracedForward(net)
        return self.traced

    def _update_erf(self, ctx, x: torch.Tensor, activation: torch.Tensor, unit: Unit,
                    info: LayerInfo) -> tuple[torch.Tensor, int]:
        """Add this frame's |gradient| of the channel's centre unit (plain rule) to the running mean; returns the
        map as uint8 on the device (read back with the frame's other arrays)."""
        from ..receptive_field import EffectiveRF

        key = (unit.layer, unit.channel)
        if self._erf is None or self._erf_key != key:
            self._erf, self._erf_key = EffectiveRF(self.model.net, unit.layer, channel=unit.channel), key
        if info.spatial:
            maps = as_maps(activation, info)
            cy, cx = maps.shape[2] // 2, maps.shape[3] // 2
            objective = maps[:, unit.channel, cy, cx].sum()
            compiled = ctx.compiled_grads(objective, activation, x, ["gradient"])  # no Python per op (`program`)
            if compiled is not None:
                grad = compiled["gradient"]
            else:
                (grad,) = ctx.grad(objective, x, "gradient", retain_graph=True)
            self._erf.add(torch.zeros_like(x) if grad is None else grad)
        heat = self._erf.map if self._erf.count else torch.zeros(x.shape[-2:], device=x.device)
        heat = heat / heat.amax().clamp_min(torch.finfo(torch.float32).tiny)
        return (heat * 255).round().to(torch.uint8), self._erf.count

    def _update_live_topk(self, frame_id: int, fitted: np.ndarray, req: ViewRequest, maps: torch.Tensor,
                          info: LayerInfo) -> tuple[TopKTile, ...]:
        """Offer the frame to the running top-k of the unit's layer (`maps`: its C x H x W view); return the
        selected unit's tiles.

        The receptive-field geometry of a map layer is computed once (well under a second on a CPU) the first
        time it is needed; a token or vector layer's units see the whole frame. Tiles are rebuilt only when the
        selected unit's entries changed.
        """
        from functools import partial

        from ..receptive_field import rf_box
        from ..topk.live import LiveTopK

        unit = req.unit
        assert unit is not None
        key = (unit.layer, req.live_topk_k, req.live_topk_epoch)
        if self.live is None or self._live_key != key:
            rf = None if whole_frame_units(info) else partial(rf_box, self.model.net, unit.layer,
                                                               input_size=self.model.input_size)
            self.live = LiveTopK(unit.layer, info.channels, req.live_topk_k, rf_fn=rf, similar=LIVE_TOPK_SIMILAR,
                                 spatial=info.spatial)
            self._live_key, self._live_tiles = key, None
        taken = self.live.update(frame_id, fitted, maps)
        cached = self._live_tiles
        if cached is not None and cached[0] == (unit.layer, unit.channel) and not taken:
            return cached[1]
        tiles = tuple(
            TopKTile(value=e.value, frame_id=e.image_id, y=e.y, x=e.x, box=e.box,
                     patch=self.live.crop(unit.channel, e.rank), frame=self.live.image(e))
            for e in self.live.entries(unit.channel))
        self._live_tiles = ((unit.layer, unit.channel), tiles)
        return tiles

    def process(self, frame: Frame, req: ViewRequest) -> FrameResult:
        """The frame's whole work on this thread: `finish(begin(frame, req))`."""
        return self.finish(self.begin(frame, req))

    def begin(self, frame: Frame, req: ViewRequest, *, staged: bool = False) -> Begun:
        """Stage one: preprocess, the one forward (recording the rules' graph up to the unit's layer when a unit is
        explained) and the grid's and predictions' tensors. The CPU worker may run `finish` of this frame on
        another thread while this one begins the next frame (`staged`: `pipeline.stages`); then a split frame
        leaves its traced graph (the predictions) to `finish`, and `SplitChoice` times the longer stage."""
        vm = self.model
        layer = req.layer or vm.default_layer
        info = self.info(layer)
        unit = req.unit
        uinfo = self.info(unit.layer) if unit is not None else None
        methods = tuple(m for m in req.attribution if m) if unit is not None else ()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        fitted = vm.preprocess.fit(frame.rgb, req.crop)
        x = vm.preprocess.to_tensor(fitted)
        t1 = time.perf_counter()
        timings["preprocess"] = t1 - t0
        cam_layer = self.cam_layer(req) if req.overlay else None
        grad_cam = cam_layer is not None and needs_gradient(req.overlay)
        layers = list(dict.fromkeys([layer, *([unit.layer] if unit is not None else []),
                                     *([cam_layer] if cam_layer else [])]))
        ctx = None
        net, x = self._runnable(x)
        recorder = recorder_for(net, req.attention_block) if req.attention else None
        kept = fresh = None
        if recorder is not None:
            tinfo = self.token_info(info)
            key = (recorder.last, req.attention_patch, tinfo.name)
            kept = self._rollout
            fresh = kept is None or kept[0] != key or frame.frame_id - kept[1] >= ROLLOUT_EVERY \
                or frame.frame_id < kept[1]
            recorder.last_only = not fresh  # the heads only: one block's hook
        intervened = self.interventions(req, net)
        split = deferred = whole = None
        with recorder or nullcontext(), intervened or nullcontext():
            if methods or (req.erf and unit is not None):
                from ..attribution import AttributionContext  # loaded only when a unit is explained

                # Replayed once learned (`pipeline.replayed`): the traced forward returns what the compiled
                # backward reads, and no graph is recorded. Else the one eager forward: grad is recorded only up to
                # the unit's layer (every attribution method and the ERF backpropagate from there); the rest of the
                # net, predictions included, runs without a graph -- unless a live Grad-CAM needs the head's graph
                # too. Or split, where `traced.SplitChoice` measures it faster: the whole net as the traced graph,
                # then the rule-recording forward stopped at the unit's layer.
                cut = None if grad_cam else unit.layer

                def wide():
                    """Several views: the frame's work is three backward passes' worth, batched (`stacked`), so
                    its forward takes every spare core too (`devices.batch_threads`: only while no other program
                    wants them); a plain frame keeps the measured one-thread policy."""
                    return batch_threads(x.device) if len(methods) >= 2 else nullcontext()

                graphs = None if grad_cam else self._graphs(net, recorder, intervened)
                replayed = calls = None
                if graphs is not None and REPLAYABLE.issuperset(methods):
                    # replayed: the traced forward feeding the compiled backward, no eager forward at all
                    # (`pipeline.replayed`); `calls` when this frame's eager forward learns or checks it
                    self.replayed = self.replayed or ReplayedForward(net)
                    with wide():
                        replayed, calls = self.replayed.run(x, layers, unit.layer)
                cam_leaf = None
                if replayed is not None:
                    logits, acts, ctx = replayed
                    x.requires_grad_(True)  # explain's check (the program computes d unit / d x)
                else:
                    if graphs is not None and calls is None:  # a learning frame runs the plain eager forward
                        split = (tuple(layers), unit.layer, methods)
                        if self.split.wants(split):
                            if staged and layers == [unit.layer] and not req.overlay and graphs.ready(layers):
                                deferred = graphs  # the eager forward to the unit here; the graph in `finish`
                            else:
                                with wide():
                                    whole = graphs.run(x, layers)
                    x.requires_grad_(True)
                    if deferred is not None:
                        with wide(), AttributionContext(net) as ctx, Capture(net, layers, stop=True,
                                                                             example=x) as probe:
                            probe.run(x)
                        logits, acts = None, dict(probe.activations)
                    elif whole is not None:
                        logits, acts = whole
                        with wide(), AttributionContext(net) as ctx, Capture(net, [unit.layer], stop=True,
                                                                             example=x) as probe:
                            probe.run(x)
                        acts[unit.layer] = probe[unit.layer]
                    else:
                        with wide(), AttributionContext(net) as ctx, Capture(net, layers, no_grad_after=cut,
                                                                             example=x) as probe:
                            with calls or nullcontext():  # entered last: it sees the model's own calls
                                logits = probe.run(x)
                        acts = dict(probe.activations)
                    cam_leaf = probe.activations.get(cam_layer) if grad_cam else None
                    if calls is not None:
                        self.replayed.learn(x, layers, unit.layer, calls, acts, ctx.deconv_static)
                    if split is not None and not staged:
                        self.split.record(split, whole is not None, time.perf_counter() - t1)
            elif grad_cam:
                # Only the head records a graph: from the CAM layer (a fresh leaf) to the logits.
                with torch.no_grad(), Capture(net, layers, grad_from=cam_layer, example=x) as probe:
                    logits = probe.run(x)
                acts, cam_leaf = dict(probe.activations), probe.leaves.get(cam_layer)
            else:
                # a traced graph once the layers hold still (the CPU copy only; no per-frame hooks on the net)
                graphs = self._graphs(net, recorder, intervened)
                plain = graphs.run(x, layers) if graphs is not None else None
                if plain is not None:
                    logits, acts = plain
                else:
                    with Probe(net, layers, detach=True) as probe, torch.inference_mode():
                        logits = net(x)
                        acts = dict(probe.activations)
                cam_leaf = None
        # No device-wide sync: the live stream's work is waited for once, at the frame's one read-back (`to_host`
        # below). On a GPU the stage times before it measure queueing; the wait is counted where it happens.
        t2 = time.perf_counter()
        timings["forward"] = t2 - t1
        act = acts[layer].detach()
        parts = grid_parts(as_maps(act, info)[0], norm=req.norm, gamma=req.gamma, min_tile=8)
        send: dict[str, torch.Tensor | None] = dict(parts.tensors())
        extra = prefix_tokens(act, info)
        send["prefix"] = extra[0].float() if extra is not None else None
        send["predictions"] = prediction_parts(logits[0]) if logits is not None and logits.dim() == 2 else None
        position = None
        umaps = None
        if unit is not None:
            umaps = as_maps(acts[unit.layer].detach(), uinfo)
        if umaps is not None and 0 <= unit.channel < uinfo.channels:
            chan = umaps[0, unit.channel]
            send["peak"] = peak_parts(chan)  # a vector: its one value (index 0)
            if uinfo.grid is not None:
                position = unit.position
                if position is None and methods:  # the attributions explain the peak: its place is needed now
                    flat = int(to_host({"peak": send["peak"]})["peak"][1])
                    position = divmod(flat, chan.shape[-1])
                if uinfo.spatial:
                    send["unit_map"] = upscale_tensor(chan, vm.input_size)
        overlay = attention = None
        if cam_layer is not None and logits.dim() == 2:
            cls = req.overlay_class if req.overlay_class is not None else int(logits[0].detach().argmax())
            grad = None
            if cam_leaf is not None and logits.requires_grad:
                (grad,) = torch.autograd.grad(logits[0, cls], cam_leaf, retain_graph=ctx is not None,
                                              allow_unused=True)
            overlay = overlay_view(req.overlay, cam_layer, self.info(cam_layer), acts[cam_layer], grad, cls,
                                   vm.input_size)
        clean = self.clean_predictions(frame.frame_id, net, x) if intervened is not None else None
        if recorder is not None:
            attention = attention_view(recorder, tinfo, req.attention_patch, vm.input_size,
                                       previous=None if fresh else kept[2])
            if fresh:
                self._rollout = (key, frame.frame_id, attention)
        t3 = time.perf_counter()
        timings["render"] = t3 - t2
        return Begun(frame=frame, req=req, fitted=fitted, x=x, layer=layer, unit=unit, uinfo=uinfo,
                     methods=methods, ctx=ctx, acts=acts, parts=parts, send=send, position=position, umaps=umaps,
                     overlay=overlay, attention=attention, clean=clean,
                     interventions=tuple(iv for iv in self._iv_key if iv.enabled), timings=timings, t0=t0,
                     net=net, deferred=deferred, split=split if staged else None,
                     split_ran=deferred is not None or whole is not None, staged_s=t3 - t0)

    def _deferred_predictions(self, begun: Begun) -> torch.Tensor | None:
        """The predictions' tensor of a split frame from its traced graph (the whole net, no rules); the plain
        eager forward where the graph declines this frame (dropped, or found to disagree)."""
        x = begun.x.detach()
        out = begun.deferred.run(x, [begun.layer])
        if out is not None:
            logits = out[0]
        else:
            with torch.inference_mode():
                logits = begun.net(x)
        return prediction_parts(logits[0]) if logits.dim() == 2 else None

    def finish(self, begun: Begun) -> FrameResult:
        """Stage two: the unit's backprop views and ERF from the graph `begin` recorded, the frame's one copy to
        the host, the live top-k, the FrameResult. Keeps the state only it touches (deconv cache, ERF, live top-k),
        so `begin` of the next frame may run beside it."""
        vm, frame, req, x, acts, send, timings = (self.model, begun.frame, begun.req, begun.x, begun.acts,
                                                  begun.send, begun.timings)
        ctx, unit, uinfo, methods, position = begun.ctx, begun.unit, begun.uinfo, begun.methods, begun.position
        t_finish = t3 = time.perf_counter()
        if begun.deferred is not None:  # the split frame's graph, left here by `begin(staged=True)`
            send["predictions"] = self._deferred_predictions(begun)
            timings["graph"] = time.perf_counter() - t3
            t3 = time.perf_counter()
        erf_map, erf_frames = None, 0
        if ctx is not None and req.erf:
            send["erf"], erf_frames = self._update_erf(ctx, x, acts[unit.layer], unit, uinfo)
        if ctx is not None and methods:
            from ..attribution.views import view_tensor

            if self._deconv is None:
                from ..attribution import DeconvCache

                self._deconv = DeconvCache()
            # The neuron explained: the request's position, else the channel's argmax in the layer's own view.
            target = unit.at(*position) if position is not None else unit
            explanation = ctx.explain(x, acts[unit.layer], target, methods, info=uinfo, deconv_cache=self._deconv)
            for m in methods:
                send[f"view.{m}"] = view_tensor(explanation[m], req.attribution_view, percentile=99.5)
            timings["attribution"] = time.perf_counter() - t3
        t_read = time.perf_counter()
        host = to_host(send)  # the frame's one copy to the host: everything it shows
        timings["read"] = time.perf_counter() - t_read
        grid = begun.parts.finish(host)
        prefix = host.get("prefix")
        predictions = finish_predictions(host["predictions"], vm.categories) if "predictions" in host else []
        unit_map = host.get("unit_map")
        unit_value = None
        if "peak" in host:
            unit_value = float(host["peak"][0])
            if position is None and uinfo.grid is not None:
                position = divmod(int(host["peak"][1]), uinfo.grid[1])
        if "erf" in host:
            erf_map = host["erf"]
        attributions = {m: host[f"view.{m}"] for m in methods if f"view.{m}" in host}
        live_tiles = None
        if req.live_topk and begun.umaps is not None:
            t4 = time.perf_counter()
            live_tiles = self._update_live_topk(frame.frame_id, begun.fitted, req, begun.umaps[0], uinfo)
            timings["live_topk"] = time.perf_counter() - t4
        t_done = time.perf_counter()
        timings["total"] = t_done - begun.t0
        if begun.split is not None:  # two stages: what bounds the rate is the longer one
            self.split.record(begun.split, begun.split_ran, max(begun.staged_s, t_done - t_finish))
        return FrameResult(frame_id=frame.frame_id, request_id=req.request_id, model=vm.name, layer=begun.layer,
                           image=begun.fitted, grid=grid, predictions=predictions, unit=unit, unit_map=unit_map,
                           unit_value=unit_value, unit_position=position, attributions=attributions,
                           live_topk=live_tiles, live_topk_frames=self.live.image_count if self.live else 0,
                           erf_map=erf_map, erf_frames=erf_frames, prefix=prefix, overlay=begun.overlay,
                           attention=begun.attention, predictions_clean=begun.clean,
                           interventions=begun.interventions,
                           timings=timings,
                           t_capture=frame.t_capture, t_done=t_done)


def validate_request(model: VisModel, request: ViewRequest) -> None:
    """Fail early with one line (listing what is valid) for a layer, unit or method the model cannot show.

    The unit is checked by the model (`check_unit`): its channel against the layer's units (features of a token
    layer, channels of a channels-last map) and a position against the layer's grid (refused on a layer without
    positions)."""
    if request.layer:
        model.info(request.layer)
    if request.unit is not None:
        model.check_unit(request.unit)
    for iv in request.interventions:  # a layer and channels the model has
        info = model.info(iv.layer)
        bad = [c for c in iv.channels if not 0 <= c < info.channels]
        if bad:
            raise ParamError("interventions", f"unit {bad[0]} of {iv.layer!r} does not exist: valid units are "
                                              f"0..{info.channels - 1}")
    if request.overlay:
        if request.overlay not in LIVE_CAMS:
            raise ParamError("overlay", f"must be one of {', '.join(LIVE_CAMS)}, not {request.overlay!r}")
        if request.overlay_layer and not model.info(request.overlay_layer).spatial:
            raise ParamError("overlay_layer", f"{request.overlay_layer!r} has no positions for a CAM")
        if request.overlay_class is not None:
            model.check_class(request.overlay_class)
    bad = [m for m in request.attribution if m not in ATTRIBUTION_METHODS]
    if bad:
        raise ParamError("attribution", f"method {bad[0]!r} is unknown; valid: {', '.join(ATTRIBUTION_METHODS)}")
