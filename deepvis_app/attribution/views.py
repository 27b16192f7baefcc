"""How attribution maps are shown: render views (raw, gray, norm, normblur), Grad-CAM's map, a Gaussian blur.

All on the tensor's device; only the final uint8 image crosses to the host.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import devices
from ..errors import DeepVisError

VIEWS = ("raw", "gray", "norm", "normblur")


def gradcam_map(activation: Tensor, grad: Tensor | None, size: tuple[int, int]) -> Tensor:
    """relu(sum_c w_c A_c) with w_c the spatial mean of d(objective)/dA_c, bilinearly upsampled to `size`.

    `activation` and `grad` are channels-first maps N x C x H x W (`layouts.as_maps` of any layer)."""
    if activation.dim() != 4:
        raise DeepVisError(f"Grad-CAM needs a layer with spatial positions, got shape {tuple(activation.shape)}")
    if grad is None:
        grad = torch.zeros_like(activation)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * activation).sum(dim=1, keepdim=True).clamp(min=0)
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)


def gaussian_blur(img: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of a [N, C, H, W] tensor on its device; borders reflected (replicated when the
    image is smaller than the kernel), so edges keep their brightness."""
    radius = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=img.device, dtype=img.dtype)
    k = torch.exp(-(t * t) / (2 * sigma * sigma))
    k = k / k.sum()
    c = img.shape[1]
    pad = F.pad(img, (radius, radius, radius, radius), mode="reflect") if min(img.shape[-2:]) > radius \
        else F.pad(img, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(pad, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _scale(values: Tensor, percentile: float) -> Tensor:
    """The value mapped to full brightness: the max, or a high percentile so one hot pixel cannot make
    the whole image dark (values above it saturate). The percentile is taken over the pixels the signal
    reaches (non-zero): a unit with an 11-pixel receptive field has zeros almost everywhere, and a percentile
    over the whole image would be 0 and turn its patch into a white block."""
    tiny = torch.finfo(torch.float32).tiny
    if percentile >= 100.0:
        return values.amax().clamp_min(tiny)
    flat = values.flatten()
    if flat.numel() > 4_000_000:  # a strided sample is plenty
        flat = flat[:: flat.numel() // 4_000_000 + 1]
    if devices.host_reads_free(flat):
        return _percentile_top(flat, percentile).clamp_min(tiny)
    return percentile_sorted(flat, percentile).clamp_min(tiny)


def _percentile_top(flat: Tensor, percentile: float) -> Tensor:
    """`percentile_sorted` on the CPU, where reading the count costs nothing: only the few values above the
    percentile are ordered (a top-k of ~0.5% of the map, not a sort of all of it: three views of a 224 px frame
    spent 5.5 ms sorting)."""
    n = flat.numel()
    count = int((flat > 0).sum())
    if count == 0:
        return flat.new_zeros(())
    pos = (n - count) + (percentile / 100.0) * max(count - 1, 0)
    lo, hi = min(max(math.floor(pos), 0), n - 1), min(max(math.ceil(pos), 0), n - 1)
    top = torch.topk(flat, n - lo).values  # descending: ascending position p is top[n - 1 - p]
    a, b = top[n - 1 - lo], top[n - 1 - hi]
    return a + (b - a) * (pos - lo)


def percentile_sorted(flat: Tensor, percentile: float) -> Tensor:
    """The `percentile` of the positive values of `flat` (0 when there are none), as torch.quantile with linear
    interpolation, on the device without a host sync."""
    # torch.quantile of the positive values, linear interpolation, computed without reading how many there are on
    # the host (a boolean mask would: one device sync per view): in ascending order they are the last `count`.
    ordered = torch.sort(flat).values
    count = (flat > 0).sum()
    n = flat.numel()
    pos = (n - count).double() + (percentile / 100.0) * (count - 1).clamp_min(0).double()
    lo = pos.floor().long().clamp(0, n - 1)
    hi = pos.ceil().long().clamp(0, n - 1)
    a, b = ordered.index_select(0, lo.view(1))[0], ordered.index_select(0, hi.view(1))[0]
    value = a + (b - a) * (pos - lo.double()).to(a.dtype)
    return torch.where(count > 0, value, torch.zeros_like(value))


def render_view(attr: Tensor, view: str = "raw", *, blur_sigma: float | None = None,
                percentile: float = 100.0) -> np.ndarray:
    """`view_tensor` read back: uint8 HxWx3 on the host (one copy)."""
    return view_tensor(attr, view, blur_sigma=blur_sigma, percentile=percentile).cpu().numpy()


def view_tensor(attr: Tensor, view: str = "raw", *, blur_sigma: float | None = None,
                percentile: float = 100.0) -> Tensor:
    """Attribution Tensor[1, C, H, W] (C = 3 or 1) -> uint8 HxWx3, as the old toolbox showed it.

    raw: signed, 0.5 + x / (2 max|x|) per channel; gray: channel mean, same scaling; norm: |x| summed over
    channels, divided by its max; normblur: norm, Gaussian blur (sigma default 4 px at 224 px), renormalized.
    All on the tensor's device, without a read-back (`render_view` reads the image; the live pipeline reads it with
    the frame's other arrays in one copy). An all-zero map renders
    mid-gray (raw/gray) or black (norm/normblur). `percentile` < 100 scales by that percentile of the
    magnitudes instead of the max (values beyond it saturate): the live inspector uses 99.5, since a few
    extreme pixels otherwise leave a guided-backprop image nearly black.
    """
    if view not in VIEWS:
        raise DeepVisError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    if attr.dim() == 3:
        attr = attr.unsqueeze(0)
    if attr.dim() != 4 or attr.shape[1] not in (1, 3):
        raise DeepVisError(f"render_view expects [1, 3|1, H, W], got {tuple(attr.shape)}")
    a = attr[:1].detach().float()
    tiny = torch.finfo(torch.float32).tiny
    if view in ("raw", "gray"):
        if view == "gray":
            a = a.mean(dim=1, keepdim=True)
        img = (0.5 + a / (2 * _scale(a.abs(), percentile))).clamp(0, 1)
    else:
        img = a.abs().sum(dim=1, keepdim=True)
        img = (img / _scale(img, percentile)).clamp(0, 1)
        if view == "normblur":
            sigma = blur_sigma if blur_sigma is not None else max(1.0, 4.0 * a.shape[-1] / 224)
            img = gaussian_blur(img, sigma)
            img = img / img.amax().clamp_min(tiny)
    img = img.expand(1, 3, -1, -1)
    out = (img[0].permute(1, 2, 0) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return out.contiguous()
