"""DeepDream (Mordvintsev et al. 2015): amplify what a layer already sees in a photo.

The objective is half the squared L2 norm of the layer's activations, 0.5 * sum(a^2), whose gradient at the layer
is the activations themselves: every unit is pushed in the direction it already fires, so whatever the layer
half-sees (edges and strokes low in the net, eyes and fur higher up) gets drawn in. Each step rolls the image by a
random offset (jitter, so no grid of artefacts locks to the stride), takes a gradient step normalized by its
mean absolute value (a fixed step in pixel units on any layer) and clips to the valid pixel range [0, 1].
Octaves: the photo is dreamed from a small copy upwards (each octave `octave_scale` larger), carrying the detail
added so far, so patterns appear at several sizes instead of only the finest.

`iter_dream` is the job generator; `dream` runs it to the end (cached); `dream_frame` is the live-camera path (a
couple of steps at one octave, optionally carrying the previous dreamed frame); `iter_dream_zoom` makes the
zoom video (each frame dreamed from the zoomed previous one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ParamError
from .imagejob import (
    Abort,
    ImageStep,
    aborted,
    cache_key,
    check_rgb,
    from_uint8,
    layer_forward,
    load_cached,
    model_parts,
    run_to_end,
    save_cached,
    to_uint8_image,
)


@dataclass
class DreamResult:
    """`image`: the dream (uint8, the input's size); `objective_start` / `objective_end`: mean squared activation
    at the layer for the input and for the saved 8-bit dream (how much more the layer now sees)."""

    image: np.ndarray
    layer: str
    settings: dict[str, Any]
    objective_start: float = float("nan")
    objective_end: float = float("nan")
    cached: bool = False


def dream_objective(act: torch.Tensor) -> torch.Tensor:
    """0.5 * ||a||^2: its gradient with respect to the activations `a` is `a`."""
    return 0.5 * act.pow(2).sum()


def _check(octaves: int, octave_scale: float, steps: int, lr: float, jitter: int, seed: int) -> None:
    if octaves < 1:
        raise ParamError("octaves", f"must be >= 1, got {octaves}")
    if not (octave_scale > 1.0 and math.isfinite(octave_scale)):
        raise ParamError("octave_scale", f"must be a finite number > 1, got {octave_scale}")
    if steps < 0:
        raise ParamError("steps", f"must be >= 0, got {steps}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ParamError("lr", f"(the step size) must be a finite number > 0, got {lr}")
    if jitter < 0:
        raise ParamError("jitter", f"must be >= 0, got {jitter}")
    if not 0 <= seed < 2**63:
        raise ParamError("seed", f"must be between 0 and 2^63 - 1, got {seed}")


def octave_sizes(h: int, w: int, octaves: int, scale: float, smallest: int = 16) -> list[tuple[int, int]]:
    """Sizes from the smallest octave up to (h, w); octaves that would be under `smallest` pixels are skipped."""
    sizes = [(h, w)]
    for _ in range(octaves - 1):
        ph, pw = sizes[-1]
        nh, nw = round(ph / scale), round(pw / scale)
        if min(nh, nw) < smallest:
            break
        sizes.append((nh, nw))
    return sizes[::-1]


def iter_dream(net: Any, image: np.ndarray, layer: str, *, octaves: int = 4, octave_scale: float = 1.4,
               steps: int = 10, lr: float = 0.01, jitter: int = 16, seed: int = 0, abort: Abort = None,
               yield_every: int = 1, use_cache: bool = True, cache_dir: str | Path | None = None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               device: torch.device | str | None = None, cache_id: str | None = None) -> Iterator[ImageStep]:
    """Dream `image` (RGB uint8, dreamed at its own size) at `layer`: `steps` gradient steps per octave, `lr` the
    step in pixel units (0..1) after normalizing the gradient by its mean magnitude, `jitter` the largest random
    roll in pixels. Yields an `ImageStep` (losses: {"objective": mean a^2 at the layer}) with the image at full size
    every `yield_every` steps, and a last one with `done=True` and a `DreamResult`; `abort` ends it between steps."""
    image = check_rgb(image)
    _check(octaves, octave_scale, steps, lr, jitter, seed)
    m = model_parts(net, mean, std, device, cache_id)
    settings = {"layer": layer, "octaves": octaves, "octave_scale": octave_scale, "steps": steps, "lr": lr,
                "jitter": jitter, "seed": seed}
    key = cache_key(m, "dream", [image], settings, use_cache)
    hit = load_cached(key, cache_dir)
    if hit is not None:
        meta = hit[1]
        res = DreamResult(hit[0], layer, settings, float(meta["objective_start"]), float(meta["objective_end"]),
                          cached=True)
        yield ImageStep(0, 0, hit[0], {"objective": res.objective_end}, done=True, result=res)
        return
    h, w = image.shape[:2]
    sizes = octave_sizes(h, w, octaves, octave_scale)
    total = steps * len(sizes)
    gen = torch.Generator().manual_seed(int(seed))
    base_full = from_uint8(image, m.device)
    bases = [base_full if s == (h, w) else F.interpolate(base_full, size=s, mode="bilinear", align_corners=False,
                                                         antialias=True) for s in sizes]
    detail = torch.zeros_like(bases[0])
    value = float("nan")
    done = 0
    with torch.enable_grad(), layer_forward(m, [layer]) as fwd:
        with torch.no_grad():
            start = float(fwd(m.normalize(base_full)).layer(layer).pow(2).mean())
        for o, base in enumerate(bases):
            if o:
                detail = F.interpolate(detail, size=base.shape[2:], mode="bilinear", align_corners=False)
            img = (base + detail).clamp(0, 1)
            for _ in range(steps):
                if aborted(abort):
                    return
                img, value = _step(m, fwd, img, layer, lr, jitter, gen)
                done += 1
                if done % yield_every == 0 and done < total:
                    full = img if o == len(bases) - 1 else F.interpolate(img, size=(h, w), mode="bilinear",
                                                                          align_corners=False)
                    yield ImageStep(done, total, to_uint8_image(full), {"objective": value})
            detail = img - base
        if aborted(abort):
            return
        out = to_uint8_image((bases[-1] + detail).clamp(0, 1))
        with torch.no_grad():
            end = float(fwd(m.normalize(from_uint8(out, m.device))).layer(layer).pow(2).mean())
    res = DreamResult(out, layer, settings, start, end)
    save_cached(key, out, {"objective_start": start, "objective_end": end, "settings": settings}, cache_dir)
    yield ImageStep(total, total, out, {"objective": end}, done=True, result=res)


def _step(m: Any, fwd: Any, img: torch.Tensor, layer: str, lr: float, jitter: int,
          gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """One normalized gradient-ascent step of `dream_objective` under a random roll; returns (image, mean a^2)."""
    dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen)) if jitter else (0, 0)
    x = torch.roll(img, shifts=(dy, dx), dims=(2, 3)).detach().requires_grad_(True)
    act = fwd(m.normalize(x)).layer(layer)
    (g,) = torch.autograd.grad(dream_objective(act), x)
    g = torch.roll(g, shifts=(-dy, -dx), dims=(2, 3))
    with torch.no_grad():
        img = (img + lr * g / g.abs().mean().clamp_min(1e-12)).clamp(0, 1)
    return img, float(act.detach().pow(2).mean())


def dream(net: Any, image: np.ndarray, layer: str, *, abort: Abort = None, on_step: Any = None,
          **kwargs: Any) -> DreamResult:
    """Run `iter_dream` to the end (full quality, cached); raises `Cancelled` when aborted."""
    kwargs.setdefault("yield_every", 10**9)
    return run_to_end(iter_dream(net, image, layer, abort=abort, **kwargs), on_step)


def dream_frame(net: Any, frame: np.ndarray, layer: str, *, steps: int = 2, lr: float = 0.02, jitter: int = 8,
                previous: np.ndarray | None = None, carry: float = 0.0, seed: int = 0, octaves: int = 1,
                **kwargs: Any) -> np.ndarray:
    """The live-camera path: dream one frame a few steps at one octave (no cache) and return uint8 HxWx3.

    carry in [0, 1): start from `carry * previous + (1 - carry) * frame` (the last dreamed frame, same size), so on
    a steady camera the dream builds up over frames while moving things stay close to the live picture."""
    frame = check_rgb(frame, "frame")
    if not 0.0 <= carry < 1.0:
        raise ParamError("carry", f"must be in [0, 1), got {carry}")
    start = frame
    if previous is not None and carry > 0 and previous.shape == frame.shape:
        start = cv2.addWeighted(previous, carry, frame, 1.0 - carry, 0.0)
    res = dream(net, start, layer, steps=steps, lr=lr, jitter=jitter, seed=seed, octaves=octaves, use_cache=False,
                **kwargs)
    return res.image


def zoom_image(rgb: np.ndarray, zoom: float) -> np.ndarray:
    """Centre crop of 1/zoom of each side resized back to the same size (one frame of a zoom-in)."""
    if not (zoom >= 1.0 and math.isfinite(zoom)):
        raise ParamError("zoom", f"must be a finite number >= 1, got {zoom}")
    h, w = rgb.shape[:2]
    ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(rgb[top:top + ch, left:left + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def iter_dream_zoom(net: Any, image: np.ndarray, layer: str, *, frames: int, zoom: float = 1.05,
                    abort: Abort = None, seed: int = 0, keep_frames: bool = True,
                    **kwargs: Any) -> Iterator[ImageStep]:
    """The zoom video: frame 0 is `image` dreamed; frame k is frame k-1 zoomed by `zoom` and dreamed again (same
    settings, seed + k). Yields one `ImageStep` per finished frame (step = frames done, `image` the frame), the
    last with `done=True` (its `result` is the list of frames; None with keep_frames=False, for a caller that
    writes each frame as it comes and so keeps memory flat however many frames). Not cached; `abort` is checked
    between dream steps."""
    image = check_rgb(image)
    if frames < 1:
        raise ParamError("frames", f"must be >= 1, got {frames}")
    zoom_image(image[:1, :1], zoom)  # validates zoom before any work
    kwargs["use_cache"] = False
    kwargs["yield_every"] = 10**9
    out: list[np.ndarray] = []
    cur = image
    for k in range(frames):
        src = cur if k == 0 else zoom_image(cur, zoom)
        last = None
        for st in iter_dream(net, src, layer, abort=abort, seed=seed + k, **kwargs):
            last = st
        if last is None or not last.done:
            return
        cur = last.image
        if keep_frames:
            out.append(cur)
        result = out if keep_frames and k == frames - 1 else None
        yield ImageStep(k + 1, frames, cur, last.losses, done=k == frames - 1, result=result)
