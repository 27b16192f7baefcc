"""Occlusion maps (Zeiler & Fergus 2014): slide a patch over the image, record a class or unit score per position.

Exact and fast. The naive method runs the whole net once per patch position; here
* positions are batched;
* the forward stops at the target unit's layer;
* incremental inference (Krypton, Nakandala et al., SIGMOD 2019): a patch changes only the units of a layer whose
  receptive field meets it. Along the chain of top-level blocks, each stage runs the net's block(s) between two
  cut layers on a *crop* of the previous cut's activation: the base (unoccluded) activation with the patch-affected
  region pasted in, just large enough to hold the dependencies of the next cut's affected region, aligned to the
  blocks' stride so the crop's grid is the full map's grid. Regions come from the measured receptive-field geometry
  (`receptive_field.rf_geometry`). Cuts stop at the first layer that is not local (global context such as
  squeeze-excitation or global pooling, `rf_is_local`) or where a patch affects nearly the whole map; from there
  the rest of the net runs on full maps (the pasted activation). The result says where that happened.
A self-check against the plain forward at three positions guards every plan; on a mismatch the engine falls back
to full recomputation and says so.

Conventions: the score map holds the target's score with the patch at each position (row-major, top-left corners
0, stride, ... up to H - window). `drop = base - score` is positive where covering *hurts* (red in the app).
The input-resolution map is Captum's definition: each pixel gets the mean drop over the windows covering it.
Fills: "zero" = mid-grey in pixel space (RGB 0.5, i.e. (0.5 - mean) / std after normalization: a model's "zero"
input is a different colour for every normalization, so we define it where a person sees it), "mean" = the
image's own per-channel mean, "blur" = the image under the patch blurred (Gaussian, sigma = window / 4).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .abort import Abort, aborted
from .attribution import gaussian_blur
from .errors import DeepVisError
from .fastnet import fast_copy
from .probe import call_counts, layer_table, split_layer

FILLS = ("zero", "mean", "blur")
SCORES = ("prob", "logit")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["FILLS", "SCORES", "OcclusionMap", "OcclusionTarget", "fill_image", "iter_occlusion", "naive_occlusion",
           "occlusion_map", "patch_positions", "upsample_nearest"]


# --------------------------------------------------------------------------------------------------------------
# Targets and results


@dataclass(frozen=True)
class OcclusionTarget:
    """What to score: a class (`cls`, its softmax probability or logit) or a unit of `layer`.

    A unit is `channel` with an optional neuron position (y, x); without a position its score is the channel's
    spatial mean (the whole feature map). A 1-D layer (fully connected) takes `channel` as the neuron.
    """

    cls: int | None = None
    score: str = "prob"
    layer: str | None = None
    channel: int | None = None
    y: int | None = None
    x: int | None = None

    def __post_init__(self) -> None:
        if (self.cls is None) == (self.layer is None):
            raise DeepVisError("an occlusion target is a class or a (layer, channel) unit, not both or neither")
        if self.layer is not None and self.channel is None:
            raise DeepVisError("a unit target needs a channel")
        if (self.y is None) != (self.x is None):
            raise DeepVisError("give both y and x of the unit, or neither")
        if self.score not in SCORES:
            raise DeepVisError(f"unknown score {self.score!r}; use one of {', '.join(SCORES)}")

    @classmethod
    def coerce(cls, target: int | OcclusionTarget | tuple) -> OcclusionTarget:
        """`5` -> class 5 (probability); `("layer3", 7)` / `("layer3", 7, 2, 3)` -> a unit."""
        if isinstance(target, OcclusionTarget):
            return target
        if isinstance(target, int | np.integer):
            return cls(cls=int(target))
        if isinstance(target, tuple | list) and target and isinstance(target[0], str):
            layer, *rest = target
            if len(rest) == 1:
                return cls(layer=layer, channel=int(rest[0]))
            if len(rest) == 3:
                return cls(layer=layer, channel=int(rest[0]), y=int(rest[1]), x=int(rest[2]))
        raise DeepVisError(f"occlusion target must be a class index or (layer, channel[, y, x]), got {target!r}")

    @property
    def label(self) -> str:
        if self.cls is not None:
            return f"class {self.cls} ({self.score})"
        where = f" at (y={self.y}, x={self.x})" if self.y is not None else ""
        return f"{self.layer} unit {self.channel}{where}"


@dataclass
class OcclusionMap:
    """One occlusion map at one stride, complete or partial (positions not done yet are NaN / -1).

    scores: Tensor[rows, cols] (CPU, float32) of the target's score with the patch whose top-left corner is
    (ys[i], xs[j]); labels: the winning class there (class targets only), else None; base_score / base_label:
    unoccluded. `drop()` and `upsampled()` give the maps to draw. `note` says how it was computed
    ("incremental up to LAYER ..." or why not).
    """

    target: OcclusionTarget
    window: int
    stride: int
    fill: str
    ys: list[int]
    xs: list[int]
    scores: Tensor
    labels: Tensor | None
    base_score: float
    base_label: int | None
    input_size: tuple[int, int]
    done: int = 0
    level: int = 0
    levels: int = 1
    note: str = ""
    incremental_until: str | None = None

    @property
    def total(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def complete(self) -> bool:
        """This stride's map is full."""
        return self.done >= self.total

    @property
    def final(self) -> bool:
        """The finest stride is full: nothing more will come."""
        return self.complete and self.level == self.levels - 1

    def drop(self) -> Tensor:
        """base - score: positive where covering the spot hurts the target (NaN where not done)."""
        return self.base_score - self.scores

    def upsampled(self) -> np.ndarray:
        """The drop map at input resolution, float32 HxW: each pixel the mean drop over the done windows that
        cover it (Captum's `Occlusion` attribution), 0 where no done window covers it."""
        h, w = self.input_size
        total = np.zeros((h + 1, w + 1), np.float64)
        count = np.zeros((h + 1, w + 1), np.float64)
        drop = self.drop().numpy().astype(np.float64)
        win = self.window
        for i, y in enumerate(self.ys):
            for j, x in enumerate(self.xs):
                d = drop[i, j]
                if np.isnan(d):
                    continue
                # 2-D difference arrays: +v at the top-left, -v past the right and bottom edges
                for arr, v in ((total, d), (count, 1.0)):
                    arr[y, x] += v
                    arr[y, x + win] -= v
                    arr[y + win, x] -= v
                    arr[y + win, x + win] += v
        total = total.cumsum(0).cumsum(1)[:h, :w]
        count = count.cumsum(0).cumsum(1)[:h, :w]
        out = np.zeros((h, w), np.float32)
        np.divide(total, count, out=out, where=count > 0.5, casting="unsafe")
        return out

    def extremes(self) -> dict[str, Any]:
        """Minimum and maximum of the score map with their patch positions (top-left row, col in input pixels)."""
        s = self.scores.numpy()
        if not np.isfinite(s).any():
            return {}
        lo = np.unravel_index(np.nanargmin(s), s.shape)
        hi = np.unravel_index(np.nanargmax(s), s.shape)
        return {"min": float(s[lo]), "min_at": [self.ys[lo[0]], self.xs[lo[1]]],
                "max": float(s[hi]), "max_at": [self.ys[hi[0]], self.xs[hi[1]]]}


