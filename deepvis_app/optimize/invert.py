"""Feature inversion (Mahendran & Vedaldi 2015): which images does a layer think are the same as this one?

Given a photo x0 and a layer phi, find x minimizing

    ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2  +  w_alpha * R_alpha(x)  +  w_tv * R_TV(x)

The first term is the *relative code error* (0 = same code, 1 = as far as the zero code). The priors are the
paper's, in its normalized form so one weight works at any size: R_alpha = mean over pixels of (|x - mean| / B)^6
(B = 80/255, the typical RGB norm of a mean-subtracted natural pixel; alpha = 6 bounds the dynamic range without
flattening it) and R_TV = mean over pixels of ((dx^2 + dy^2) / V^2)^(beta/2) with beta = 2 and V = B / 6.5 (the
typical gradient size), so both priors are ~1 on a natural photo. The paper tunes the TV weight per layer (deeper
codes keep less, so the prior has to supply more); `tv_weight` defaults to that schedule by depth. Steps are Adam
on the pixels with the learning rate decayed to a tenth, small random jitter (Mahendran & Vedaldi 2016) and
clipping to [0, 1]. A seeded random start; the reported error is measured on the saved 8-bit image.
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

from ..errors import ParamError
from .imagejob import (
    Abort,
    ImageStep,
    aborted,
    cache_key,
    check_rgb,
    classify,
    from_uint8,
    layer_forward,
    load_cached,
    model_parts,
    run_to_end,
    save_cached,
    to_uint8_image,
)

ALPHA = 6.0
BETA = 2.0
B = 80.0 / 255.0
V = B / 6.5


@dataclass
class InvertResult:
    """`image`: the reconstruction (uint8 SxSx3); `original`: the photo as fitted to SxS (what was inverted);
    `code_error`: relative code error of `image` as saved; `history`: code error after each step (under jitter)."""

    image: np.ndarray
    original: np.ndarray
    layer: str
    code_error: float
    history: list[float]
    settings: dict[str, Any]
    cached: bool = False


def alpha_prior(img: torch.Tensor, mean: torch.Tensor, alpha: float = ALPHA) -> torch.Tensor:
    """Mean over pixels of (RGB norm of (img - mean) / B)^alpha: ~1 for a natural photo, huge for saturated noise."""
    norm = (img - mean).pow(2).sum(1).add(1e-12).sqrt() / B
    return norm.pow(alpha).mean()


def tv_prior(img: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Mean over pixels of ((dx^2 + dy^2 summed over colour) / V^2)^(beta/2) (finite differences, last row and
    column dropped): ~1 for a natural photo, large for high-frequency noise."""
    dx = img[:, :, :-1, 1:] - img[:, :, :-1, :-1]
    dy = img[:, :, 1:, :-1] - img[:, :, :-1, :-1]
    g2 = (dx.pow(2) + dy.pow(2)).sum(1) / (V * V)
    return g2.add(1e-12).pow(beta / 2).mean()


