"""Where the occluding windows go and what covers the image under them.

Placement is Captum's (`captum.attr.Occlusion`): along an axis of `size` pixels, ceil((size - window) / stride) + 1
windows with top-left corners 0, stride, 2 stride, ...; when the stride does not divide (size - window) the last
window starts past `size - window` and is cut at the image edge, so every pixel is covered (a window that would
start outside the image, possible only with stride > window, is left out). Fills are full normalized images (a
Captum baseline): the patch copies the fill's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..attribution import gaussian_blur
from ..errors import ParamError

FILLS = ("zero", "mean", "blur")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def patch_positions(size: int, window: int, stride: int) -> list[int]:
    """Top-left corners along one axis (Captum's placement, see the module docstring)."""
    if window < 1:
        raise ParamError("window", f"must be at least 1, got {window}")
    if stride < 1:
        raise ParamError("stride", f"must be at least 1, got {stride}")
    if window > size:
        raise ParamError("window", f"is larger than the {size}px input (got {window})")
    return list(range(0, min(size - window + stride, size), stride))


def window_span(start: int, window: int, size: int) -> int:
    """How many pixels of a window starting at `start` lie inside an axis of `size` pixels (the last window of
    an axis may be cut at the edge)."""
    return max(0, min(window, size - start))


def fill_image(x: Tensor, fill: str, window: int, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """What replaces the image under the patch, as a full normalized image [1, C, H, W] (a Captum baseline)."""
    if fill == "zero":
        m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        if m.shape[1] != x.shape[1]:
            raise ParamError("mean", f"and std need {x.shape[1]} values for the grey fill, got {m.shape[1]}")
        return ((0.5 - m) / s).expand_as(x).contiguous()
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if fill == "blur":
        return gaussian_blur(x, max(1.0, window / 4.0))
    raise ParamError("fill", f"{fill!r} is unknown; use one of {', '.join(FILLS)}")