def patch_positions(size: int, window: int, stride: int) -> list[int]:
    """Top-left corners along one axis: 0, stride, ... while the window fits (Captum's windows)."""
    if window < 1 or stride < 1:
        raise DeepVisError(f"window and stride must be >= 1 (got window={window}, stride={stride})")
    if window > size:
        raise DeepVisError(f"window {window} is larger than the {size}px input")
    return list(range(0, size - window + 1, stride))


# --------------------------------------------------------------------------------------------------------------
# Inputs


def _model_parts(net: Any, mean: Sequence[float] | None, std: Sequence[float] | None):
    """Accept a VisModel or an nn.Module taking (img - mean) / std; return (module, mean, std, categories)."""
    categories: list[str] = []
    if hasattr(net, "net") and hasattr(net, "spec"):
        mean = mean if mean is not None else net.spec.mean
        std = std if std is not None else net.spec.std
        categories = list(net.categories)
        net = net.net
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected a VisModel or torch.nn.Module, got {type(net).__name__}")
    return net, tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD), categories


def _input_tensor(vm: Any, x: Tensor | np.ndarray) -> Tensor:
    if isinstance(x, np.ndarray):
        if not (hasattr(vm, "preprocess") and hasattr(vm, "spec")):
            raise DeepVisError("an RGB image needs a VisModel (its preprocessing); pass a normalized tensor")
        x = vm.preprocess(x)
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1:
        raise DeepVisError(f"expected one normalized image Tensor[1, C, H, W], got {getattr(x, 'shape', x)!r}")
    return x.detach()


