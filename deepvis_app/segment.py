"""Class saliency (Simonyan et al. 2013, §3.1), SmoothGrad, and GrabCut segmentation seeded by saliency (§3.2).

Saliency: max over colour channels of |d score / d image|, score = the class's logit (the unnormalized score the
paper differentiates); computed by `attribution.attribute(..., method="saliency")`, so the model is never touched.
SmoothGrad (Smilkov et al. 2017): the mean saliency of `samples` copies of the image with Gaussian noise of
sigma = `noise` x (max - min of the input), all in one batched backward.
Segmentation: GrabCut (OpenCV) with foreground seeds where the blurred map is above its `fg_quantile` and
background seeds below `bg_quantile` (the paper's 95% / 30%), the rest "probably background"; it returns the
foreground mask. `segment` seeds from SmoothGrad by default: the plain gradient of a photo of one object on a plain
or dark background is brightest on background texture and leaves the flat object in the bottom 30% (sure
background), so GrabCut cut out the background (docs/occlusion.md has the measurements). A guard catches a map
lit by the frame rather than the object: when most foreground seeds sit in the image's outer band, they are
re-drawn from the interior (the band may still join the cut).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .attribution import attribute
from .errors import DeepVisError, ParamError

# SmoothGrad samples: each costs one backward pass (1000 take minutes on a CPU; more is not smoother).
MAX_SAMPLES = 1000
# `segment`'s default: with 16 samples the cut has IoU >= 0.7 on 14 of 14 images with a known object mask, with
# the plain map on 3 (docs/occlusion.md); about 2 s a 224 px image for EfficientNet-Lite0 on one CPU core.
DEFAULT_SMOOTH = 16
# Border guard: the outer tenth of each side is 36% of the image; when more than half of the foreground seeds lie
# there, the map is lit by the frame (padding, background texture), not by an object.
BORDER_BAND = 0.1
BORDER_SHARE = 0.5

__all__ = ["DEFAULT_SMOOTH", "Segmentation", "border_band", "grabcut_from_saliency", "saliency_map",
           "segment", "smoothgrad"]


def _parts(net: Any) -> nn.Module:
    return net.net if hasattr(net, "net") and hasattr(net, "spec") else net


def _tensor(net: Any, x: Tensor | np.ndarray) -> Tensor:
    if isinstance(x, np.ndarray):
        if not hasattr(net, "preprocess"):
            raise DeepVisError("an RGB image needs a VisModel (its preprocessing); pass a normalized tensor")
        x = net.preprocess(x)
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] != 1:
        raise DeepVisError(f"expected one normalized image Tensor[1, C, H, W], got {getattr(x, 'shape', x)!r}")
    return x.detach()


def saliency_map(net: Any, x: Tensor | np.ndarray, cls: int, *, objective: str = "logit") -> Tensor:
    """|d score_cls / d x| max over colour channels: Tensor[H, W] (float32, on x's device)."""
    module = _parts(net)
    xt = _tensor(net, x)
    return attribute(module, xt, None, cls, method="saliency", objective=objective)[0, 0].float()


def smoothgrad(net: Any, x: Tensor | np.ndarray, cls: int, *, samples: int = 16, noise: float = 0.15,
               objective: str = "logit", seed: int = 0, batch: int = 16) -> Tensor:
    """SmoothGrad of the saliency map: mean over `samples` noisy copies (sigma = noise x input range)."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise ParamError("samples", f"must be between 1 and {MAX_SAMPLES}, got {samples}")
    if not 0 <= noise <= 1:  # also refuses nan
        raise ParamError("noise", f"must be a fraction of the input range between 0 and 1, got {noise}")
    module = _parts(net)
    xt = _tensor(net, x)
    sigma = float(noise) * float(xt.max() - xt.min())
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    total = torch.zeros(xt.shape[-2:], device=xt.device)
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        eps = torch.randn((n, *xt.shape[1:]), generator=gen).to(xt.device, xt.dtype)
        sal = attribute(module, xt + sigma * eps, None, cls, method="saliency", objective=objective)
        total += sal[:, 0].float().sum(dim=0)
        done += n
    return total / samples


@dataclass
class Segmentation:
    """mask: bool HxW foreground; saliency: the map used (float32 HxW); area: foreground fraction;
    bbox: (top, left, bottom, right) of the foreground, bottom/right exclusive, or None when empty;
    guards: what the guards changed ("seeds_off_border"), empty when the map was trusted as is."""

    mask: np.ndarray
    saliency: np.ndarray
    area: float
    bbox: tuple[int, int, int, int] | None
    guards: tuple[str, ...] = ()

    def cutout(self, rgb: np.ndarray, background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
        """The object on a plain background (uint8 HxWx3, same size as the mask)."""
        out = np.empty_like(rgb)
        out[:] = np.asarray(background, np.uint8)
        out[self.mask] = rgb[self.mask]
        return out


def border_band(shape: tuple[int, int], band: float = BORDER_BAND) -> np.ndarray:
    """bool HxW: the outer `band` fraction of each side (at least one pixel)."""
    h, w = shape
    bh, bw = max(1, round(band * h)), max(1, round(band * w))
    out = np.ones((h, w), bool)
    out[bh:h - bh, bw:w - bw] = False
    return out


def _seeds(sal: np.ndarray, fg_quantile: float, bg_quantile: float, guard: bool) -> tuple[np.ndarray, np.ndarray,
                                                                                          tuple[str, ...]]:
    """(sure foreground, sure background, guards applied) from the map's quantiles."""
    fg = sal >= np.quantile(sal, fg_quantile)
    bg = sal <= np.quantile(sal, bg_quantile)
    if guard and fg.any():
        band = border_band(sal.shape)
        inner = ~band
        if fg[band].sum() > BORDER_SHARE * fg.sum() and inner.any():
            # the frame outshines the object: seed the object from the interior; the band may still join the cut
            fg = inner & (sal >= np.quantile(sal[inner], fg_quantile))
            bg &= ~fg
            return fg, bg, ("seeds_off_border",)
    return fg, bg & ~fg, ()


def _grabcut(rgb: np.ndarray, saliency: np.ndarray | Tensor, fg_quantile: float, bg_quantile: float, iterations: int,
             seed: int, guard: bool) -> tuple[np.ndarray, tuple[str, ...]]:
    import cv2

    sal = saliency.detach().float().cpu().numpy() if isinstance(saliency, Tensor) else np.asarray(saliency, np.float32)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DeepVisError(f"expected an RGB uint8 image, got {getattr(rgb, 'shape', rgb)!r}")
    if sal.shape != rgb.shape[:2]:
        raise DeepVisError(f"saliency {sal.shape} and image {rgb.shape[:2]} differ in size")
    if not 0.0 <= bg_quantile < fg_quantile <= 1.0:  # also refuses nan
        raise ParamError("bg_quantile", f"and fg_quantile need 0 <= bg_quantile < fg_quantile <= 1, got "
                         f"{bg_quantile} and {fg_quantile}")
    fg, bg, guards = _seeds(sal, fg_quantile, bg_quantile, guard)
    if not fg.any() or not bg.any():
        return np.zeros(sal.shape, bool), guards  # a flat map gives no seeds: nothing to cut
    mask = np.full(sal.shape, cv2.GC_PR_BGD, np.uint8)
    mask[bg] = cv2.GC_BGD
    mask[fg] = cv2.GC_FGD
    cv2.setRNGSeed(int(seed))
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    cv2.grabCut(bgr, mask, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD), guards


def grabcut_from_saliency(rgb: np.ndarray, saliency: np.ndarray | Tensor, *, fg_quantile: float = 0.95,
                          bg_quantile: float = 0.30, iterations: int = 5, seed: int = 0,
                          guard: bool = True) -> np.ndarray:
    """GrabCut (cv2.grabCut, mask mode) seeded from a saliency map of the same size; returns a bool mask.

    Pixels with saliency >= the `fg_quantile` are sure foreground, <= the `bg_quantile` sure background, the rest
    probably background: GrabCut's colour models then decide, so the mask follows the object's edges. guard: when
    more than half of the foreground seeds lie in the image's outer band (`border_band`), they are re-drawn from
    the interior's own top quantile; the band becomes "probably background", so the cut may still reach it.
    """
    return _grabcut(rgb, saliency, fg_quantile, bg_quantile, iterations, seed, guard)[0]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def segment(vm: Any, rgb: np.ndarray, cls: int, *, smooth: int = DEFAULT_SMOOTH, noise: float = 0.15,
            blur: float | None = None, fg_quantile: float = 0.95, bg_quantile: float = 0.30, iterations: int = 5,
            guard: bool = True) -> Segmentation:
    """Cut class `cls` out of `rgb` as the network sees it (the fitted input: crop/resize of the model spec).

    smooth: SmoothGrad samples for the map (default 16); 0 = the plain saliency map, which on a photo of one object
    on a plain background often seeds the background. blur: Gaussian sigma in pixels applied to the map before
    seeding (default 4 px at 224): gradients are speckled, and seeds from single pixels scatter GrabCut's colour
    models over the whole image; 0 = none. guard: see `grabcut_from_saliency`. The mask, saliency and bbox are at
    the network's input resolution (e.g. 224x224); use `vm.preprocess.fit(rgb)` for the matching image.
    """
    if not 0 <= smooth <= MAX_SAMPLES:
        raise ParamError("smooth", f"must be between 0 and {MAX_SAMPLES} samples, got {smooth}")
    if not 0.0 <= bg_quantile < fg_quantile <= 1.0:  # before the gradients, not after
        raise ParamError("bg_quantile", f"and fg_quantile need 0 <= bg_quantile < fg_quantile <= 1, got "
                         f"{bg_quantile} and {fg_quantile}")
    fitted = vm.preprocess.fit(rgb)
    x = vm.preprocess.to_tensor(fitted)
    sal = smoothgrad(vm, x, cls, samples=smooth, noise=noise) if smooth > 0 else saliency_map(vm, x, cls)
    sal_np = sal.cpu().numpy()
    sigma = 4.0 * sal_np.shape[1] / 224 if blur is None else float(blur)
    if sigma > 0:
        import cv2

        sal_np = cv2.GaussianBlur(sal_np, (0, 0), sigma)
    mask, guards = _grabcut(fitted, sal_np, fg_quantile, bg_quantile, iterations, 0, guard)
    return Segmentation(mask, sal_np, float(mask.mean()), _bbox(mask), guards)
