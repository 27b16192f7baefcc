"""SmoothGrad (Smilkov et al. 2017) and VarGrad (Adebayo et al. 2018) around any input-space method.

Both run the wrapped method on `samples` noisy copies x + N(0, sigma^2), sigma = `noise` x (max(x) - min(x)) per
image, as the SmoothGrad paper defines the noise level; SmoothGrad is the mean of the maps, VarGrad their
variance (mean of squares minus squared mean, as Captum's NoiseTunnel computes it). The noise is seeded, so a map
can be reproduced, and `noise_samples` hands out the exact draws for tests and comparisons.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..abort import Abort, aborted
from ..errors import DeepVisError, ParamError
from .gradients import GradientMethod
from .targets import Target, coerce_target, output_logits

KINDS = ("smoothgrad", "vargrad")
MAX_SAMPLES = 1000


def noise_samples(x: Tensor, samples: int, noise: float, seed: int = 0) -> Tensor:
    """[samples, N, C, H, W] noisy copies of `x` (seeded)."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise ParamError("samples", f"must be between 1 and {MAX_SAMPLES}, got {samples}")
    if not 0 <= noise <= 10 or noise != noise:
        raise ParamError("noise", f"must be between 0 and 10 (a fraction of the input's range), got {noise}")
    flat = x.detach().flatten(1)
    sigma = (noise * (flat.max(dim=1).values - flat.min(dim=1).values))[:, None, None, None]
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn((samples, *x.shape), generator=g).to(x)
    return x.detach()[None] + eps * sigma[None]


def smooth(method: GradientMethod, net: nn.Module, x: Tensor, target: Target | int | None, *, kind: str = "smoothgrad",
           samples: int = 25, noise: float = 0.15, seed: int = 0, vm: object | None = None, abort: Abort = None,
           progress: Callable[[int, int], None] | None = None) -> Tensor:
    """SmoothGrad / VarGrad of `method` (a function (net, x, target, vm=) -> map shaped like x)."""
    if kind not in KINDS:
        raise ParamError("kind", f"must be one of {', '.join(KINDS)}, not {kind!r}")
    if target is None or isinstance(target, int):  # fix the class on the clean image, not per noisy copy
        with torch.no_grad():
            target = coerce_target(target, output_logits(net(x[:1])))
    noisy = noise_samples(x, samples, noise, seed)
    total = torch.zeros_like(x)
    squares = torch.zeros_like(x)
    for i, xi in enumerate(noisy):
        if aborted(abort):
            raise DeepVisError("cancelled")
        m = method(net, xi, target, vm=vm)
        total += m
        squares += m * m
        if progress is not None:
            progress(i + 1, samples)
    mean = total / samples
    return mean if kind == "smoothgrad" else squares / samples - mean * mean