def fill_image(x: Tensor, fill: str, window: int, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """What replaces the image under the patch, as a full normalized image [1, C, H, W] (a Captum baseline)."""
    if fill == "zero":
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        if m.shape[1] != x.shape[1]:
            raise DeepVisError(f"fill 'zero' needs mean/std for {x.shape[1]} channels, got {m.shape[1]}")
        return ((0.5 - m) / s).expand_as(x).contiguous()
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if fill == "blur":
        return gaussian_blur(x, max(1.0, window / 4.0))
    raise DeepVisError(f"unknown fill {fill!r}; use one of {', '.join(FILLS)}")


# --------------------------------------------------------------------------------------------------------------
# Running parts of the net with hooks (thread-aware: a live worker may share the module)


class _Stop(Exception):
    """Raised from a hook once the wanted output is captured: the rest of the net is not needed."""


class _Runner:
    """`run(x, start=(module, value), stop=(module, call))`: the net's forward on `x`, the output of `start`
    replaced by `value` (so the layers before it cost only a tiny dummy input), ending at `stop`'s call."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def run(self, x: Tensor, start: tuple[nn.Module, Tensor] | None = None,
            stop: tuple[nn.Module, int] | None = None) -> Tensor:
        me = threading.get_ident()
        handles = []
        box: dict[str, Tensor] = {}
        try:
            if start is not None:
                mod, value = start

                def put(_m, _i, _o):
                    return value if threading.get_ident() == me else None

                handles.append(mod.register_forward_hook(put))
            if stop is not None:
                smod, want = stop
                calls = [0]

                def grab(_m, _i, out):
                    if threading.get_ident() != me:
                        return None
                    k = calls[0]
                    calls[0] += 1
                    if k == want:
                        box["out"] = out
                        raise _Stop
                    return None

                handles.append(smod.register_forward_hook(grab))
            try:
                out = self.net(x)
            except _Stop:
                return box["out"]
        finally:
            for h in handles:
                h.remove()
        if stop is not None:
            raise DeepVisError("the target layer produced no output in the forward pass")
        return _logits(out)


def _logits(out: object) -> Tensor:
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    raise DeepVisError(f"cannot find the logits in the model output of type {type(out).__name__}")


# --------------------------------------------------------------------------------------------------------------
# The incremental plan


@dataclass(frozen=True)
class _Axis:
    """One axis of a layer: unit u sees input [u*s + o, u*s + o + z); the layer has n units."""

    s: int
    o: int
    z: int
    n: int

    def affected(self, p: int, w: int) -> tuple[int, int]:
        """Units whose receptive field meets input [p, p + w)."""
        lo = (p - self.o - self.z) // self.s + 1
        hi = -((-(p + w - self.o)) // self.s)
        return max(lo, 0), min(hi, self.n)

    def deps(self, prev: _Axis, lo: int, hi: int, margin: int) -> tuple[int, int]:
        """Units of `prev` (the previous cut) that units [lo, hi) of this layer depend on."""
        r0 = lo * self.s + self.o
        r1 = (hi - 1) * self.s + self.o + self.z
        a = -((-(r0 - prev.o)) // prev.s) - margin
        b = (r1 - prev.o - prev.z) // prev.s + 1 + margin
        return max(a, 0), min(b, prev.n)


@dataclass
class _Stage:
    """Cut `name` (module `module`): units on each axis, and the crop taken from the previous cut's map."""

    name: str
    module: nn.Module
    ay: _Axis
    ax: _Axis
    ratio_y: int = 1  # this cut's stride / the previous cut's stride
    ratio_x: int = 1
    crop_y: int = 0  # crop length at the previous cut (in its units)
    crop_x: int = 0


@dataclass
class _Plan:
    stages: list[_Stage]
    note: str
    until: str | None


def _chain_candidates(net: nn.Module, x: Tensor, before: str | None) -> list[tuple[str, tuple[int, ...]]]:
    """Layers the whole forward flows through, in order: top-level modules and the items of top-level
    Sequential/ModuleList containers, called once, with a spatial output; only those before `before`."""
    modules = dict(net.named_modules())
    with torch.no_grad():
        table = layer_table(net, x)
    out = []
    for info in table:
        name = info.name
        if "@" in name:
            if before is not None and name.partition("@")[0] == before:
                break
            continue
        if before is not None and name == before:
            break
        parent = name.rpartition(".")[0]
        chain = parent == "" or (isinstance(modules.get(parent), nn.Sequential | nn.ModuleList)
                                 and "." not in parent)
        if chain and len(info.shape) == 3 and min(info.shape[1:]) > 1:  # bare names: modules called once
            out.append((name, info.shape))
    return out


def _crop_len(stage: _Stage, prev: _Stage | None, size: int, window: int, margin: int) -> tuple[int, int]:
    """Longest crop (previous cut's units) any patch position needs, aligned so every clamped start is a
    multiple of the stride ratio."""
    res = []
    for axis, pax, r in ((stage.ay, prev.ay if prev else None, stage.ratio_y),
                         (stage.ax, prev.ax if prev else None, stage.ratio_x)):
        n_prev = pax.n if pax else size
        need = 0
        for p in range(0, size - window + 1):
            lo, hi = axis.affected(p, window)
            a, b = axis.deps(pax, lo, hi, margin) if pax else _input_deps(axis, lo, hi, size, margin)
            need = max(need, b - (a // r) * r)
        length = min(n_prev, need + (n_prev - need) % r)
        res.append(length)
    return res[0], res[1]


def _input_deps(axis: _Axis, lo: int, hi: int, size: int, margin: int) -> tuple[int, int]:
    return max(lo * axis.s + axis.o - margin, 0), min((hi - 1) * axis.s + axis.o + axis.z + margin, size)


_PLANS: weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Plan]] = weakref.WeakKeyDictionary()
_PLANS_LOCK = threading.Lock()
MAX_AREA = 0.6  # a cut is worth it while a crop is at most this fraction of the map


def _make_plan(net: nn.Module, x: Tensor, window: int, stop_layer: str | None, margin: int) -> _Plan:
    from .receptive_field import rf_geometry, rf_is_local

    h, w = x.shape[-2:]
    if h != w:
        return _Plan([], "full recomputation (incremental inference needs a square input)", None)
    size = int(h)
    modules = dict(net.named_modules())
    stages: list[_Stage] = []
    reason = "no local layer to cut at"
    prev: _Stage | None = None
    for name, shape in _chain_candidates(net, x, stop_layer):
        try:
            geom = rf_geometry(net, name, size)
        except DeepVisError as err:
            reason = f"{name} has no measurable receptive field ({err})"
            break
        if geom.full:
            reason = f"{name} has no spatial footprint"
            break
        st = _Stage(name, modules[name], _Axis(geom.stride_y, geom.offset_y, geom.size_y, shape[1]),
                    _Axis(geom.stride_x, geom.offset_x, geom.size_x, shape[2]))
        if stages and (stages[-1].ay, stages[-1].ax) == (st.ay, st.ax):
            stages.pop()  # same geometry (BN, ReLU, a container ending in its last block): cut after both
            prev = stages[-1] if stages else None
        py, px = (prev.ay.s, prev.ax.s) if prev else (1, 1)
        if st.ay.s % py or st.ax.s % px:
            reason = f"{name}'s stride is not a multiple of the previous cut's"
            break
        st.ratio_y, st.ratio_x = st.ay.s // py, st.ax.s // px
        st.crop_y, st.crop_x = _crop_len(st, prev, size, window, margin)
        prev_y, prev_x = (prev.ay.n, prev.ax.n) if prev else (size, size)
        frac = (st.crop_y * st.crop_x) / (prev_y * prev_x)
        aff_y = max(st.ay.affected(p, window)[1] - st.ay.affected(p, window)[0] for p in range(size - window + 1))
        if frac > MAX_AREA or aff_y / st.ay.n > MAX_AREA:
            reason = f"a {window}px patch affects most of {name}"
            break
        stages.append(st)
        prev = st
    # Locality is inherited along the chain: find the last local cut (global context ends incremental work).
    while stages and not rf_is_local(net, stages[-1].name, size):
        reason = f"{stages[-1].name} is not local (global context such as squeeze-excitation or global pooling)"
        stages.pop()
    if not stages:
        return _Plan([], f"full recomputation ({reason})", None)
    last = stages[-1].name
    return _Plan(stages, f"incremental up to {last} ({len(stages)} cuts); full recomputation after it: {reason}",
                 last)


# --------------------------------------------------------------------------------------------------------------
# The engine


class _Engine:
    """Scores of one target for batches of patch positions on one image."""

    def __init__(self, net: nn.Module, x: Tensor, target: OcclusionTarget, fill: Tensor, window: int,
                 incremental: bool) -> None:
        self.net = net
        self.x = x
        self.target = target
        self.fill = fill
        self.window = window
        self.stop_at: tuple[str, int] | None = None
        if target.layer is not None:
            name, call = split_layer(target.layer)
            modules = dict(net.named_modules())
            if name not in modules or not name:
                from .probe import unknown_layer_message

                raise DeepVisError(unknown_layer_message(target.layer, [n for n in modules if n]))
            if call is None:
                counts, _ = call_counts(net, x)
                call = counts.get(name, 1) - 1
            self.stop_at = (name, call)
        # The unoccluded score and the reference at three positions come from the caller's net itself.
        self._use(net)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        self._probe = [(0, 0), ((h - window) // 2, (w - window) // 3), (h - window, w - window)]
        with torch.no_grad():
            out = self.runner.run(x, stop=self.stop)
            self._check_target(out)
            self.base_scores, self.base_labels = self._score(out)
        self._ref = self.naive(self._probe)[0]
        # A faster copy (channels-last, BatchNorm folded into the conv before it) when it gives the same scores.
        self.fast = "plain"
        for fold in (True, False):
            try:
                self._use(fast_copy(net, x, fold=fold))
                if torch.allclose(self.naive(self._probe)[0], self._ref, rtol=1e-4, atol=1e-5):
                    self.fast = "channels-last" + (", BatchNorm folded" if fold else "")
                    break
            except Exception:  # noqa: BLE001 - any failure of the copy means: use the net itself
                pass
        else:
            self._use(net)
        self.plan = _Plan([], "full recomputation (incremental inference off)", None)
        if incremental:
            self.plan = self._checked_plan()

    def _use(self, run_net: nn.Module) -> None:
        self.run_net = run_net
        self.mods = dict(run_net.named_modules())
        self.runner = _Runner(run_net)
        self.stop = (self.mods[self.stop_at[0]], self.stop_at[1]) if self.stop_at else None

    # -- scores
    def _check_target(self, out: Tensor) -> None:
        t = self.target
        if t.cls is not None:
            n = out.flatten(1).shape[1]
            if not 0 <= t.cls < n:
                raise DeepVisError(f"class {t.cls} is out of range (valid: 0..{n - 1})")
            return
        c = out.shape[1] if out.dim() > 1 else 1
        if not 0 <= int(t.channel) < c:
            raise DeepVisError(f"unit {t.channel} is out of range for {t.layer} with {c} channels "
                               f"(valid: 0..{c - 1})")
        if t.y is not None:
            if out.dim() != 4:
                raise DeepVisError(f"{t.layer} has no spatial positions; omit y/x")
            if not (0 <= t.y < out.shape[2] and 0 <= t.x < out.shape[3]):
                raise DeepVisError(f"position (y={t.y}, x={t.x}) is outside {t.layer} of size "
                                   f"{out.shape[2]}x{out.shape[3]}")

    def _score(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        t = self.target
        if t.cls is not None:
            logits = out.flatten(1).float()
            labels = logits.argmax(dim=1)
            vals = logits.softmax(dim=1)[:, t.cls] if t.score == "prob" else logits[:, t.cls]
            return vals, labels
        a = out[:, t.channel].float()
        if t.y is not None:
            return a[:, t.y, t.x], None
        return a.flatten(1).mean(dim=1), None

    # -- batches
    def patched(self, positions: Sequence[tuple[int, int]]) -> Tensor:
        """The occluded images [N, C, H, W]."""
        w = self.window
        batch = self.x.expand(len(positions), -1, -1, -1).clone()
        for k, (py, px) in enumerate(positions):
            batch[k, :, py:py + w, px:px + w] = self.fill[0, :, py:py + w, px:px + w]
        return batch

    def naive(self, positions: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor | None]:
        """Full forwards of the occluded images (batched), stopping at the target layer."""
        with torch.no_grad():
            batch = self.patched(positions).contiguous(memory_format=torch.channels_last)
            return self._score(self.runner.run(batch, stop=self.stop))

    def scores(self, positions: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor | None]:
        if not self.plan.stages:
            return self.naive(positions)
        with torch.no_grad():
            return self._incremental(positions, self.plan, self._bases)

    def _dummy(self, n: int) -> Tensor:
        side = min(self.x.shape[-1], 32)
        return torch.zeros(n, self.x.shape[1], side, side, dtype=self.x.dtype, device=self.x.device
                           ).contiguous(memory_format=torch.channels_last)

    def _incremental(self, positions: Sequence[tuple[int, int]], plan: _Plan,
                     bases: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        w = self.window
        n = len(positions)
        size = self.x.shape[-1]
        prev: _Stage | None = None
        out_prev: Tensor | None = None  # previous stage's crop outputs [N, C, ., .]
        off_prev: list[tuple[int, int]] = []  # their top-left units
        for st in plan.stages:
            ry, rx = st.ratio_y, st.ratio_x
            crops = []
            starts = []
            for k, (py, px) in enumerate(positions):
                ylo, yhi = st.ay.affected(py, w)
                xlo, xhi = st.ax.affected(px, w)
                if prev is None:
                    a_y = _input_deps(st.ay, ylo, yhi, size, self._margin)[0]
                    a_x = _input_deps(st.ax, xlo, xhi, size, self._margin)[0]
                    ny, nx = size, size
                else:
                    a_y = st.ay.deps(prev.ay, ylo, yhi, self._margin)[0]
                    a_x = st.ax.deps(prev.ax, xlo, xhi, self._margin)[0]
                    ny, nx = prev.ay.n, prev.ax.n
                cy = min((a_y // ry) * ry, ny - st.crop_y)
                cx = min((a_x // rx) * rx, nx - st.crop_x)
                starts.append((cy // ry, cx // rx))
                if prev is None:
                    crop = self.x[0, :, cy:cy + st.crop_y, cx:cx + st.crop_x].clone()
                    y0, y1 = max(py, cy), min(py + w, cy + st.crop_y)
                    x0, x1 = max(px, cx), min(px + w, cx + st.crop_x)
                    if y0 < y1 and x0 < x1:
                        crop[:, y0 - cy:y1 - cy, x0 - cx:x1 - cx] = self.fill[0, :, y0:y1, x0:x1]
                else:
                    crop = bases[prev.name][0, :, cy:cy + st.crop_y, cx:cx + st.crop_x].clone()
                    _paste(crop, (cy, cx), out_prev[k], off_prev[k], prev, positions[k], w)
                crops.append(crop)
            batch = torch.stack(crops).contiguous(memory_format=torch.channels_last)
            if prev is None:
                out = self.runner.run(batch, stop=(self.mods[st.name], 0))
            else:
                out = self.runner.run(self._dummy(n), start=(self.mods[prev.name], batch),
                                      stop=(self.mods[st.name], 0))
            prev, out_prev, off_prev = st, out, starts
        assert prev is not None and out_prev is not None
        full = bases[prev.name].expand(n, -1, -1, -1).clone()
        for k in range(n):
            _paste(full[k], (0, 0), out_prev[k], off_prev[k], prev, positions[k], w)
        full = full.contiguous(memory_format=torch.channels_last)
        out = self.runner.run(self._dummy(n), start=(self.mods[prev.name], full), stop=self.stop)
        return self._score(out)

    # -- planning with a self-check
    _margin = 0

    def _checked_plan(self) -> _Plan:
        key_base = (tuple(self.x.shape), str(self.x.device), self.window,
                    self.target.layer if self.target.layer else None)
        probe, ref = self._probe, self._ref
        for margin in (0, 1):
            key = (*key_base, margin)
            with _PLANS_LOCK:
                plan = _PLANS.get(self.net, {}).get(key)
            if plan is None:
                stop = split_layer(self.target.layer)[0] if self.target.layer else None
                try:
                    plan = _make_plan(self.net, self.x, self.window, stop, margin)
                except Exception as err:  # noqa: BLE001 - an architecture the RF probing cannot handle
                    plan = _Plan([], f"full recomputation (no incremental plan: {str(err)[:120]})", None)
                with _PLANS_LOCK:
                    _PLANS.setdefault(self.net, {})[key] = plan
            if not plan.stages:
                return plan
            self._margin = margin
            try:
                self._bases = self._base_acts(plan)
                with torch.no_grad():
                    got, _ = self._incremental(probe, plan, self._bases)
                ok = bool(torch.allclose(got, ref, rtol=1e-4, atol=1e-5))
            except Exception:  # noqa: BLE001 - a net the cuts do not fit (shapes, dummy input): no plan
                ok = False
            if ok:
                return plan
        return _Plan([], "full recomputation (incremental self-check failed for this net)", None)

    def _base_acts(self, plan: _Plan) -> dict[str, Tensor]:
        acts: dict[str, Tensor] = {}
        me = threading.get_ident()
        handles = []
        for st in plan.stages:
            def grab(_m, _i, out, _n=st.name):
                if threading.get_ident() == me:
                    acts[_n] = out.detach().clone()

            handles.append(self.mods[st.name].register_forward_hook(grab))
        try:
            with torch.no_grad():
                self.runner.run(self.x, stop=(self.mods[plan.stages[-1].name], 0))
        finally:
            for h in handles:
                h.remove()
        return acts


def _paste(dst: Tensor, dst_start: tuple[int, int], src: Tensor, src_start: tuple[int, int], st: _Stage,
           pos: tuple[int, int], window: int) -> None:
    """Copy the patch-affected units of cut `st` (rows/cols in its map) from a stage output `src` (whose first
    unit is `src_start`) into `dst` (a crop of that map starting at `dst_start`), where they overlap."""
    ylo, yhi = st.ay.affected(pos[0], window)
    xlo, xhi = st.ax.affected(pos[1], window)
    ylo, yhi = max(ylo, dst_start[0]), min(yhi, dst_start[0] + dst.shape[1])
    xlo, xhi = max(xlo, dst_start[1]), min(xhi, dst_start[1] + dst.shape[2])
    if ylo >= yhi or xlo >= xhi:
        return
    dst[:, ylo - dst_start[0]:yhi - dst_start[0], xlo - dst_start[1]:xhi - dst_start[1]] = \
        src[:, ylo - src_start[0]:yhi - src_start[0], xlo - src_start[1]:xhi - src_start[1]]


# --------------------------------------------------------------------------------------------------------------
# Public API


def iter_occlusion(net: Any, x: Tensor | np.ndarray, target: int | OcclusionTarget | tuple, *, window: int = 32,
                   stride: int = 8, fill: str = "zero", strides: Sequence[int] | None = None, batch: int = 32,
                   abort: Abort = None, incremental: bool = True, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> Iterator[OcclusionMap]:
    """Occlusion maps coarse-to-fine, yielding a partial `OcclusionMap` after every batch of positions.

    net: a VisModel or an nn.Module taking normalized input (mean/std: the normalization, for the grey fill).
    x: Tensor[1, C, H, W] normalized, or an RGB uint8 image (with a VisModel). strides: the levels, coarse to
    fine (default: just `stride`); each level's map is complete before the next starts, and positions a
    coarser level already scored are copied, not recomputed. abort: callable or Event checked between batches;
    when set the iterator just ends. The last yielded map has `final=True`.
    """
    mod, mean, std, _ = _model_parts(net, mean, std)
    xt = _input_tensor(net, x)
    return _iterate(mod, xt, target, window=window, stride=stride, fill=fill, strides=strides, batch=batch,
                    abort=abort, incremental=incremental, mean=mean, std=std)


def _iterate(net: nn.Module, x: Tensor, target: Any, *, window: int, stride: int, fill: str,
             strides: Sequence[int] | None, batch: int, abort: Abort, incremental: bool,
             mean: Sequence[float], std: Sequence[float]) -> Iterator[OcclusionMap]:
    target = OcclusionTarget.coerce(target)
    levels = [int(s) for s in (strides or (stride,))]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    for s in levels:
        patch_positions(min(h, w), window, s)  # validates
    if batch < 1:
        raise DeepVisError(f"batch must be >= 1, got {batch}")
    fill_t = fill_image(x, fill, window, mean, std)
    eng = _Engine(net, x, target, fill_t, window, incremental)
    base = float(eng.base_scores[0])
    base_label = int(eng.base_labels[0]) if eng.base_labels is not None else None
    known: dict[tuple[int, int], tuple[float, int]] = {}
    for level, s in enumerate(levels):
        ys, xs = patch_positions(h, window, s), patch_positions(w, window, s)
        scores = torch.full((len(ys), len(xs)), float("nan"))
        labels = torch.full((len(ys), len(xs)), -1, dtype=torch.long) if target.cls is not None else None
        m = OcclusionMap(target, window, s, fill, ys, xs, scores, labels, base, base_label, (h, w), 0, level,
                         len(levels), f"{eng.plan.note}; {eng.fast}", eng.plan.until)
        todo = []
        for i, y in enumerate(ys):
            for j, xx in enumerate(xs):
                if (y, xx) in known:
                    v, lab = known[(y, xx)]
                    scores[i, j] = v
                    if labels is not None:
                        labels[i, j] = lab
                    m.done += 1
                else:
                    todo.append((i, j))
        for k in range(0, len(todo), batch):
            if aborted(abort):
                return
            chunk = todo[k:k + batch]
            pos = [(ys[i], xs[j]) for i, j in chunk]
            vals, labs = eng.scores(pos)
            vals = vals.float().cpu()
            labs = labs.cpu() if labs is not None else None
            for n, (i, j) in enumerate(chunk):
                scores[i, j] = vals[n]
                if labels is not None and labs is not None:
                    labels[i, j] = labs[n]
                known[(ys[i], xs[j])] = (float(vals[n]), int(labs[n]) if labs is not None else -1)
            m.done += len(chunk)
            yield replace(m, scores=scores.clone(), labels=None if labels is None else labels.clone())
        if not todo:
            yield replace(m, scores=scores.clone(), labels=None if labels is None else labels.clone())


def occlusion_map(net: Any, x: Tensor | np.ndarray, target: int | OcclusionTarget | tuple, *, window: int = 32,
                  stride: int = 8, fill: str = "zero", batch: int = 32, incremental: bool = True,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> OcclusionMap:
    """The complete occlusion map at `stride` (see `iter_occlusion`); `progress(done, total)` after each batch."""
    vm = net
    mod, mean, std, _ = _model_parts(net, mean, std)
    xt = _input_tensor(vm, x)
    last = None
    for last in _iterate(mod, xt, target, window=window, stride=stride, fill=fill, strides=None, batch=batch,
                         abort=None, incremental=incremental, mean=mean, std=std):
        if progress is not None:
            progress(last.done, last.total)
    assert last is not None
    return last


def naive_occlusion(net: nn.Module, x: Tensor, score: Callable[[Tensor], Tensor], *, window: int, stride: int,
                    fill: Tensor) -> Tensor:
    """The reference: one full forward per patch position, `score(net(image))` -> Tensor[rows, cols]."""
    h, w = x.shape[-2:]
    ys, xs = patch_positions(int(h), window, stride), patch_positions(int(w), window, stride)
    out = torch.empty(len(ys), len(xs))
    with torch.no_grad():
        for i, y in enumerate(ys):
            for j, xx in enumerate(xs):
                img = x.clone()
                img[:, :, y:y + window, xx:xx + window] = fill[:, :, y:y + window, xx:xx + window]
                out[i, j] = float(score(_logits(net(img))).reshape(-1)[0])
    return out


def upsample_nearest(values: Tensor, ys: list[int], xs: list[int], window: int, size: tuple[int, int]) -> np.ndarray:
    """Per-pixel map of any per-position values (e.g. predicted labels): each pixel takes the value of the
    window whose centre is nearest (so the label map reads like the paper's figure)."""
    h, w = size
    cy = np.asarray(ys, np.float64) + (window - 1) / 2
    cx = np.asarray(xs, np.float64) + (window - 1) / 2
    iy = np.abs(np.arange(h)[:, None] - cy[None, :]).argmin(axis=1)
    ix = np.abs(np.arange(w)[:, None] - cx[None, :]).argmin(axis=1)
    return values.numpy()[iy[:, None], ix[None, :]]