def relative_code_error(code: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||code - target||^2 / ||target||^2."""
    return (code - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12)


def default_tv_weight(depth: float) -> float:
    """TV weight for a layer at relative depth 0 (input) .. 1 (output): grows with depth, as in the paper, where
    deeper codes need more of the image prior."""
    return float(0.002 * 10 ** (2 * min(max(depth, 0.0), 1.0)))


def layer_depth(net: Any, layer: str) -> float:
    """Position of `layer` among the model's probe-able layers, 0..1 (0.5 when unknown)."""
    names = [i.name for i in getattr(net, "layer_info", [])] if hasattr(net, "spec") else \
        [n for n, _ in net.named_modules() if n]
    base = layer.partition("@")[0]
    idx = [k for k, n in enumerate(names) if n == layer or n.partition("@")[0] == base]
    return idx[-1] / max(len(names) - 1, 1) if idx else 0.5


def fit_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop resized to size x size (the network's view of the photo)."""
    from ..sources import fit_image

    return fit_image(rgb, size, "center")


def iter_invert(net: Any, image: np.ndarray, layer: str, *, steps: int = 200, size: int | None = None,
                lr: float = 0.05, alpha_weight: float = 1e-3, tv_weight: float | None = None, jitter: int = 2,
                seed: int = 0, init: str = "noise", abort: Abort = None, yield_every: int = 1,
                use_cache: bool = True, cache_dir: str | Path | None = None, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None, device: torch.device | str | None = None,
                cache_id: str | None = None) -> Iterator[ImageStep]:
    """Reconstruct `image` (RGB uint8, centre-cropped and resized to `size`, default the model's input size) from
    its code at `layer`, yielding an `ImageStep` (losses: code_error, alpha, tv) every `yield_every` steps and a
    last one with `done=True` and an `InvertResult`. `init`: "noise" (the paper) or "mean" (flat grey).
    `abort` (callable or Event) is checked between steps; the generator just ends then and nothing is cached."""
    image = check_rgb(image)
    if steps < 0:
        raise ParamError("steps", f"must be >= 0, got {steps}")
    if init not in ("noise", "mean"):
        raise ParamError("init", f"must be 'noise' or 'mean', got {init!r}")
    size = int(size or getattr(net, "input_size", 224))
    if size < 16:
        raise ParamError("size", f"must be at least 16 pixels, got {size}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ParamError("lr", f"must be a finite number > 0, got {lr}")
    for name, weight in (("alpha_weight", alpha_weight), ("tv_weight", tv_weight)):
        if weight is not None and not (weight >= 0 and math.isfinite(weight)):
            raise ParamError(name, f"must be a finite number >= 0, got {weight}")
    if not 0 <= seed < 2**64:
        raise ParamError("seed", f"must be between 0 and 2^64 - 1, got {seed}")
    m = model_parts(net, mean, std, device, cache_id)
    tvw = default_tv_weight(layer_depth(net, layer)) if tv_weight is None else float(tv_weight)
    original = fit_square(image, size)
    settings = {"layer": layer, "steps": steps, "size": size, "lr": lr, "alpha_weight": alpha_weight,
                "tv_weight": tvw, "jitter": jitter, "seed": seed, "init": init, "alpha": ALPHA, "beta": BETA}
    key = cache_key(m, "invert", [original], settings, use_cache)
    hit = load_cached(key, cache_dir)
    if hit is not None:
        img, meta = hit
        res = InvertResult(img, original, layer, float(meta["code_error"]), list(meta["history"]), settings, True)
        yield ImageStep(steps, steps, img, {"code_error": res.code_error}, done=True, result=res)
        return

    gen = torch.Generator().manual_seed(int(seed))
    x0 = from_uint8(original, m.device)
    with torch.enable_grad(), layer_forward(m, [layer]) as fwd:
        with torch.no_grad():
            target = fwd(m.normalize(x0)).layer(layer).detach()
        if init == "noise":
            start = m.mean + 0.1 * torch.randn(x0.shape, generator=gen).to(m.device)
        else:
            start = m.mean.expand_as(x0)
        x = start.clamp(0, 1).clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        history: list[float] = []
        for step in range(1, steps + 1):
            if aborted(abort):
                return
            for group in opt.param_groups:  # decay to lr/10 over the run (cosine): coarse first, then detail
                group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / max(steps, 1))))
            if jitter > 0:
                dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=gen))
                xin = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
                code = fwd(m.normalize(xin)).layer(layer)  # compared unshifted: robust to a pixel or two
            else:
                code = fwd(m.normalize(x)).layer(layer)
            err = relative_code_error(code, target)
            a, t = alpha_prior(x, m.mean), tv_prior(x)
            loss = err + alpha_weight * a + tvw * t
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0, 1)
            history.append(float(err.detach()))
            if step % yield_every == 0 and step < steps:
                yield ImageStep(step, steps, to_uint8_image(x), {"code_error": history[-1], "alpha": float(a.detach()),
                                                                  "tv": float(t.detach())})
        if aborted(abort):
            return
        img = to_uint8_image(x)
        with torch.no_grad():
            final = float(relative_code_error(fwd(m.normalize(from_uint8(img, m.device))).layer(layer), target))
    res = InvertResult(img, original, layer, final, history, settings)
    save_cached(key, img, {"code_error": final, "history": history, "settings": settings}, cache_dir)
    yield ImageStep(steps, steps, img, {"code_error": final}, done=True, result=res)


def invert(net: Any, image: np.ndarray, layer: str, *, abort: Abort = None, on_step: Any = None,
           **kwargs: Any) -> InvertResult:
    """Run `iter_invert` to the end; raises `Cancelled` when aborted."""
    kwargs.setdefault("yield_every", 10**9)
    return run_to_end(iter_invert(net, image, layer, abort=abort, **kwargs), on_step)


def invert_layers(net: Any, image: np.ndarray, layers: Sequence[str], **kwargs: Any) -> list[InvertResult]:
    """One reconstruction per layer, same settings (the side-by-side that shows what depth throws away)."""
    return [invert(net, image, layer, **kwargs) for layer in layers]


def top1(net: Any, rgb: np.ndarray) -> tuple[int, float]:
    """(class index, probability) of an RGB uint8 image, resized to the model's input size."""
    m = model_parts(net)
    p = classify(m, from_uint8(rgb, m.device), getattr(net, "input_size", None))
    i = int(p.argmax())
    return i, float(p[i])


def side_by_side(images: Sequence[np.ndarray], labels: Sequence[str] | None = None, pad: int = 4) -> np.ndarray:
    """Images in a row on white with an optional caption under each (for galleries and the CLI's overview)."""
    h = max(im.shape[0] for im in images)
    cap = 18 if labels else 0
    tiles = []
    for k, im in enumerate(images):
        tile = np.full((h + cap, im.shape[1], 3), 255, np.uint8)
        tile[:im.shape[0]] = im
        if labels:
            cv2.putText(tile, labels[k], (2, h + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
        tiles.append(np.full((h + cap, pad, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)
