"""The live pipeline: capture thread -> latest-frame slot -> inference worker -> immutable FrameResult.

Nothing here knows about Qt. The GUI hands the worker small immutable `ViewRequest`s (newest wins) and
receives `FrameResult`s through a callback that it turns into a queued signal; `run_headless` drives the
exact same objects without a window.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import DeepVisError, SourceError
from .probe import Probe
from .render import Grid, render_grid, top_predictions, upscale_map
from .sources import FrameSource
from .zoo import VisModel

if TYPE_CHECKING:
    from .topk.live import LiveTopK

StatusFn = Callable[[str], None]


@dataclass(frozen=True)
class Frame:
    frame_id: int
    rgb: np.ndarray
    t_capture: float  # time.perf_counter() when the frame was read


class LatestSlot:
    """A one-frame mailbox: `put` overwrites (counting the frame it drops), `take` blocks until a new one.

    A slow consumer therefore always gets the newest frame and nothing queues up.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.put_count = 0
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self.put_count += 1
            self._cond.notify_all()

    def take(self, timeout: float | None = None) -> Frame | None:
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def wait_taken(self, timeout: float | None = None, cancel: threading.Event | None = None) -> bool:
        """Block until the slot is empty (the consumer took the frame); used by pull-paced sources.
        `cancel` (checked on every wake-up) ends the wait early."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._frame is None or self._closed or (cancel is not None and cancel.is_set()), timeout)

    def wake(self) -> None:
        """Wake every waiter so it re-checks its own stop condition."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


MIN_FPS, MAX_FPS = 0.01, 1000.0
MAX_TIMEOUT = 1e7  # seconds (~4 months); threading waits overflow somewhere above 1e9


