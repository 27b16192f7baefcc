"""What a unit page says about a unit besides its pictures: activation statistics and a label.

Statistics come from one batched forward of the store's own images (the fitted images the scan kept, at most
`max_images` of them, evenly spread over their ids) through the store's model, stopped at the deepest chosen layer:
per unit, the spatial maximum (the quantity the top-k ranks by) and the spatial mean on every image. A store keeps
only each unit's k best values, which cannot give a mean or a spread; the forward can, and it also checks the
model: each unit's best image must give back its stored value, else the statistics are dropped with a notice.

Labels come from the class layer's weights: a class-layer unit is its class; a unit of a layer that feeds the
classifier directly (same width, only pooling or flattening between) is labelled with the classes it raises most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..layouts import as_maps
from ..probe import Capture
from ..topk.running import spatial_max
from ..topk.store import TopKStore, image_relpath, read_rgb

HIST_BINS = 16
MATCH_RTOL = 1e-2  # stored vs recomputed best value: batched float32 on another device differs in the last bits
MATCH_ATOL = 1e-7  # (a dead unit's best value is 0 both ways)


@dataclass(frozen=True)
class UnitStats:
    """Over `images` images: mean of the spatial mean (`mean`), of the spatial max (`max_mean`, spread `max_std`),
    and a histogram of the spatial max (`hist` counts over `edges`). `selectivity`: how far the unit's top-k
    stand above its typical image, in standard deviations of the spatial max: (mean of top-k - max_mean) /
    max_std (0 when the unit never varies)."""

    images: int
    mean: float
    max_mean: float
    max_std: float
    selectivity: float
    hist: tuple[int, ...]
    edges: tuple[float, ...]


def sample_ids(store: TopKStore, layers: Sequence[str], max_images: int) -> list[int]:
    """Image ids the store holds pixels for (referenced by any chosen layer), at most `max_images`, evenly spread."""
    ids: set[int] = set()
    for layer in layers:
        for unit in range(store.channels(layer)):
            ids.update(e.image_id for e in store.entries(layer, unit))
    have = sorted(i for i in ids if store.inside(image_relpath(i)).is_file())
    if len(have) > max_images:
        pick = np.linspace(0, len(have) - 1, max_images).round().astype(int)
        have = [have[i] for i in dict.fromkeys(pick.tolist())]
    return have


def activation_stats(vm, store: TopKStore, layers: Sequence[str], ids: Sequence[int], *, batch_size: int = 16,
                     on_step: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """Per layer: float32 arrays `max` and `mean`, each [len(ids), C] (spatial max / mean of every unit on every
    image). `on_step(done, total)` after each batch."""
    maxes: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    means: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    infos = [vm.info(name) for name in layers]
    size = vm.input_size
    example = torch.zeros(1, 3, size, size, device=vm.device)
    # As the scan does: the forward stops at the deepest chosen layer; units are (channel, y, x) of the maps.
    with torch.no_grad(), Capture(vm.net, list(layers), example=example, stop=True, detach=True) as capture:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            batch = []
            for i in chunk:
                rgb = read_rgb(store.inside(image_relpath(i)))
                if rgb is None or rgb.shape[:2] != (size, size):
                    rgb = vm.preprocess.fit(rgb) if rgb is not None else np.zeros((size, size, 3), np.uint8)
                batch.append(vm.preprocess.to_tensor(np.ascontiguousarray(rgb)))
            capture.run(torch.cat(batch))
            for info in infos:
                maps = as_maps(capture[info.name], info).float()
                maxes[info.name].append(spatial_max(maps)[0].cpu().numpy())
                means[info.name].append(maps.flatten(2).mean(dim=2).cpu().numpy())
            if on_step is not None:
                on_step(min(start + batch_size, len(ids)), len(ids))
    out = {}
    for name in layers:
        out[f"{name}/max"] = np.concatenate(maxes[name]).astype(np.float32)
        out[f"{name}/mean"] = np.concatenate(means[name]).astype(np.float32)
    return out


def matches_store(store: TopKStore, layer: str, ids: Sequence[int], maxes: np.ndarray) -> tuple[int, int]:
    """(units checked, units whose stored best value the forward gave back): is this the store's model?"""
    row = {image_id: k for k, image_id in enumerate(ids)}
    checked = agree = 0
    for unit in range(maxes.shape[1]):
        entries = store.entries(layer, unit)
        if not entries or entries[0].image_id not in row:
            continue
        got, want = float(maxes[row[entries[0].image_id], unit]), entries[0].value
        checked += 1
        agree += abs(got - want) <= MATCH_RTOL * abs(want) + MATCH_ATOL
    return checked, agree


