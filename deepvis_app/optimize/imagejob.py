"""What feature inversion, DeepDream and neural style share: they optimize a *photo-sized* image, not a class image.

Each technique is a generator of `ImageStep`s (the house pattern of `engine.iter_optimize`): one per step with the
evolving image as uint8 HxWx3, the losses so far, `abort` checked between steps (the generator just ends), and a
last step with `done=True`. Results of full runs are cached with `optimize.cache` keyed by the model, the input
image bytes and every setting, so asking again for the same reconstruction is instant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..abort import Abort, aborted
from ..errors import DeepVisError
from . import cache as result_cache
from .engine import Cancelled, Forward, to_uint8, unpack_model

__all__ = ["Abort", "Cancelled", "ImageStep", "Model", "aborted", "check_rgb", "from_uint8", "image_id", "load_cached",
           "model_parts", "run_to_end", "save_cached", "to_uint8_image"]


@dataclass
class ImageStep:
    """One step of an image job. `image`: the current image, uint8 HxWx3 (what a PNG of it holds); `losses`: named
    values after this step (what each technique reports, e.g. {"code_error": 0.31}); `result`: the technique's
    result object on the last step (`done=True`), else None."""

    step: int
    steps: int
    image: np.ndarray
    losses: dict[str, float] = field(default_factory=dict)
    done: bool = False
    result: Any = field(default=None, repr=False)


@dataclass
class Model:
    """A VisModel or plain module resolved to what the loops need: the module, normalization and a cache id."""

    net: torch.nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    cache_id: str | None

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        return (img - self.mean) / self.std


def model_parts(net: Any, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                device: torch.device | str | None = None, cache_id: str | None = None) -> Model:
    module, m, s, dev, cid = unpack_model(net, mean, std, device, cache_id)
    return Model(module, torch.tensor(m, device=dev).view(1, 3, 1, 1), torch.tensor(s, device=dev).view(1, 3, 1, 1),
                 dev, cid)


def check_rgb(image: Any, what: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DeepVisError(f"{what}: expected an RGB uint8 array HxWx3, got {getattr(image, 'shape', type(image))!r}")
    if min(image.shape[:2]) < 8:
        raise DeepVisError(f"{what} is too small ({image.shape[1]}x{image.shape[0]}); it needs at least 8x8 pixels")
    return np.ascontiguousarray(image)


def from_uint8(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 HxWx3 -> Tensor[1,3,H,W] in [0, 1] on `device`."""
    t = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return t.contiguous()  # L-BFGS views gradients flat


def to_uint8_image(img: torch.Tensor) -> np.ndarray:
    """Tensor[1,3,H,W] in [0, 1] -> uint8 HxWx3."""
    return to_uint8(img)[0]


def image_id(*images: np.ndarray) -> str:
    """A short hash of the images' pixels (part of a cache key: the same photo gives the same key)."""
    h = hashlib.sha256()
    for im in images:
        h.update(str(im.shape).encode())
        h.update(np.ascontiguousarray(im).tobytes())
    return h.hexdigest()[:24]


def cache_key(model: Model, technique: str, images: Sequence[np.ndarray], settings: dict[str, Any],
              use_cache: bool) -> str | None:
    if not use_cache or model.cache_id is None:
        return None
    return result_cache.make_key(model.cache_id, f"{technique}({image_id(*images)})", settings)


def load_cached(key: str | None, cache_dir: str | Path | None) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(image uint8 HxWx3, meta) for a stored result, else None."""
    if key is None:
        return None
    hit = result_cache.load(key, Path(cache_dir).expanduser() if cache_dir is not None else None)
    if hit is None:
        return None
    images, meta = hit
    return images[0], meta


def save_cached(key: str | None, image: np.ndarray, meta: dict[str, Any], cache_dir: str | Path | None) -> None:
    if key is not None:
        result_cache.save(key, image[None], meta, Path(cache_dir).expanduser() if cache_dir is not None else None)


def run_to_end(steps: Iterator[ImageStep], on_step: Any = None) -> Any:
    """Drive a technique's generator to its last step and return its result; `Cancelled` when it was aborted."""
    for st in steps:
        if on_step is not None:
            on_step(st)
        if st.done:
            return st.result
    raise Cancelled("cancelled")


class _LayerForward(Forward):
    """The engine's forward, with "input too small for a kernel" turned into a one-line user error."""

    def __call__(self, x: torch.Tensor) -> Any:
        try:
            return super().__call__(x)
        except RuntimeError as err:
            if "size" not in str(err).lower():
                raise
            raise DeepVisError(f"the image ({x.shape[-1]}x{x.shape[-2]} px) is too small for this network up to "
                               f"layer {self.layers[-1]!r}; use a larger size") from None


def layer_forward(model: Model, layers: Sequence[str]) -> Forward:
    """A context manager whose call `fwd(normalized_x)` returns `Outputs` with the activations of `layers`; the
    forward stops after the deepest of them (the engine's `Forward`), so a low layer costs only its prefix.
    Unknown layers raise `DeepVisError` naming the valid ones; inputs too small for the net raise one too."""
    return _LayerForward(model.net, list(layers), need_logits=False)


@torch.no_grad()
def classify(model: Model, img: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """Softmax probabilities [classes] of one image in [0, 1] (resized to `size` first when given)."""
    if size is not None and img.shape[-1] != size:
        img = torch.nn.functional.interpolate(img, size=(size, size), mode="bilinear", align_corners=False,
                                              antialias=True)
    out = model.net(model.normalize(img))
    out = out[0] if isinstance(out, tuple | list) else out
    return torch.softmax(out.float().reshape(1, -1), dim=1)[0]
