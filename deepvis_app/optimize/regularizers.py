"""Regularizers: priors that keep an optimized image natural-looking.

Two kinds. *Penalties* are differentiable and subtracted from the objective each step (Simonyan's L2 from a
zero image, total variation). *Projections* edit centred pixels in place between steps, exactly as
Yosinski et al. 2015 describe them (L2 decay, Gaussian blur every k steps, clipping pixels of small norm or
small contribution); they act on `PixelImage.pixels` (image minus the dataset mean).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ---- penalties (per image, shape [N]) ---------------------------------------------------------------


def l2_penalty(centred: torch.Tensor) -> torch.Tensor:
    """Simonyan et al. 2013: squared L2 norm of the image relative to the zero (mean) image, per image.

    Normalized per pixel (mean, not sum) so one weight works at any resolution."""
    return centred.pow(2).reshape(centred.shape[0], -1).mean(1)


def total_variation(img: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels, per image (penalizes high-frequency noise)."""
    dy = (img[:, :, 1:, :] - img[:, :, :-1, :]).abs().reshape(img.shape[0], -1).mean(1)
    dx = (img[:, :, :, 1:] - img[:, :, :, :-1]).abs().reshape(img.shape[0], -1).mean(1)
    return dy + dx


# ---- projections (Yosinski et al. 2015), in place on centred pixels [N,3,H,W] -------------------------


@torch.no_grad()
def decay_(x: torch.Tensor, rate: float) -> None:
    """r_theta(x) = (1 - theta_decay) * x: pulls every pixel towards the mean image."""
    if rate:
        x.mul_(1.0 - rate)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D normalized Gaussian, radius ceil(3 sigma) (at least 1)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


@torch.no_grad()
def gaussian_blur_(x: torch.Tensor, sigma: float) -> None:
    """Separable Gaussian blur of width `sigma` pixels, per channel, reflecting at the borders."""
    if sigma <= 0:
        return
    k = gaussian_kernel(sigma).to(x.device, x.dtype)
    r = (k.numel() - 1) // 2
    c = x.shape[1]
    y = x
    if r >= min(x.shape[2:]):  # reflect padding needs the image larger than the kernel
        pad_mode = "replicate"
    else:
        pad_mode = "reflect"
    y = F.pad(y, (r, r, 0, 0), mode=pad_mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode=pad_mode)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    x.copy_(y)


def _below_percentile(score: torch.Tensor, pct: float) -> torch.Tensor:
    """Mask [N,1,H,W] of pixels whose score is below the pct-th percentile of their image."""
    flat = score.reshape(score.shape[0], -1)
    thresh = torch.quantile(flat, pct / 100.0, dim=1, keepdim=True)
    return (flat < thresh).reshape(score.shape)


@torch.no_grad()
def clip_small_norm_(x: torch.Tensor, pct: float) -> None:
    """Zero (set to the mean colour) pixels whose RGB norm is below the pct-th percentile."""
    if pct <= 0:
        return
    norm = x.norm(dim=1, keepdim=True)
    x.masked_fill_(_below_percentile(norm, pct).expand_as(x), 0.0)


@torch.no_grad()
def clip_small_contribution_(x: torch.Tensor, grad: torch.Tensor, pct: float) -> None:
    """Zero pixels whose contribution is below the pct-th percentile.

    Contribution is the linearized change of the objective if the pixel were set to zero (the mean), i.e.
    |sum over channels of x * dF/dx| (Yosinski et al. 2015, section 3).
    """
    if pct <= 0:
        return
    contrib = (x * grad).sum(dim=1, keepdim=True).abs()
    x.masked_fill_(_below_percentile(contrib, pct).expand_as(x), 0.0)
