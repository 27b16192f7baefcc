"""Frames to network inputs: fit (crop + resize, on the host) and normalize (on the model's device).

The fit honours a model's own eval recipe: `crop_pct` (the share of the centred square kept: timm's crop_pct,
torchvision's crop/resize) and its interpolation (antialiased bilinear / bicubic as torchvision's and timm's eval
transforms, or DeepVis's own area average). Specs without them fit exactly as `sources.fit_image` always did.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

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


class StagingRing:
    """Pinned host buffers for non-blocking host-to-device copies, each with an event.

    A copy from pinned memory is only queued when `.to(device, non_blocking=True)` returns: the buffer must not be
    written again until the GPU has read it. So each buffer records an event on the copying thread's stream right
    after its copy and waits for that event before it is refilled (by then the copy has usually finished: the
    host only waits when more images were sent in a row than there are buffers). One lock makes the turn-taking
    safe for several threads (the live worker and a job sharing a model's preprocessing). `event` makes an event
    (tests pass a fake); `pin=False` leaves the buffers unpinned.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, *, count: int = 3, pin: bool = True,
                 event: Callable[[], Any] | None = None) -> None:
        self.device = device
        self.shape = tuple(shape)
        self._lock = threading.Lock()
        self._turn = 0
        self._make_event = event or (lambda: torch.cuda.Event())
        if device.type == "cuda":
            with torch.cuda.device(device):  # pinning opens a context on the current device: make it this one
                self._buffers = [torch.empty(self.shape, dtype=torch.uint8).pin_memory() if pin
                                 else torch.empty(self.shape, dtype=torch.uint8) for _ in range(count)]
        else:
            self._buffers = [torch.empty(self.shape, dtype=torch.uint8) for _ in range(count)]
        self._events: list[Any | None] = [None] * count  # None: nothing copied from that buffer yet

    def upload(self, host: torch.Tensor) -> torch.Tensor:
        """`host` (uint8, `shape`) on the device, through the next buffer; queued, not waited for."""
        with self._lock:
            i = self._turn
            self._turn = (i + 1) % len(self._buffers)
            event = self._events[i]
            if event is not None and not event.query():
                event.synchronize()  # the copy queued from this buffer last time has been read
            buf = self._buffers[i]
            buf.copy_(host)
            out = buf.to(self.device, non_blocking=True)
            if out.data_ptr() == buf.data_ptr():  # same device (the CPU): `to` aliased the buffer
                out = buf.clone()
            if event is None:
                event = self._events[i] = self._make_event()
            event.record(torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None)
            return out


class Preprocessor:
    """RGB uint8 HxWx3 -> normalized Tensor[1,3,S,S] on the model's device.

    Crop and resize run on the host (one pass); on a GPU the uint8 image crosses through pinned buffers with a
    non-blocking copy (`StagingRing`: safe for many images in a row and for several threads), and normalization
    runs on the device.
    """

    def __init__(self, spec: ModelSpec, device: torch.device) -> None:
        self.size = spec.input_size
        self.crop = spec.crop
        self.crop_pct = float(getattr(spec, "crop_pct", 1.0))
        self.interpolation = str(getattr(spec, "interpolation", "area"))
        self.device = device
        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(spec.std, device=device).view(1, 3, 1, 1) * 255.0)
        self.staging: StagingRing | None = None
        if device.type == "cuda":
            self.staging = StagingRing((self.size, self.size, 3), device)

    def fit(self, rgb: np.ndarray, crop: str | None = None) -> np.ndarray:
        """Crop/resize to the network's input as uint8 HxWx3: the frame exactly as the network sees it."""
        if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise DeepVisError(f"expected an RGB uint8 image of shape HxWx3, got {getattr(rgb, 'shape', rgb)!r}")
        return fit_frame(rgb, self.size, crop or self.crop, self.crop_pct, self.interpolation)

    def to_tensor(self, fitted: np.ndarray) -> torch.Tensor:
        """Normalize an already fitted uint8 image on the device."""
        host = torch.from_numpy(np.ascontiguousarray(fitted))
        if self.staging is not None and tuple(host.shape) == self.staging.shape:
            dev = self.staging.upload(host)
        else:
            dev = host.to(self.device)
        x = dev.permute(2, 0, 1).unsqueeze(0).float()
        return (x - self.mean) * self.inv_std

    def __call__(self, rgb: np.ndarray, crop: str | None = None) -> torch.Tensor:
        return self.to_tensor(self.fit(rgb, crop))

    def deprocess(self, x: torch.Tensor) -> np.ndarray:
        """Inverse of normalization: Tensor[1,3,H,W] -> uint8 HxWx3 (clipped), e.g. for optimized images."""
        img = (x.detach()[:1] / self.inv_std + self.mean).clamp(0, 255).round().to(torch.uint8)
        return img[0].permute(1, 2, 0).cpu().numpy()
