"""Integrated Gradients (Sundararajan et al. 2017) with the baselines users ask for, and its completeness gap.

IG(x) = (x - b) * integral_0^1 dS/dx(b + a (x - b)) da, approximated by Gauss-Legendre quadrature (Captum's
default, so the two agree to float rounding) or the trapezoid rule. Completeness says sum(IG) = S(x) - S(b);
the gap between the two is reported with every map, since a large gap means too few steps.
Baselines live in the model's input space: `black` is a black image after the model's normalization, `blur` the
input blurred (sigma 10 px), `noise` uniform noise in [0, 1] pixel values (seeded).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..abort import Abort, aborted
from ..attribution import gaussian_blur
from ..errors import DeepVisError, ParamError
from .gradients import target_gradient
from .targets import Target, coerce_target, output_logits

BASELINES = ("black", "blur", "noise")
RULES = ("gausslegendre", "trapezoid")
MAX_STEPS = 1024
BLUR_SIGMA = 10.0


@dataclass(frozen=True)
class IGResult:
    """The attribution (shaped like x), and per image S(x), S(baseline) and the completeness gap."""

    attribution: Tensor
    score: Tensor
    baseline_score: Tensor
    gap: Tensor  # sum(attribution) - (score - baseline_score), per image


def quadrature(steps: int, rule: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """(step sizes, alphas in [0, 1]) of the integration rule."""
    if rule == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(steps)
        return list(0.5 * weights), list(0.5 * (1 + points))
    if rule == "trapezoid":
        if steps < 2:
            raise ParamError("steps", "must be at least 2 for the trapezoid rule")
        sizes = [1 / (steps - 1)] * steps  # a true trapezoid on [0, 1] (Captum's weights sum to (n - 1) / n)
        sizes[0] /= 2
        sizes[-1] /= 2
        return sizes, torch.linspace(0, 1, steps).tolist()
    raise ParamError("rule", f"must be one of {', '.join(RULES)}, not {rule!r}")


def pixels_to_input(vm: object | None) -> Callable[[Tensor], Tensor]:
    """Maps images with pixel values in [0, 1] into the model's input space (its normalization; none without a
    VisModel)."""
    pre = getattr(vm, "preprocess", None)
    if pre is None or not hasattr(pre, "mean") or not hasattr(pre, "inv_std"):
        return lambda p: p
    return lambda p: (p * 255.0 - pre.mean.to(p)) * pre.inv_std.to(p)


def make_baseline(x: Tensor, kind: str, *, to_input: Callable[[Tensor], Tensor] = lambda p: p,
                  seed: int = 0) -> Tensor:
    """The baseline image for the model input `x` (`to_input`: pixels in [0, 1] -> the model's input space)."""
    if kind == "black":
        return to_input(torch.zeros_like(x)).expand_as(x).clone()
    if kind == "blur":
        return gaussian_blur(x.detach(), BLUR_SIGMA)
    if kind == "noise":
        g = torch.Generator().manual_seed(seed)
        return to_input(torch.rand(x.shape, generator=g).to(x))
    raise ParamError("baseline", f"must be one of {', '.join(BASELINES)}, not {kind!r}")


class IntegratedGradients:
    """IG of a class or unit target of `net`; `batch` interpolated images per backward."""

    def __init__(self, net: nn.Module, *, vm: object | None = None, baseline: str | Tensor = "black",
                 steps: int = 32, rule: str = "gausslegendre", batch: int = 16, seed: int = 0) -> None:
        if not 1 <= steps <= MAX_STEPS:
            raise ParamError("steps", f"must be between 1 and {MAX_STEPS}, got {steps}")
        if not 1 <= batch <= 1024:
            raise ParamError("batch", f"must be between 1 and 1024, got {batch}")
        self.sizes, self.alphas = quadrature(steps, rule)
        if isinstance(baseline, str) and baseline not in BASELINES:
            raise ParamError("baseline", f"must be one of {', '.join(BASELINES)}, not {baseline!r}")
        self.net, self.vm, self.baseline, self.batch, self.seed = net, vm, baseline, batch, seed

    def baseline_for(self, x: Tensor) -> Tensor:
        if isinstance(self.baseline, Tensor):
            return self.baseline.to(x).expand_as(x)
        return make_baseline(x, self.baseline, to_input=pixels_to_input(self.vm), seed=self.seed)

    def attribute(self, x: Tensor, target: Target | int | None = None, *, abort: Abort = None,
                  progress: Callable[[int, int], None] | None = None) -> IGResult:
        if target is None or isinstance(target, int):
            with torch.no_grad():
                target = coerce_target(target, output_logits(self.net(x[:1])))
        base = self.baseline_for(x).detach()
        diff = x.detach() - base
        total = torch.zeros_like(x)
        steps = len(self.alphas)
        for i in range(x.shape[0]):
            for start in range(0, steps, self.batch):
                if aborted(abort):
                    raise DeepVisError("cancelled")
                alphas = torch.tensor(self.alphas[start:start + self.batch], dtype=x.dtype, device=x.device)
                sizes = torch.tensor(self.sizes[start:start + self.batch], dtype=x.dtype, device=x.device)
                points = base[i:i + 1] + alphas[:, None, None, None] * diff[i:i + 1]
                grads, _ = target_gradient(self.net, points, target, vm=self.vm)
                total[i] += (grads * sizes[:, None, None, None]).sum(dim=0)
                if progress is not None:
                    progress(i * steps + min(start + self.batch, steps), x.shape[0] * steps)
        attribution = total * diff
        with torch.no_grad():
            _, score = target_gradient(self.net, x, target, vm=self.vm)
            _, base_score = target_gradient(self.net, base, target, vm=self.vm)
        gap = attribution.flatten(1).sum(dim=1) - (score - base_score)
        return IGResult(attribution, score, base_score, gap)


def integrated_gradients(net: nn.Module, x: Tensor, target: Target | int | None, *, vm: object | None = None,
                         **options: object) -> Tensor:
    """The IG map alone, in the signature the wrappers take (see `gradients`)."""
    return IntegratedGradients(net, vm=vm, **options).attribute(x, target).attribution
