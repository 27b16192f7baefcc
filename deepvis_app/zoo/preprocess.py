"""Frames to network inputs: fit (crop + resize, on the host) and normalize (on the model's device).

The fit honours a model's own eval recipe: `crop_pct` (the share of the centred square kept: timm's crop_pct,
torchvision's crop/resize) and its interpolation (antialiased bilinear / bicubic as torchvision's and timm's eval
transforms, or DeepVis's own area average). Specs without them fit exactly as `sources.fit_image` always did.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DeepVisError
from ..sources import fit_image
from .specs import ModelSpec


def scale_size(size: int, crop_pct: float) -> int:
    """The side the frame's short side is resized to before the centre crop (timm: floor(size / crop_pct); a
    hair of slack so that a crop_pct written as 224/232 gives 232)."""
    return max(size, math.floor(size / crop_pct + 0.01))


def _resize(rgb: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb
    if interpolation == "area":
        shrinking = rgb.shape[0] > height
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    # uint8 straight in: torch's uint8 resampling kernels (what torchvision's transforms run on uint8 tensors) are
    # ~40x faster than a float round trip and give torchvision's pixels exactly.
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
    if interpolation == "nearest":
        y = F.interpolate(x, size=(height, width), mode="nearest")
    else:
        y = F.interpolate(x, size=(height, width), mode=interpolation, align_corners=False, antialias=True)
    return np.ascontiguousarray(y[0].permute(1, 2, 0).numpy())


def fit_frame(rgb: np.ndarray, size: int, crop: str = "center", crop_pct: float = 1.0,
              interpolation: str = "area") -> np.ndarray:
    """Fit an RGB uint8 frame to a `size` x `size` input as the libraries' eval transforms do: resize the short side
    to `scale_size(size, crop_pct)` (`stretch`: both sides), then crop the centre. `crop_pct=1` with `area` is
    exactly `sources.fit_image` (centre square, then OpenCV's resize)."""
    if crop_pct >= 1.0 and interpolation == "area":
        return fit_image(rgb, size, crop)
    h, w = rgb.shape[:2]
    scale = scale_size(size, crop_pct)
    if crop == "center":
        # torchvision's resize rule: the short side becomes `scale`, the long one int(scale * long / short)
        height, width = (scale, int(scale * w / h)) if h <= w else (int(scale * h / w), scale)
    else:
        height = width = scale
    out = _resize(rgb, max(height, size), max(width, size), interpolation)
    top, left = int(round((out.shape[0] - size) / 2.0)), int(round((out.shape[1] - size) / 2.0))
    return np.ascontiguousarray(out[top:top + size, left:left + size])


class Preprocessor:
    """RGB uint8 HxWx3 -> normalized Tensor[1,3,S,S] on the model's device.

    Crop and resize run on the host (one pass); the uint8 image crosses to the GPU through a pair
    of pinned buffers with a non-blocking copy, and normalization runs on the device.
    """

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        self.size = spec.input_size
        self.crop = spec.crop
        self.crop_pct = float(getattr(spec, "crop_pct", 1.0))
        self.interpolation = str(getattr(spec, "interpolation", "area"))
        self.device = device
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)
        self._pinned: list[torch.Tensor] = []
        self._turn = 0
        if device.type == "cuda":
            self._pinned = [torch.empty((self.size, self.size, 3), dtype=torch.uint8).pin_memory() for _ in range(2)]

    def fit(self, rgb: np.ndarray, crop: str | None = None) -> np.ndarray:
        """Crop/resize to the network's input as uint8 HxWx3: the frame exactly as the network sees it."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise DeepVisError(f"expected an RGB uint8 image of shape HxWx3, got {getattr(rgb, 'shape', rgb)!r}")
        return fit_frame(rgb, self.size, crop or self.crop, self.crop_pct, self.interpolation)

    def to_tensor(self, fitted: np.ndarray) -> torch.Tensor:
        """Normalize an already fitted uint8 image on the device."""
        host = torch.from_numpy(fitted)
        if self._pinned:
            buf = self._pinned[self._turn]
            self._turn ^= 1
            buf.copy_(host)
            host = buf.to(self.device, non_blocking=True)
        else:
            host = host.to(self.device)
        x = host.permute(2, 0, 1).unsqueeze(0).float()
        return (x - self.mean) * self.inv_std

    def __call__(self, rgb: np.ndarray, crop: str | None = None) -> torch.Tensor:
        return self.to_tensor(self.fit(rgb, crop))

    def deprocess(self, x: torch.Tensor) -> np.ndarray:
        """Inverse of normalization: Tensor[1,3,H,W] -> uint8 HxWx3 (clipped), e.g. for optimized images."""
        img = (x.detach()[:1] / self.inv_std + self.mean).clamp(0, 255).round().to(torch.uint8)
        return img[0].permute(1, 2, 0).cpu().numpy()
