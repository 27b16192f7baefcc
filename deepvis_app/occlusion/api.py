"""Occlusion maps (Zeiler & Fergus 2014): the public functions and the map they return.

Conventions: the score map holds the target's score with the window at each position (row-major; top-left
corners from `patch_positions`, Captum's placement, the last window of an axis cut at the image edge).
`drop = base - score` is positive where covering *hurts* (red in the app). The input-resolution map is Captum's
`Occlusion` attribution: each pixel gets the mean drop over the windows covering it.
Fills: "zero" = mid-grey in pixel space (RGB 0.5, i.e. (0.5 - mean) / std after normalization: a model's "zero"
input is a different colour for every normalization, so we define it where a person sees it), "mean" = the
image's own per-channel mean, "blur" = the image under the patch blurred (Gaussian, sigma = window / 4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..abort import Abort, aborted
from ..devices import halve_batch, is_out_of_memory
from ..errors import DeepVisError, ParamError
from ..values import ClassTarget, Unit
from .engine import Engine
from .targets import Target, TargetLike, as_target, output_logits, unit_info
from .windows import IMAGENET_MEAN, IMAGENET_STD, fill_image, patch_positions, window_span


@dataclass
class OcclusionMap:
    """One occlusion map at one stride, complete or partial (positions not done yet are NaN / -1).

    scores: Tensor[rows, cols] (CPU, float32) of the target's score with the window whose top-left corner is
    (ys[i], xs[j]); labels: the winning class there (class targets only), else None; base_score / base_label:
    unoccluded. `drop()` and `upsampled()` give the maps to draw. `note` says how it was computed
    ("incremental up to LAYER ..." or why not).
    """

    target: Target
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
        for i, y in enumerate(self.ys):
            y1 = y + window_span(y, self.window, h)
            for j, x in enumerate(self.xs):
                d = drop[i, j]
                if np.isnan(d):
                    continue
                x1 = x + window_span(x, self.window, w)
                # 2-D difference arrays: +v at the top-left, -v past the right and bottom edges
                for arr, v in ((total, d), (count, 1.0)):
                    arr[y, x] += v
                    arr[y, x1] -= v
                    arr[y1, x] -= v
                    arr[y1, x1] += v
        total = total.cumsum(0).cumsum(1)[:h, :w]
        count = count.cumsum(0).cumsum(1)[:h, :w]
        out = np.zeros((h, w), np.float32)
        np.divide(total, count, out=out, where=count > 0.5, casting="unsafe")
        return out

    def extremes(self) -> dict[str, Any]:
        """Minimum and maximum of the score map with their window positions (top-left row, col in input pixels)."""
        s = self.scores.numpy()
        if not np.isfinite(s).any():
            return {}
        lo = np.unravel_index(np.nanargmin(s), s.shape)
        hi = np.unravel_index(np.nanargmax(s), s.shape)
        return {"min": float(s[lo]), "min_at": [self.ys[lo[0]], self.xs[lo[1]]],
                "max": float(s[hi]), "max_at": [self.ys[hi[0]], self.xs[hi[1]]]}


# --------------------------------------------------------------------------------------------------------------
# Inputs


def _model_parts(net: Any, mean: Sequence[float] | None, std: Sequence[float] | None):
    """Accept a VisModel or an nn.Module taking (img - mean) / std; return (module, mean, std)."""
    if hasattr(net, "net") and hasattr(net, "spec"):
        mean = mean if mean is not None else net.spec.mean
        std = std if std is not None else net.spec.std
        net = net.net
    if not isinstance(net, nn.Module):
        raise TypeError(f"expected a VisModel or torch.nn.Module, got {type(net).__name__}")
    return net, tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)


def _input_tensor(vm: Any, x: Tensor | np.ndarray) -> Tensor:
    if isinstance(x, np.ndarray):
        if not (hasattr(vm, "preprocess") and hasattr(vm, "spec")):
            raise DeepVisError("an RGB image needs a VisModel (its preprocessing); pass a normalized tensor")
        x = vm.preprocess(x)
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1:
        raise DeepVisError(f"expected one normalized image Tensor[1, C, H, W], got {getattr(x, 'shape', x)!r}")
    return x.detach()


# --------------------------------------------------------------------------------------------------------------
# Public API


def iter_occlusion(net: Any, x: Tensor | np.ndarray, target: TargetLike, *, window: int = 32, stride: int = 8,
                   fill: str = "zero", strides: Sequence[int] | None = None, batch: int = 32, abort: Abort = None,
                   incremental: bool = True, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None,
                   on_notice: Callable[[str], None] | None = None) -> Iterator[OcclusionMap]:
    """Occlusion maps coarse-to-fine, yielding a partial `OcclusionMap` after every batch of positions.

    net: a VisModel or an nn.Module taking normalized input (mean/std: the normalization, for the grey fill).
    x: Tensor[1, C, H, W] normalized, or an RGB uint8 image (with a VisModel). target: a `values.ClassTarget` or
    `values.Unit` (or a class index, or (layer, channel[, y, x])). strides: the levels, coarse to fine (default:
    just `stride`); each level's map is complete before the next starts, and positions a coarser level already
    scored are copied, not recomputed. abort: callable or Event checked between batches; when set the iterator
    just ends. The last yielded map has `final=True`. `on_notice(text)` hears, one line each, a fast path that
    failed its self-check (the map is then computed the slow, plain way) and a batch halved because memory ran
    out (the map is the same).
    """
    mod, mean, std = _model_parts(net, mean, std)
    xt = _input_tensor(net, x)
    return _iterate(net, mod, xt, target, window=window, stride=stride, fill=fill, strides=strides, batch=batch,
                    abort=abort, incremental=incremental, mean=mean, std=std, on_notice=on_notice)


def _iterate(vm: Any, net: nn.Module, x: Tensor, target: TargetLike, *, window: int, stride: int, fill: str,
             strides: Sequence[int] | None, batch: int, abort: Abort, incremental: bool,
             mean: Sequence[float], std: Sequence[float],
             on_notice: Callable[[str], None] | None = None) -> Iterator[OcclusionMap]:
    target = as_target(target)
    levels = [int(s) for s in (strides or (stride,))]
    h, w = int(x.shape[-2]), int(x.shape[-1])
    for s in levels:
        patch_positions(min(h, w), window, s)  # validates
    if batch < 1:
        raise ParamError("batch", f"must be at least 1, got {batch}")
    fill_t = fill_image(x, fill, window, mean, std)
    info = unit_info(vm, net, x, target) if isinstance(target, Unit) else None
    eng = Engine(net, x, target, info, fill_t, window, incremental, on_notice)
    base = float(eng.base_scores[0])
    base_label = int(eng.base_labels[0]) if eng.base_labels is not None else None
    known: dict[tuple[int, int], tuple[float, int]] = {}
    for level, s in enumerate(levels):
        ys, xs = patch_positions(h, window, s), patch_positions(w, window, s)
        scores = torch.full((len(ys), len(xs)), float("nan"))
        labels = torch.full((len(ys), len(xs)), -1, dtype=torch.long) if isinstance(target, ClassTarget) else None
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
        k = 0
        while k < len(todo):
            if aborted(abort):
                return
            chunk = todo[k:k + batch]
            pos = [(ys[i], xs[j]) for i, j in chunk]
            try:
                vals, labs = eng.scores(pos)
            except Exception as err:  # noqa: BLE001 - only running out of memory is retried
                if not is_out_of_memory(err):
                    raise
                batch = halve_batch(err, len(chunk), device=x.device, what="window positions", on_notice=on_notice)
                continue
            k += len(chunk)
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


def occlusion_map(net: Any, x: Tensor | np.ndarray, target: TargetLike, *, window: int = 32, stride: int = 8,
                  fill: str = "zero", batch: int = 32, incremental: bool = True,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  on_notice: Callable[[str], None] | None = None) -> OcclusionMap:
    """The complete occlusion map at `stride` (see `iter_occlusion`); `progress(done, total)` after each batch."""
    mod, mean, std = _model_parts(net, mean, std)
    xt = _input_tensor(net, x)
    last = None
    for last in _iterate(net, mod, xt, target, window=window, stride=stride, fill=fill, strides=None, batch=batch,
                         abort=None, incremental=incremental, mean=mean, std=std, on_notice=on_notice):
        if progress is not None:
            progress(last.done, last.total)
    assert last is not None
    return last


def naive_occlusion(net: nn.Module, x: Tensor, score: Callable[[Tensor], Tensor], *, window: int, stride: int,
                    fill: Tensor) -> Tensor:
    """The reference: one full forward per window position, `score(net(image))` -> Tensor[rows, cols]."""
    h, w = x.shape[-2:]
    ys, xs = patch_positions(int(h), window, stride), patch_positions(int(w), window, stride)
    out = torch.empty(len(ys), len(xs))
    with torch.no_grad():
        for i, y in enumerate(ys):
            for j, xx in enumerate(xs):
                img = x.clone()
                img[:, :, y:y + window, xx:xx + window] = fill[:, :, y:y + window, xx:xx + window]
                out[i, j] = float(score(output_logits(net(img))).reshape(-1)[0])
    return out


def upsample_nearest(values: Tensor, ys: list[int], xs: list[int], window: int, size: tuple[int, int]) -> np.ndarray:
    """Per-pixel map of any per-position values (e.g. predicted labels): each pixel takes the value of the
    window whose centre is nearest (so the label map reads like the paper's figure); a window cut at the image
    edge has its centre inside the image."""
    h, w = size
    cy = np.asarray([y + (window_span(y, window, h) - 1) / 2 for y in ys], np.float64)
    cx = np.asarray([x + (window_span(x, window, w) - 1) / 2 for x in xs], np.float64)
    iy = np.abs(np.arange(h)[:, None] - cy[None, :]).argmin(axis=1)
    ix = np.abs(np.arange(w)[:, None] - cx[None, :]).argmin(axis=1)
    return values.numpy()[iy[:, None], ix[None, :]]
