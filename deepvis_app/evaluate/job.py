"""The evaluate job: faithfulness figures of one or more attribution methods over images, each beside a random
map's, so methods can be ranked (`deepvis evaluate`, the window's trust meter, docs/evaluation.md).

Per image: the class (given, or the top one), every method's heat map (`methods.registry.explain`), then the
chosen metrics on that map and on a random map of the same size. Results are means over images with the
per-image values kept. `random` is accepted as a method name: the chance level itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..abort import Abort, aborted
from ..errors import DeepVisError, ParamError
from ..methods.registry import check_method, explain
from ..methods.targets import output_logits
from ..values import ClassTarget, Layout
from .faithfulness import ROAD_PERCENTILES, average_drop_increase, deletion_insertion, random_heat, road
from .sanity import cascading_randomization, spearman

METRICS = ("deletion", "insertion", "road", "drop", "sanity")


@dataclass(frozen=True)
class EvalOptions:
    """What to measure and how (the method options go to `methods.registry.explain`)."""

    methods: tuple[str, ...] = ("gradcam",)
    layer: str | None = None
    cls: int | None = None
    metrics: tuple[str, ...] = METRICS
    fill: str = "blur"
    curve_steps: int = 20
    score: str = "prob"
    seed: int = 0
    road_percentiles: tuple[int, ...] = ROAD_PERCENTILES
    method_options: tuple[tuple[str, object], ...] = ()


def default_cam_layer(vm: object) -> str:
    """The last layer with a grid of more than one position (a CNN's last conv block, a ViT's last block)."""
    for info in reversed(vm.layer_info):
        grid = info.grid
        if info.spatial and grid is not None and grid[0] * grid[1] > 1 and info.layout is not Layout.VECTOR:
            return info.name
    raise DeepVisError(f"{vm.name} has no layer with positions for a CAM; pick a method that needs none")


def check_options(options: EvalOptions) -> None:
    """One line for a bad method or metric name, before any model work."""
    for method in options.methods:
        if method != "random":
            check_method(method, options.layer or "auto")
    bad = [m for m in options.metrics if m not in METRICS]
    if bad:
        raise ParamError("metrics", f"must be among {', '.join(METRICS)}; got {bad[0]!r}")


def evaluate(vm: object, images: Sequence[np.ndarray], options: EvalOptions, *, abort: Abort = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Figures for each method over `images` (uint8 RGB); the JSON `deepvis evaluate --json` prints."""
    check_options(options)
    net = vm.net
    layer = options.layer or default_cam_layer(vm)
    per_method: dict[str, list[dict]] = {m: [] for m in options.methods}
    total = len(images) * len(options.methods)
    done = 0
    for index, rgb in enumerate(images):
        x = vm.preprocess(rgb)
        with torch.no_grad():
            logits = output_logits(net(x))
        cls = options.cls if options.cls is not None else int(logits[0].argmax())
        vm.check_class(cls)
        chance = random_heat(x[:, 0], seed=options.seed + index)
        chance_figures = _metric_figures(net, x, chance, cls, options)  # the same for every method: once
        for method in options.methods:
            if aborted(abort):
                raise DeepVisError("cancelled")
            heat = _heat(net, vm, x, method, cls, layer, options, seed=options.seed + index)
            figures = _metric_figures(net, x, heat, cls, options)
            row = {"class": cls, "label": vm.categories[cls]}
            row |= {key: {"value": value, "random": chance_figures[key]} for key, value in figures.items()}
            if "sanity" in options.metrics and method != "random":
                row["sanity"] = _sanity(net, vm, x, heat, cls, method, layer, options, chance)
            per_method[method].append(row)
            done += 1
            if progress is not None:
                progress(done, total)
    return {"model": vm.name, "layer": layer, "images": len(images), "score": options.score, "fill": options.fill,
            "methods": {m: _summary(rows) for m, rows in per_method.items()}}


def _heat(net, vm, x: Tensor, method: str, cls: int, layer: str, options: EvalOptions, seed: int) -> Tensor:
    if method == "random":
        return random_heat(x[:, 0], seed=seed + 1000)
    return explain(net, x, method, ClassTarget(cls, "logit"), layer=layer, vm=vm, seed=options.seed,
                   **dict(options.method_options)).heat.detach()


def _metric_figures(net, x: Tensor, heat: Tensor, cls: int, options: EvalOptions) -> dict[str, float]:
    """The perturbation figures of one map on one image (deletion/insertion AUC, drop/increase, ROAD)."""
    classes = torch.tensor([cls], device=x.device)
    wants = set(options.metrics)
    out: dict[str, float] = {}
    if wants & {"deletion", "insertion"}:
        curves = deletion_insertion(net, x, heat, classes, steps=options.curve_steps, fill=options.fill,
                                    score=options.score)
        if "deletion" in wants:
            out["deletion_auc"] = float(curves.deletion_auc[0])
        if "insertion" in wants:
            out["insertion_auc"] = float(curves.insertion_auc[0])
    if "drop" in wants:
        drop, increase = average_drop_increase(net, x, heat, classes, score=options.score)
        out["average_drop"], out["average_increase"] = float(drop[0]), float(increase[0])
    if "road" in wants:
        out["road"] = float(road(net, x, heat, classes, score=options.score, percentiles=options.road_percentiles,
                                 seed=options.seed)["road"][0])
    return out


def _sanity(net, vm, x: Tensor, heat: Tensor, cls: int, method: str, layer: str, options: EvalOptions,
            chance: Tensor) -> dict:
    """Cascading randomization of the method's map, beside two random maps' rank correlation."""
    def compute(model):
        return explain(model, x, method, ClassTarget(cls, "logit"), layer=layer, vm=vm, seed=options.seed,
                       **dict(options.method_options)).heat[0].detach()

    cascade = cascading_randomization(net, compute, seed=options.seed)
    other = random_heat(heat, seed=options.seed + 7919)
    return {"value": float(np.mean([s["spearman"] for s in cascade])),
            "random": spearman(chance[0].abs(), other[0].abs()), "cascade": cascade}


def _summary(rows: list[dict]) -> dict:
    """Means over images of every figure and its random baseline, plus the rows themselves."""
    summary: dict = {}
    for key in ("deletion_auc", "insertion_auc", "road", "average_drop", "average_increase", "sanity"):
        values = [r[key] for r in rows if key in r]
        if values:
            summary[key] = {"value": float(np.mean([v["value"] for v in values])),
                            "random": float(np.mean([v["random"] for v in values]))}
    summary["per_image"] = rows
    return summary