def check_fps(fps: float | None) -> None:
    """None (the source's rate), 0 (as fast as taken) or MIN_FPS..MAX_FPS; a pace like 1e-12 would ask the
    capture thread to sleep for 30000 years (and overflow the wait)."""
    if fps is None or fps == 0:
        return
    if not (isinstance(fps, int | float) and math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise DeepVisError(f"--fps must be 0 (as fast as the network takes frames) or between {MIN_FPS:g} and "
                           f"{MAX_FPS:g}, got {fps}")


class Capture(threading.Thread):
    """Reads a source on its own thread at the requested pace and posts frames into a `LatestSlot`.

    fps: None = the source's own rate (cameras: as they deliver), 0 = as fast as the consumer takes frames,
    N = paced to N per second. A source that stops delivering (a camera unplugged) is reported through
    `on_status` and re-opened once a second until it comes back; the thread never dies for it.
    """

    RETRY_SECONDS = 1.0

    def __init__(self, source: FrameSource, slot: LatestSlot, *, fps: float | None = None, mirror: bool = False,
                 on_status: StatusFn | None = None) -> None:
        super().__init__(name="deepvis-capture", daemon=True)
        check_fps(fps)
        self.source = source
        self.slot = slot
        self.fps = fps
        self.mirror = mirror
        self.on_status = on_status or (lambda _msg: None)
        self._halt = threading.Event()
        self.frames_read = 0
        self.lost = False

    def stop(self) -> None:
        """Stop reading; the slot stays open (the worker may go on with a new source's slot)."""
        self._halt.set()
        self.slot.wake()

    def _rate(self) -> float | None:
        if self.fps is not None:
            return self.fps
        if self.source.reconnectable:  # a camera paces itself
            return None
        return self.source.native_fps

    def run(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # leave the cores to the network
        next_t = time.perf_counter()
        frame_id = 0
        try:
            while not self._halt.is_set():
                rate = self._rate()
                if rate == 0:  # pulled: the next frame only once the last one was taken, however long it takes
                    while not self.slot.wait_taken(timeout=0.5, cancel=self._halt):
                        pass
                    if self._halt.is_set():
                        break
                try:
                    rgb = self.source.read()
                except SourceError as err:
                    self.on_status(f"source error: {err}")
                    rgb = None
                if rgb is None:
                    self._recover()
                    next_t = time.perf_counter()
                    continue
                if self.mirror:
                    rgb = np.ascontiguousarray(rgb[:, ::-1])
                self.slot.put(Frame(frame_id, rgb, time.perf_counter()))
                frame_id += 1
                self.frames_read += 1
                if rate:
                    next_t += 1.0 / rate
                    delay = next_t - time.perf_counter()
                    if delay > 0:
                        self._halt.wait(delay)
                    else:
                        next_t = time.perf_counter()  # fell behind: do not burst to catch up
        finally:
            self.source.close()

    def _recover(self) -> None:
        self.lost = True
        self.on_status(f"{self.source.name}: lost (no frames); retrying every {self.RETRY_SECONDS:g} s")
        self.source.close()
        while not self._halt.wait(self.RETRY_SECONDS):
            try:
                self.source.open()
            except SourceError:
                continue
            self.lost = False
            self.on_status(f"{self.source.name}: reconnected")
            return


@dataclass(frozen=True)
class Unit:
    """One unit: a layer's channel, optionally at a spatial position (default: the channel's argmax)."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    @staticmethod
    def parse(text: str) -> Unit:
        """`LAYER:CHANNEL` or `LAYER:CHANNEL:Y:X` (as used by `--select`)."""
        parts = text.split(":")
        numbers = parts[1:]
        if len(parts) not in (2, 4) or not parts[0] or not all(n.isdigit() for n in numbers):
            raise DeepVisError(f"bad unit {text!r}: use LAYER:CHANNEL or LAYER:CHANNEL:Y:X")
        if len(parts) == 2:
            return Unit(parts[0], int(numbers[0]))
        return Unit(parts[0], int(numbers[0]), int(numbers[1]), int(numbers[2]))

    def __str__(self) -> str:
        return f"{self.layer}:{self.channel}" + (f":{self.y}:{self.x}" if self.y is not None else "")


ATTRIBUTION_METHODS = ("gradient", "deconv", "guided")


@dataclass(frozen=True)
class ViewRequest:
    """What the user currently wants to see; replaced wholesale (never mutated) whenever it changes."""

    request_id: int = 0
    layer: str = ""
    unit: Unit | None = None
    norm: str = "layer"
    gamma: float = 1.0
    crop: str | None = None
    attribution: tuple[str, ...] = ()
    attribution_view: str = "norm"
    paused: bool = False
    live_topk: bool = False  # keep a running top-k of frames for the units of `unit.layer`
    live_topk_k: int = 9
    live_topk_epoch: int = 0  # bump to clear the live top-k
    erf: bool = False  # accumulate the effective receptive field of the unit's channel at the layer centre

    def with_changes(self, **changes) -> ViewRequest:
        return replace(self, request_id=self.request_id + 1, **changes)


# Live top-k diversity (grey levels, see LiveTopK.similar): a camera on a still scene offers the same view every
# frame; a repeat replaces the held shot only when it excites the unit more, so the k tiles are k moments.
LIVE_TOPK_SIMILAR = 6.0


@dataclass(frozen=True)
class TopKTile:
    """One live top-k entry of the selected unit, with its receptive-field patch."""

    value: float
    frame_id: int
    y: int
    x: int
    box: tuple[int, int, int, int]
    patch: np.ndarray  # uint8 HxWx3, zero-padded where the box leaves the frame
    frame: np.ndarray  # uint8 SxSx3: the whole frame as the network saw it


@dataclass(frozen=True)
class FrameResult:
    """Everything one frame produced; immutable, safe to hand to any thread."""

    frame_id: int
    request_id: int
    model: str
    layer: str
    image: np.ndarray  # uint8 SxSx3: the frame as the network saw it
    grid: Grid
    predictions: list[tuple[int, str, float]]
    unit: Unit | None = None
    unit_map: np.ndarray | None = None  # uint8 SxS: the unit's channel map, upscaled to the input
    unit_value: float | None = None
    unit_position: tuple[int, int] | None = None  # (y, x) the attributions explain (argmax by default)
    attributions: dict[str, np.ndarray] = field(default_factory=dict)  # method -> uint8 SxSx3
    live_topk: tuple[TopKTile, ...] | None = None  # the selected unit's live top-k (None: not tracked)
    live_topk_frames: int = 0  # frames the live top-k holds (bounded by units x k)
    erf_map: np.ndarray | None = None  # uint8 SxS: mean |d centre unit / d input| over the frames so far
    erf_frames: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    t_capture: float = 0.0
    t_done: float = 0.0

    @property
    def latency(self) -> float:
        return self.t_done - self.t_capture


class FrameProcessor:
    """Turns one frame + one request into a FrameResult with a single forward pass (no threads here)."""

    def __init__(self, model: VisModel) -> None:
        self.model = model
        self._sync = model.device.type == "cuda"
        self.live: LiveTopK | None = None
        self._live_key: tuple | None = None
        self._live_tiles: tuple[tuple[str, int], tuple[TopKTile, ...]] | None = None
        self._erf = None
        self._erf_key: tuple[str, int] | None = None
        self._deconv = None  # attribution.DeconvCache, made on the first explained unit
        self._net: torch.nn.Module | None = None  # what frames run through (see `_runnable`)

    def _runnable(self, x: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor]:
        """The network and input this frame's forward runs: on the CPU a private channels-last copy of the model
        (same modules and layer names, made on the first frame; `fastnet` says why and what it gains) and `x` in
        that layout; on a GPU the model itself. A model's weights do not change while a processor runs it (a
        new model comes with a new processor)."""
        if x.device.type != "cpu" or x.dim() != 4:
            return self.model.net, x
        if self._net is None:
            from .fastnet import fast_copy

            self._net = fast_copy(self.model.net, x, fold=False)
        return self._net, x.contiguous(memory_format=torch.channels_last)

    def _update_erf(self, ctx, x: torch.Tensor, activation: torch.Tensor, unit: Unit) -> tuple[np.ndarray, int]:
        """Add this frame's |gradient| of the channel's centre unit (plain rule) to the running mean."""
        from .receptive_field import EffectiveRF

        key = (unit.layer, unit.channel)
        if self._erf is None or self._erf_key != key:
            self._erf, self._erf_key = EffectiveRF(self.model.net, unit.layer, channel=unit.channel), key
        if activation.dim() == 4:
            cy, cx = activation.shape[2] // 2, activation.shape[3] // 2
            (grad,) = ctx.grad(activation[:, unit.channel, cy, cx].sum(), x, "gradient", retain_graph=True)
            self._erf.add(torch.zeros_like(x) if grad is None else grad)
        heat = self._erf.map if self._erf.count else torch.zeros(x.shape[-2:], device=x.device)
        heat = heat / heat.amax().clamp_min(torch.finfo(torch.float32).tiny)
        return (heat * 255).round().to(torch.uint8).cpu().numpy(), self._erf.count

    def _update_live_topk(self, frame_id: int, fitted: np.ndarray, req: ViewRequest,
                          activation: torch.Tensor) -> tuple[TopKTile, ...]:
        """Offer the frame to the running top-k of the unit's layer; return the selected unit's tiles.

        The receptive-field geometry of a layer is computed once (well under a second on a CPU) the first
        time it is needed; tiles are rebuilt only when the selected unit's entries changed.
        """
        from functools import partial

        from .receptive_field import rf_box
        from .topk.live import LiveTopK

        unit = req.unit
        assert unit is not None
        key = (unit.layer, req.live_topk_k, req.live_topk_epoch)
        if self.live is None or self._live_key != key:
            channels = activation.shape[0]
            spatial = activation.dim() == 3
            rf = partial(rf_box, self.model.net, unit.layer, input_size=self.model.input_size) if spatial else None
            self.live = LiveTopK(unit.layer, channels, req.live_topk_k, rf_fn=rf, similar=LIVE_TOPK_SIMILAR)
            self._live_key, self._live_tiles = key, None
        taken = self.live.update(frame_id, fitted, activation)
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
        vm = self.model
        layer = req.layer or vm.default_layer
        unit = req.unit
        methods = tuple(m for m in req.attribution if m) if unit is not None else ()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        fitted = vm.preprocess.fit(frame.rgb, req.crop)
        x = vm.preprocess.to_tensor(fitted)
        t1 = time.perf_counter()
        timings["preprocess"] = t1 - t0
        layers = [layer] + ([unit.layer] if unit is not None and unit.layer != layer else [])
        ctx = None
        if methods or (req.erf and unit is not None):
            from .attribution import AttributionContext, GraphCut  # loaded only when a unit is explained

            # The one forward: grad is recorded only up to the unit's layer (every attribution method and the
            # ERF backpropagate from there); the rest of the net, predictions included, runs without a graph.
            net, x = self._runnable(x)
            cut = GraphCut(net, unit.layer, x)
            x.requires_grad_(True)
            with AttributionContext(net) as ctx, Probe(net, layers) as probe, cut:
                logits = net(x)
            acts = dict(probe.activations)
        else:
            net, x = self._runnable(x)
            with Probe(net, layers, detach=True) as probe, torch.inference_mode():
                logits = net(x)
                acts = dict(probe.activations)
        if self._sync:
            torch.cuda.synchronize(vm.device)
        t2 = time.perf_counter()
        timings["forward"] = t2 - t1
        grid = render_grid(acts[layer][0].detach(), norm=req.norm, gamma=req.gamma, min_tile=8)
        predictions = top_predictions(logits[0], vm.categories) if logits.dim() == 2 else []
        unit_map = unit_value = None
        if unit is not None:
            ua = acts[unit.layer][0].detach()
            if ua.dim() == 3 and 0 <= unit.channel < ua.shape[0]:
                unit_map = upscale_map(ua[unit.channel], vm.input_size)
                unit_value = float(ua[unit.channel].max())
            elif ua.dim() == 1 and 0 <= unit.channel < ua.shape[0]:
                unit_value = float(ua[unit.channel])
        t3 = time.perf_counter()
        timings["render"] = t3 - t2
        attributions: dict[str, np.ndarray] = {}
        position = None
        erf_map, erf_frames = None, 0
        if ctx is not None and req.erf:
            erf_map, erf_frames = self._update_erf(ctx, x, acts[unit.layer], unit)
        if ctx is not None and methods:
            from .attribution import Unit as Target
            from .attribution import render_view

            if self._deconv is None:
                from .attribution import DeconvCache

                self._deconv = DeconvCache()
            explanation = ctx.explain(x, acts[unit.layer], Target(unit.channel, unit.y, unit.x), methods,
                                      deconv_cache=self._deconv, layer=unit.layer)
            position = (explanation.unit.y, explanation.unit.x) if explanation.unit.y is not None else None
            attributions = {m: render_view(explanation[m], req.attribution_view, percentile=99.5) for m in methods}
            timings["attribution"] = time.perf_counter() - t3
        live_tiles = None
        if req.live_topk and unit is not None and unit.layer in acts:
            t4 = time.perf_counter()
            live_tiles = self._update_live_topk(frame.frame_id, fitted, req, acts[unit.layer][0].detach())
            timings["live_topk"] = time.perf_counter() - t4
        t_done = time.perf_counter()
        timings["total"] = t_done - t0
        return FrameResult(frame_id=frame.frame_id, request_id=req.request_id, model=vm.name, layer=layer,
                           image=fitted, grid=grid, predictions=predictions, unit=unit, unit_map=unit_map,
                           unit_value=unit_value, unit_position=position, attributions=attributions,
                           live_topk=live_tiles, live_topk_frames=self.live.image_count if self.live else 0,
                           erf_map=erf_map, erf_frames=erf_frames,
                           timings=timings,
                           t_capture=frame.t_capture, t_done=t_done)


class InferenceWorker(threading.Thread):
    """Owns the model: takes the newest frame, processes it with the newest request, publishes the result.

    `set_request`, `set_model` and `set_slot` only swap references; they take effect at the next frame
    boundary, so the caller (the GUI thread) never waits on inference. A model arrives together with the
    request meant for it (one reference), so the new model never runs with the old model's layer. Errors are
    reported through `on_error` and the loop goes on with the next frame.
    """

    def __init__(self, model: VisModel, slot: LatestSlot, publish: Callable[[FrameResult], None], *,
                 request: ViewRequest | None = None, on_error: StatusFn | None = None,
                 threads: int | None = None) -> None:
        super().__init__(name="deepvis-inference", daemon=True)
        self.threads = threads  # torch intra-op threads for this thread (None: leave as is)
        self.slot = slot
        self.publish = publish
        self.on_error = on_error or (lambda _msg: None)
        self._processor = FrameProcessor(model)
        self._request = request or ViewRequest(layer=model.default_layer)
        self._pending: tuple[VisModel, ViewRequest] | None = None
        self._lock = threading.Lock()  # guards only the hand-over of `_pending`
        self._halt = threading.Event()
        self.frames_done = 0

    @property
    def model(self) -> VisModel:
        return self._processor.model

    def set_request(self, request: ViewRequest) -> None:
        self._request = request  # atomic reference swap: newest wins

    def set_model(self, model: VisModel, request: ViewRequest | None = None) -> None:
        """Switch models at the next frame; `request` (default: the model's default layer) comes with it."""
        with self._lock:
            self._pending = (model, request or ViewRequest(request_id=self._request.request_id + 1,
                                                             layer=model.default_layer))

    def live_topk_snapshot(self) -> LiveTopK | None:
        """A copy of the live top-k that another thread may save (`.save(path)`) while this one goes on."""
        live = self._processor.live
        return live.snapshot() if live is not None else None

    def set_slot(self, slot: LatestSlot) -> None:
        """Take frames from another slot (a new source); the old one is woken so the switch is immediate."""
        old, self.slot = self.slot, slot
        old.wake()

    def stop(self) -> None:
        self._halt.set()
        self.slot.close()

    def run(self) -> None:
        """The loop; `start()` runs it on a new thread, a caller may also run it inline (headless)."""
        if self.threads:
            torch.set_num_threads(self.threads)
        last_error = ""
        while not self._halt.is_set():
            slot = self.slot
            frame = slot.take(timeout=0.5)
            if frame is None:
                if slot.closed:
                    self._halt.wait(0.05)  # a closed slot returns at once: do not spin
                continue
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                self._processor = FrameProcessor(pending[0])
                if pending[1].request_id >= self._request.request_id:  # a newer set_request wins
                    self._request = pending[1]
            req = self._request
            if req.paused:
                continue
            try:
                result = self._processor.process(frame, req)
            except DeepVisError as err:
                if str(err) != last_error:
                    self.on_error(str(err))
                    last_error = str(err)
                continue
            except Exception as err:  # noqa: BLE001 - a bad frame must not kill the live loop
                msg = f"inference failed: {type(err).__name__}: {err}"
                if msg != last_error:
                    self.on_error(msg)
                    last_error = msg
                continue
            last_error = ""
            self.frames_done += 1
            self.publish(result)


@dataclass(frozen=True)
class HeadlessReport:
    """What `deepvis run --headless --json` prints (field names are stable; see docs/cli.md).

    `timed_out` is true when the run hit its timeout first: the figures then cover the frames that arrived."""

    model: str
    device: str
    source: str
    layer: str
    frames_processed: int
    frames_captured: int
    frames_dropped: int
    seconds: float
    pipeline_fps: float
    capture_fps: float
    latency_ms_p50: float
    latency_ms_p95: float
    stage_ms_mean: dict[str, float]
    attribution_fps: float | None
    unit: str | None
    timed_out: bool = False
    frames_wanted: int = 0


@dataclass(frozen=True)
class FrameStat:
    """The timings of one processed frame: all a headless run keeps (a `FrameResult` holds images; keeping
    those for a long run grew RSS by ~2 MB a frame)."""

    frame_id: int
    layer: str
    t_capture: float
    t_done: float
    timings: dict[str, float]

    @property
    def latency(self) -> float:
        return self.t_done - self.t_capture


class _Tally:
    """Running figures of a headless run: a few numbers per frame in flat arrays (8 bytes each), stage times
    as sums, so an hour-long run costs a few MB, not the images of every frame."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.seen = 0
        self.layer = ""
        self.t_start = 0.0  # finish time of the last warm-up frame: the clock starts there
        self.frame_ids = array("q")
        self.t_done = array("d")
        self.latency = array("d")
        self.stage_sums: dict[str, float] = {}

    def add(self, stat: FrameStat) -> None:
        self.seen += 1
        self.layer = stat.layer
        if self.seen <= self.warmup:
            self.t_start = stat.t_done
            return
        self.frame_ids.append(stat.frame_id)
        self.t_done.append(stat.t_done)
        self.latency.append(stat.latency)
        for k, v in stat.timings.items():
            self.stage_sums[k] = self.stage_sums.get(k, 0.0) + v

    def report(self, model: VisModel, source: FrameSource, request: ViewRequest, *, timed_out: bool,
               wanted: int) -> HeadlessReport:
        n = len(self.latency)
        unit = str(request.unit) if request.unit else None
        if n == 0:
            return HeadlessReport(model=model.name, device=str(model.device), source=source.name,
                                  layer=self.layer or request.layer, frames_processed=0, frames_captured=0,
                                  frames_dropped=0, seconds=0.0, pipeline_fps=0.0, capture_fps=0.0,
                                  latency_ms_p50=float("nan"), latency_ms_p95=float("nan"), stage_ms_mean={},
                                  attribution_fps=None, unit=unit, timed_out=timed_out, frames_wanted=wanted)
        span = max(1e-9, self.t_done[-1] - self.t_start)
        lat = np.frombuffer(self.latency, dtype=np.float64) * 1000.0
        captured = self.frame_ids[-1] - self.frame_ids[0] + 1
        attr_fps = (n / span) if request.attribution and request.unit is not None else None
        return HeadlessReport(
            model=model.name, device=str(model.device), source=source.name, layer=self.layer,
            frames_processed=n, frames_captured=captured, frames_dropped=captured - n, seconds=span,
            pipeline_fps=n / span, capture_fps=captured / span, latency_ms_p50=float(np.percentile(lat, 50)),
            latency_ms_p95=float(np.percentile(lat, 95)),
            stage_ms_mean={k: v / n * 1000 for k, v in sorted(self.stage_sums.items())}, attribution_fps=attr_fps,
            unit=unit, timed_out=timed_out, frames_wanted=wanted)


def run_headless(model: VisModel, source: FrameSource, *, frames: int, request: ViewRequest,
                 fps: float | None = None, mirror: bool = False, warmup: int = 2,
                 timeout: float | None = None, on_status: StatusFn | None = None,
                 on_frame: Callable[[FrameStat], None] | None = None) -> HeadlessReport:
    """Run the live pipeline with no window until `frames` results arrived (after `warmup` ignored ones).

    Only each frame's timings are kept, so memory stays flat however long it runs. On `timeout` the report
    covers what arrived (`timed_out=True`); `on_frame` sees every frame's timings as it finishes (soak runs)."""
    if frames < 1:
        raise DeepVisError(f"--frames must be at least 1, got {frames}")
    if timeout is not None and not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
        raise DeepVisError(f"--timeout must be between 0 and {MAX_TIMEOUT:g} seconds, got {timeout}")
    warmup = max(1, warmup)
    slot = LatestSlot()
    tally = _Tally(warmup)
    done = threading.Event()
    errors: list[str] = []
    target = frames + warmup

    def publish(result: FrameResult) -> None:
        if tally.seen >= target:
            return
        stat = FrameStat(result.frame_id, result.layer, result.t_capture, result.t_done, dict(result.timings))
        tally.add(stat)
        if on_frame is not None:
            on_frame(stat)
        if tally.seen >= target:
            done.set()
            worker.stop()

    def on_error(msg: str) -> None:
        errors.append(msg)
        done.set()
        worker.stop()

    capture = Capture(source, slot, fps=fps, mirror=mirror, on_status=on_status)
    worker = InferenceWorker(model, slot, publish, request=request, on_error=on_error)
    watchdog = threading.Timer(timeout, worker.stop) if timeout else None
    capture.start()
    if watchdog is not None:
        watchdog.daemon = True
        watchdog.start()
    try:
        # The calling thread is the inference worker here: it loaded the model, so torch keeps one
        # OpenMP team (a second thread running the net gets a second team and runs ~1.5x slower on 2 cores).
        worker.run()
        finished = done.is_set()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        capture.stop()
        worker.stop()
        capture.join(5)
    if errors:
        raise DeepVisError(errors[0])
    return tally.report(model, source, request, timed_out=not finished, wanted=frames)


def validate_request(model: VisModel, request: ViewRequest) -> None:
    """Fail early with one line (listing what is valid) for a layer or unit the model does not have."""
    if request.layer:
        model.info(request.layer)
    unit = request.unit
    if unit is None:
        return
    shape = model.info(unit.layer).shape
    channels = shape[0] if shape else 1
    if not 0 <= unit.channel < channels:
        raise DeepVisError(f"unit {unit.channel} out of range for layer {unit.layer!r}: "
                           f"valid units are 0..{channels - 1}")
    if unit.y is not None and len(shape) == 3 and not (0 <= unit.y < shape[1] and 0 <= unit.x < shape[2]):
        raise DeepVisError(f"position ({unit.y}, {unit.x}) outside layer {unit.layer!r}: "
                           f"y in 0..{shape[1] - 1}, x in 0..{shape[2] - 1}")
    bad = [m for m in request.attribution if m not in ATTRIBUTION_METHODS]
    if bad:
        raise DeepVisError(f"unknown attribution method {bad[0]!r}; valid: {', '.join(ATTRIBUTION_METHODS)}")
