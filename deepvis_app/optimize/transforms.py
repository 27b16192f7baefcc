"""Transformation robustness (Lucid): random pad, jitter, scale and rotation before each forward.

An image that excites a unit only at one exact pixel alignment is an adversarial pattern, not a feature;
asking it to work under small random shifts, zooms and turns makes the optimizer find structure a person
can see. Every transform draws from the engine's `torch.Generator`, so runs are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _choice(values: Sequence[float], gen: torch.Generator) -> float:
    return values[int(torch.randint(len(values), (1,), generator=gen))]


def pad(width: int, value: float = 0.5) -> Transform:
    """Constant border (grey by default) so jitter and rotation never show the network a wrap-around."""

    def t(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return F.pad(x, (width,) * 4, mode="constant", value=value)

    return t


def jitter(d: int) -> Transform:
    """Random crop that shifts the image by 0..d-1 pixels each way (the output is d-1 pixels smaller)."""

    def t(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if d <= 1:
            return x
        dy, dx = (int(v) for v in torch.randint(d, (2,), generator=gen))
        h, w = x.shape[2:]
        return x[:, :, dy:h - (d - 1) + dy, dx:w - (d - 1) + dx]

    return t


def random_scale(scales: Sequence[float]) -> Transform:
    """Bilinear resize by a factor drawn from `scales`."""

    def t(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        s = _choice(scales, gen)
        if s == 1:
            return x
        h, w = x.shape[2:]
        size = (max(1, round(h * s)), max(1, round(w * s)))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return t


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Rotation about the centre by an angle drawn from `degrees`, same size, border filled by reflection."""

    def t(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        a = math.radians(_choice(degrees, gen))
        if a == 0:
            return x
        cos, sin = math.cos(a), math.sin(a)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    return t


def compose(transforms: Sequence[Transform]) -> Transform:
    def t(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for f in transforms:
            x = f(x, gen)
        return x

    return t


def standard_transforms() -> list[Transform]:
    """Lucid/Lucent's `standard_transforms`, the peer default."""
    return [
        pad(12),
        jitter(8),
        random_scale([1 + (i - 5) / 50 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    ]


def light_transforms() -> list[Transform]:
    """Jitter only: Yosinski-style runs that should not be blurred by resampling."""
    return [jitter(4)]


def strong_transforms() -> list[Transform]:
    """Wider scale and rotation range than Lucid's: objects must survive being seen at several sizes, which
    pushes the optimizer towards whole, recognisable objects rather than repeated texture."""
    return [
        pad(16),
        jitter(16),
        random_scale([0.85 + i * 0.05 for i in range(8)]),  # 0.85 .. 1.20
        random_rotate(list(range(-15, 16, 3)) + 4 * [0]),
        jitter(8),
    ]


TRANSFORM_SETS: dict[str, Callable[[], list[Transform]]] = {
    "none": list,
    "light": light_transforms,
    "standard": standard_transforms,
    "strong": strong_transforms,
}


def get_transforms(name: str) -> Transform:
    if name not in TRANSFORM_SETS:
        raise ValueError(f"unknown transform set {name!r} ({' | '.join(TRANSFORM_SETS)})")
    return compose(TRANSFORM_SETS[name]())
