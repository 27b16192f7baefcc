"""Neural style (Gatys, Ecker & Bethge 2015): the content of one photo painted in the style of another.

Content is a layer's activations (where things are); style is the Gram matrices of several layers (which features
occur together, wherever they are: texture, colour, stroke). The image is optimized to match both:

    loss = content_weight * ||F - P||^2 / ||P||^2  +  style_weight * mean_l ||G_l - A_l||^2 / ||A_l||^2

with F, P the content layer's activations of the image and the content photo, G_l, A_l the Gram matrices
(F_l F_l^T / positions, so a style image of another size gives comparable statistics) of the image and the style
photo. Each term is relative (Gatys use absolute sums with per-network weights such as alpha/beta = 1e-3); relative
terms start near 1 on any network, so one `style_weight` means the same thing for EfficientNet and VGG.

Optimizer: L-BFGS (`torch.optim.LBFGS` with a strong-Wolfe line search), as the lecture recommends for this smooth,
deterministic, full-batch problem; Adam as an option. `steps` is a budget of *function evaluations* (forward +
backward passes), the fair unit between the two: an L-BFGS iteration may take several in its line search.

Start image: the content photo recoloured to the style image's per-channel mean and spread (`recolor`). A global
colour shift is the lowest-frequency change and the slowest for pixel gradients: started from the content photo,
100 L-BFGS evaluations with a night-sky photo as the style lowered the style loss only 4.5x and left the content
tinted; from the recoloured photo 47x (200 evaluations, the default budget: 109x; docs/style.md, 5 pairs).

Layers (`layers_for`): VGG-16/19 use Gatys's choice (style relu1_1, relu2_1, relu3_1, relu4_1, relu5_1; content
relu4_2). EfficientNet-Lite0 has no such stack, so we take the same idea by stride: the first ReLU6 at each
resolution (stem ReLU6 at stride 2, then the depthwise ReLU6 of blocks 1, 3 and 5 at strides 4, 8, 16: the
nonlinear, widest features of each scale) for style, and the stride-8 stage output `_blocks.4` for content
(Gatys's content layer relu4_2 is also at stride 8).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
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
    from_uint8,
    layer_forward,
    load_cached,
    model_parts,
    run_to_end,
    save_cached,
    to_uint8_image,
)

OPTIMIZERS = ("lbfgs", "adam")
INITS = ("recolor", "content", "noise")
DEFAULT_STEPS = 200  # function evaluations; docs/style.md has the measurements behind 200 and init recolor
LBFGS_ITERS_PER_STEP = 10  # L-BFGS iterations per yielded step (each `step()` call spends one extra evaluation)

# model builder -> (content layer, style layers); see the module docstring for why.
LAYERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "efficientnet_lite0": ("_blocks.4", ("_swish@0", "_blocks.1._swish@1", "_blocks.3._swish@1",
                                         "_blocks.5._swish@1")),
    "vgg16": ("features.20", ("features.1", "features.6", "features.11", "features.18", "features.25")),
    "vgg19": ("features.22", ("features.1", "features.6", "features.11", "features.20", "features.29")),
}


@dataclass
class StyleResult:
    """`image`: uint8 HxWx3; `losses_start` / `losses_end`: {"content", "style", "total"} (unweighted relative
    content and style losses, and the weighted total) for the start image and the saved 8-bit result;
    `losses_photo`: the same for the content photo itself, the fair "before" whatever the init (its style loss
    over the result's is how much style was added); `evals`: function evaluations used; `history`: total loss
    after each optimizer step."""

    image: np.ndarray
    losses_start: dict[str, float]
    losses_end: dict[str, float]
    evals: int
    history: list[float]
    settings: dict[str, Any]
    seconds: float = 0.0
    cached: bool = False
    losses_photo: dict[str, float] = field(default_factory=dict)


def gram(act: torch.Tensor) -> torch.Tensor:
    """Gram matrix of activations [N,C,H,W] -> [N,C,C]: F F^T / (H*W) with F the C x HW feature matrix."""
    n, c = act.shape[:2]
    f = act.reshape(n, c, -1)
    return torch.bmm(f, f.transpose(1, 2)) / f.shape[2]


def layers_for(net: Any) -> tuple[str, tuple[str, ...]]:
    """(content layer, style layers) for a VisModel: by its spec name or builder (vgg16/vgg19/efficientnet_lite0)."""
    spec = getattr(net, "spec", None)
    names = [getattr(spec, "name", ""), str(getattr(spec, "builder", "")).rpartition(":")[2].rpartition(".")[2]]
    for n in names:
        if n in LAYERS:
            return LAYERS[n]
    raise ParamError("style_layers", f"have no default for model {names[0] or type(net).__name__!r}: name the "
                     f"content layer and the style layers (defaults exist for {', '.join(LAYERS)})")


def recolor(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """`content` [N,3,H,W] in [0, 1] with each colour channel's mean and spread moved to `style`'s, clipped to
    [0, 1]: the start image of init "recolor" (a global colour shift is the slowest change for pixel gradients)."""
    mu_c, sd_c = content.mean(dim=(2, 3), keepdim=True), content.std(dim=(2, 3), keepdim=True)
    mu_s, sd_s = style.mean(dim=(2, 3), keepdim=True), style.std(dim=(2, 3), keepdim=True)
    return ((content - mu_c) / sd_c.clamp_min(1e-3) * sd_s + mu_s).clamp(0, 1)


def fit_max_side(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longer side is `size` pixels, keeping the aspect ratio."""
    h, w = rgb.shape[:2]
    s = size / max(h, w)
    if s == 1:
        return np.ascontiguousarray(rgb)
    nh, nw = max(8, round(h * s)), max(8, round(w * s))
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


class StyleLoss:
    """The loss of one content/style pair on one network; `__call__(img) -> (total, content, style)`."""

    def __init__(self, m: Any, fwd: Any, content: torch.Tensor, style: torch.Tensor, content_layer: str,
                 style_layers: Sequence[str], content_weight: float, style_weight: float) -> None:
        self.m, self.fwd = m, fwd
        self.content_layer, self.style_layers = content_layer, list(style_layers)
        self.cw, self.sw = content_weight, style_weight
        with torch.no_grad():
            self.p = fwd(m.normalize(content)).layer(content_layer).detach()
            out = fwd(m.normalize(style))
            self.a = [gram(out.layer(name)).detach() for name in self.style_layers]
        self.p_norm = self.p.pow(2).sum().clamp_min(1e-12)
        self.a_norm = [a.pow(2).sum().clamp_min(1e-12) for a in self.a]

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.fwd(self.m.normalize(img))
        c = (out.layer(self.content_layer) - self.p).pow(2).sum() / self.p_norm
        s = sum(((gram(out.layer(n)) - a).pow(2).sum() / an) for n, a, an in
                zip(self.style_layers, self.a, self.a_norm, strict=True)) / len(self.style_layers)
        return self.cw * c + self.sw * s, c, s

    def measure(self, img: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            t, c, s = self(img)
        return {"content": float(c), "style": float(s), "total": float(t)}


def iter_style(net: Any, content: np.ndarray, style: np.ndarray, *, content_layer: str | None = None,
               style_layers: Sequence[str] | None = None, style_weight: float = 1e3, content_weight: float = 1.0,
               steps: int = DEFAULT_STEPS, size: int = 256, optimizer: str = "lbfgs", lr: float | None = None,
               init: str = "recolor", seed: int = 0, abort: Abort = None, yield_every: int = 1,
               use_cache: bool = True, cache_dir: str | Path | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, device: torch.device | str | None = None,
               cache_id: str | None = None) -> Iterator[ImageStep]:
    """Paint `content` (RGB uint8, resized so its longer side is `size`) in the style of `style` (same resize).
    `steps`: budget of function evaluations. optimizer "lbfgs" (lr 1, strong-Wolfe line search) or "adam" (lr
    0.02 in pixel units by default). init "recolor" (the content photo with the style's colour mean and spread
    per channel, see `recolor`), "content" (the photo itself) or "noise".
    Yields an `ImageStep` (losses: content, style, total, evals) after every `yield_every` optimizer steps and a
    last one with `done=True` and a `StyleResult`; `abort` ends it between optimizer steps."""
    content, style = check_rgb(content, "content image"), check_rgb(style, "style image")
    if optimizer not in OPTIMIZERS:
        raise ParamError("optimizer", f"{optimizer!r} is unknown (choose: {', '.join(OPTIMIZERS)})")
    if init not in INITS:
        raise ParamError("init", f"{init!r} is unknown (choose: {', '.join(INITS)})")
    if steps < 0:
        raise ParamError("steps", f"must be >= 0, got {steps}")
    if size < 16:
        raise ParamError("size", f"must be at least 16 pixels, got {size}")
    for name, weight in (("style_weight", style_weight), ("content_weight", content_weight)):
        if not (weight >= 0 and math.isfinite(weight)):
            raise ParamError(name, f"must be a finite number >= 0, got {weight}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise ParamError("lr", f"must be a finite number > 0, got {lr}")
    if not 0 <= seed < 2**64:
        raise ParamError("seed", f"must be between 0 and 2^64 - 1, got {seed}")
    if content_layer is None or not style_layers:
        default_c, default_s = layers_for(net)
        content_layer = content_layer or default_c
        style_layers = list(style_layers or default_s)
    lr = float(lr if lr is not None else (1.0 if optimizer == "lbfgs" else 0.02))
    m = model_parts(net, mean, std, device, cache_id)
    c_img, s_img = fit_max_side(content, size), fit_max_side(style, size)
    settings = {"content_layer": content_layer, "style_layers": list(style_layers), "style_weight": style_weight,
                "content_weight": content_weight, "steps": steps, "size": size, "optimizer": optimizer, "lr": lr,
                "init": init, "seed": seed}
    key = cache_key(m, "style", [c_img, s_img], settings, use_cache)
    hit = load_cached(key, cache_dir)
    if hit is not None:
        img, meta = hit
        res = StyleResult(img, meta["losses_start"], meta["losses_end"], int(meta["evals"]), list(meta["history"]),
                          settings, float(meta.get("seconds", 0.0)), cached=True,
                          losses_photo=dict(meta.get("losses_photo", {})))
        yield ImageStep(steps, steps, img, dict(res.losses_end, evals=res.evals), done=True, result=res)
        return

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(int(seed))
    x_c, x_s = from_uint8(c_img, m.device), from_uint8(s_img, m.device)
    with torch.enable_grad(), layer_forward(m, [content_layer, *style_layers]) as fwd:
        loss_fn = StyleLoss(m, fwd, x_c, x_s, content_layer, style_layers, content_weight, style_weight)
        if init == "content":
            x = x_c.clone()
        elif init == "recolor":
            x = recolor(x_c, x_s)
        else:
            x = (m.mean + 0.1 * torch.randn(x_c.shape, generator=gen).to(m.device)).clamp(0, 1)
        x.requires_grad_(True)
        start = loss_fn.measure(x)
        photo = start if init == "content" else loss_fn.measure(x_c)
        evals = 0
        last: dict[str, float] = dict(start)

        def closure() -> torch.Tensor:
            nonlocal evals
            opt.zero_grad(set_to_none=True)
            total, c, s = loss_fn(x)
            total.backward()
            evals += 1
            last.update(content=float(c.detach()), style=float(s.detach()), total=float(total.detach()))
            return total

        if optimizer == "lbfgs":
            opt: torch.optim.Optimizer = torch.optim.LBFGS([x], lr=lr, max_iter=LBFGS_ITERS_PER_STEP,
                                                           history_size=50, line_search_fn="strong_wolfe")
        else:
            opt = torch.optim.Adam([x], lr=lr)
        history: list[float] = []
        n = 0
        while evals < steps:
            if aborted(abort):
                return
            if optimizer == "lbfgs":  # each step() re-evaluates its start point: several iterations per call
                group = opt.param_groups[0]
                group["max_eval"] = steps - evals
                group["max_iter"] = max(1, min(LBFGS_ITERS_PER_STEP, steps - evals))
            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
            n += 1
            history.append(last["total"])
            if n % yield_every == 0 and evals < steps:
                yield ImageStep(min(evals, steps), steps, to_uint8_image(x), dict(last, evals=evals))
        if aborted(abort):
            return
        img = to_uint8_image(x)
        end = loss_fn.measure(from_uint8(img, m.device))
    seconds = time.perf_counter() - t0
    res = StyleResult(img, start, end, evals, history, settings, seconds, losses_photo=photo)
    save_cached(key, img, {"losses_start": start, "losses_end": end, "evals": evals, "history": history,
                           "seconds": seconds, "settings": settings, "losses_photo": photo}, cache_dir)
    yield ImageStep(steps, steps, img, dict(end, evals=evals), done=True, result=res)


def style_transfer(net: Any, content: np.ndarray, style: np.ndarray, *, abort: Abort = None, on_step: Any = None,
                   **kwargs: Any) -> StyleResult:
    """Run `iter_style` to the end; raises `Cancelled` when aborted."""
    kwargs.setdefault("yield_every", 10**9)
    return run_to_end(iter_style(net, content, style, abort=abort, **kwargs), on_step)