def unit_stats(maxes: np.ndarray, means: np.ndarray, topk_values: np.ndarray) -> UnitStats:
    """One unit's statistics from its columns of `activation_stats` and its stored top-k values."""
    finite = maxes[np.isfinite(maxes)]
    if finite.size == 0:
        return UnitStats(0, 0.0, 0.0, 0.0, 0.0, (), ())
    max_mean, max_std = float(finite.mean()), float(finite.std())
    top = topk_values[np.isfinite(topk_values)]
    top_mean = float(top.mean()) if top.size else max_mean
    selectivity = (top_mean - max_mean) / max_std if max_std > 1e-12 else 0.0
    counts, edges = histogram(finite, HIST_BINS)
    return UnitStats(int(finite.size), float(np.nanmean(means)), max_mean, max_std, float(selectivity),
                     tuple(int(c) for c in counts), tuple(float(e) for e in edges))


def histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """np.histogram over the values' range, widened when the values (nearly) coincide: float32 maps of a random
    net can be constant to the last bit, which numpy refuses to split into bins."""
    v = values.astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    scale = max(abs(lo), abs(hi))
    pad = 1e-5 * scale if scale > 0 else 0.5  # far above float32 resolution at this magnitude
    if hi - lo < pad * bins:
        lo, hi = lo - pad * bins, hi + pad * bins
    return np.histogram(v, bins=bins, range=(lo, hi))


def topk_stats(topk_values: np.ndarray) -> UnitStats:
    """Statistics from the store alone (no model): the top-k values themselves; selectivity unknown (0)."""
    top = topk_values[np.isfinite(topk_values)]
    if top.size == 0:
        return UnitStats(0, 0.0, 0.0, 0.0, 0.0, (), ())
    counts, edges = histogram(top, min(HIST_BINS, max(4, top.size)))
    return UnitStats(int(top.size), float("nan"), float(top.mean()), float(top.std()), 0.0,
                     tuple(int(c) for c in counts), tuple(float(e) for e in edges))


# ---------------------------------------------------------------- labels from the class layer

def classifier(vm) -> tuple[str, torch.Tensor] | None:
    """(module name, weight [classes, features]) of the model's classifier head (a Linear or a 1x1 convolution
    with one output per class), else None."""
    from ..zoo import head_modules

    n = len(vm.categories)
    for name in head_modules(vm.net):
        module = vm.net.get_submodule(name)
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.shape[0] != n or n == 0:
            continue
        if isinstance(module, nn.Linear) or (weight.dim() > 2 and all(k == 1 for k in weight.shape[2:])):
            return name, weight.detach().float().flatten(1).cpu()
    return None


def unit_labels(vm, layers: Sequence[str], top: int = 3) -> dict[str, list[tuple[str, str]]]:
    """layer -> (short, long) label per unit, for the chosen layers where a label applies (module docstring):
    ("tabby", "class 281: tabby") on the class layer, ("tabby", "raises most: tabby (+0.21), ...") before it."""
    cats = list(vm.categories)
    out: dict[str, list[tuple[str, str]]] = {}
    for layer in layers:
        if vm.is_class_layer(layer):
            out[layer] = [(c, f"class {i}: {c}") for i, c in enumerate(cats)]
    fc = classifier(vm)
    if fc is None:
        return out
    name, weight = fc
    table = vm.layer_info
    at = next((k for k, info in enumerate(table) if info.name.partition("@")[0] == name), None)
    if at is None:
        return out
    feeders = set()
    for info in reversed(table[:at]):  # the run of layers just before the head with its input width
        if info.channels != weight.shape[1]:
            break
        feeders.add(info.name)
    order = torch.argsort(weight, dim=0, descending=True)[:top]  # [top, features]
    for layer in layers:
        if vm.info(layer).name in feeders or layer in feeders:
            out[layer] = [(cats[int(order[0, u])], "raises most: " + ", ".join(
                f"{cats[int(c)]} ({float(weight[c, u]):+.2f})" for c in order[:, u])) for u in range(weight.shape[1])]
    return out
