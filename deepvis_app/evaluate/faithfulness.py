"""Is a map about what the network uses? Perturbation metrics of one heat map on one image, each with the same
metric of a random map beside it (a map is only informative where it beats chance).

- Deletion / insertion (Petsiuk et al. 2018, RISE): pixels are removed from (replaced by the baseline) or added to
  (restored from the image over the baseline) in the order of the map, in `steps` intervals; the class score's
  curve is integrated over the fraction of pixels (trapezoid). Low deletion AUC and high insertion AUC are good.
  Same ranking, intervals and integration as torch-cam's `DeletionInsertionMetric` (tests compare: <= 1e-3).
- Average drop / increase in confidence (Chattopadhay et al. 2018): the image multiplied by the map scaled to
  [0, 1]; drop = relu(Y - O) / Y averaged, increase = the share of images where O > Y (torch-cam's definition).
- ROAD (Rong et al. 2022): the most (MoRF) or least (LeRF) relevant p% of pixels removed and filled by a noisy
  linear imputer, so the filled region does not itself tell the class (pytorch-grad-cam's imputer, used as is).
  `road` = mean over p of (LeRF - MoRF) / 2 of the score: higher is better.

Scores are the class's softmax probability (`score="prob"`, as the papers plot) or its logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attribution import gaussian_blur
from ..errors import DeepVisError, ParamError
from ..methods.targets import output_logits

FILLS = ("blur", "grey")
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
MAX_STEPS = 1000


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves ([N, K] scores at `fractions` of the pixels) and their areas [N]."""

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor

    @property
    def deletion_auc(self) -> Tensor:
        return torch.trapezoid(self.deletion, self.fractions, dim=1)

    @property
    def insertion_auc(self) -> Tensor:
        return torch.trapezoid(self.insertion, self.fractions, dim=1)


def class_scores(net: nn.Module, x: Tensor, classes: Tensor, score: str = "prob", batch: int = 32) -> Tensor:
    """The score of class `classes[i]` for image `x[i]`, in batches, without autograd."""
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            logits = output_logits(net(x[start:start + batch])).flatten(1)
            if score == "prob":
                logits = logits.softmax(dim=1)
            out.append(logits.gather(1, classes[start:start + batch, None]).squeeze(1))
    return torch.cat(out)


def fill_for(x: Tensor, fill: str) -> Tensor:
    """What removed pixels become: `blur` (the image blurred, sigma 10 px: RISE's insertion start) or `grey` (zero
    in the model's input space: the normalization's mean colour)."""
    if fill == "blur":
        return gaussian_blur(x.detach(), 10.0)
    if fill == "grey":
        return torch.zeros_like(x)
    raise ParamError("fill", f"must be one of {', '.join(FILLS)}, not {fill!r}")


def _ranks(heat: Tensor, size: tuple[int, int]) -> Tensor:
    if heat.shape[-2:] != size:
        heat = F.interpolate(heat[:, None], size, mode="bilinear", align_corners=False)[:, 0]
    order = torch.argsort(heat.flatten(1), dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


def deletion_insertion(net: nn.Module, x: Tensor, heat: Tensor, classes: Tensor, *, steps: int = 20,
                       fill: str | Tensor = "blur", score: str = "prob", batch: int = 32) -> Curves:
    """Deletion and insertion curves of the maps `heat` [N, h, w] (resized bilinearly to x's size)."""
    if not 1 <= steps <= MAX_STEPS:
        raise ParamError("steps", f"must be between 1 and {MAX_STEPS}, got {steps}")
    base = fill if isinstance(fill, Tensor) else fill_for(x, fill)
    ranks = _ranks(heat.detach().float(), tuple(x.shape[-2:]))
    n, p = ranks.shape
    step = (p + steps - 1) // steps
    counts = [*range(0, p, step), p]
    fractions = torch.tensor(counts, dtype=torch.float32, device=x.device) / p
    original = class_scores(net, x, classes, score, batch)
    deletion = original.new_empty((n, len(counts)))
    insertion = original.new_empty((n, len(counts)))
    deletion[:, 0] = original
    insertion[:, -1] = original
    flat_x, flat_b = x.flatten(2), base.flatten(2)
    for i in range(n):
        images, where = [], []
        for k, count in enumerate(counts):
            relevant = (ranks[i] < count)[None]
            if k > 0:  # deletion: the `count` most relevant pixels become the fill
                images.append(torch.where(relevant, flat_b[i], flat_x[i]))
                where.append(("del", k))
            if k < len(counts) - 1:  # insertion: only they come from the image
                images.append(torch.where(relevant, flat_x[i], flat_b[i]))
                where.append(("ins", k))
        batch_x = torch.stack(images).reshape(-1, *x.shape[1:])
        scores = class_scores(net, batch_x, classes[i].expand(len(images)), score, batch)
        for (curve, k), s in zip(where, scores, strict=True):
            (deletion if curve == "del" else insertion)[i, k] = s
    return Curves(fractions, deletion, insertion)


def average_drop_increase(net: nn.Module, x: Tensor, heat: Tensor, classes: Tensor, *,
                          score: str = "prob") -> tuple[Tensor, Tensor]:
    """Per image: relu(Y - O) / Y and O > Y, with O the score of x times the map scaled to [0, 1]."""
    h = heat.detach().float()
    if h.shape[-2:] != x.shape[-2:]:
        h = F.interpolate(h[:, None], tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    flat = h.flatten(1)
    lo, hi = flat.min(dim=1).values[:, None, None], flat.max(dim=1).values[:, None, None]
    h = (h - lo) / (hi - lo + 1e-7)
    y = class_scores(net, x, classes, score)
    o = class_scores(net, h[:, None] * x, classes, score)
    return torch.relu(y - o) / (y + 1e-7), o > y


def road(net: nn.Module, x: Tensor, heat: Tensor, classes: Tensor, *, score: str = "prob",
         percentiles: tuple[int, ...] = ROAD_PERCENTILES, seed: int = 0) -> dict[str, Tensor]:
    """ROAD per image: `morf` and `lerf` [N, len(percentiles)] scores after removal, and `road` [N]."""
    try:
        from pytorch_grad_cam.metrics.perturbation_confidence import (
            RemoveLeastRelevantFirst,
            RemoveMostRelevantFirst,
        )
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    except ImportError:
        raise DeepVisError("ROAD needs pytorch-grad-cam's imputer: pip install 'deepvis[explain]'") from None
    h = heat.detach().float().cpu()
    if h.shape[-2:] != x.shape[-2:]:
        h = F.interpolate(h[:, None], tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    curves = {}
    for name, remover in (("morf", RemoveMostRelevantFirst), ("lerf", RemoveLeastRelevantFirst)):
        rows = []
        for p in percentiles:
            torch.manual_seed(seed)  # the imputer's noise
            perturb = remover(p, NoisyLinearImputer())
            imputed = torch.stack([perturb(x[i].detach().cpu(), h[i]) for i in range(x.shape[0])]).to(x)
            rows.append(class_scores(net, imputed, classes, score))
        curves[name] = torch.stack(rows, dim=1)
    curves["road"] = ((curves["lerf"] - curves["morf"]) / 2).mean(dim=1)
    return curves


def random_heat(like: Tensor, seed: int = 0) -> Tensor:
    """A random map of the same size (uniform noise, seeded): the chance level every figure is set beside."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(like.shape, generator=g).to(like.device)
