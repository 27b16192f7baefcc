"""Convolution weights as pictures: the first layer's filters in colour, deeper filters as grey tiles.

A first-layer filter lives in pixel space, so its weights *are* a picture of what it looks for (Gabor-like
edges and colour blobs when trained, noise when not). Every filter is scaled on its own and symmetrically
around zero (weight 0 -> grey 128, +max|w| -> 255, -max|w| -> 1), so the sign reads as light/dark and a
filter's shape is visible whatever its norm. Deeper filters act on feature maps, not colours: they are shown
as one grey tile per (filter, input channel) pair, with `DEEP_CAVEAT` saying why they are hard to read.

`random_twin` builds the same architecture freshly initialised (seeded) for the "trained vs random" contrast.
Nothing here imports Qt; every function returns plain arrays for the CLI and the app's Weights panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import DeepVisError, ParamError

MAX_PIXELS = 64_000_000  # the drawn picture: more would be a memory hazard, not a figure
DEEP_CAVEAT = ("Deeper filters weigh the previous layer's feature maps, not pixels: a tile shows how one filter "
               "reads one input channel, which says little by eye. Look at the unit's top-k images or an "
               "optimized image to see what it responds to.")
GREY = 128  # the uint8 value of a zero weight


@dataclass
class FilterTiles:
    """One picture of a conv layer's weights and what it shows.

    image: uint8 HxWx3. kind: "rgb" (filters over 3 input channels, one colour tile each) or "grey" (one tile per
    (filter, input channel) pair: row = filter, column = input channel). grid: (rows, cols) of tiles; tile: the
    side of a tile in pixels after zoom; pad: pixels between tiles (and around). filters / inputs: the channel
    indices shown. scale: max|w| of each shown filter (its +-1 in the picture). Tile (r, c) starts at
    (pad + r * (tile + pad), pad + c * (tile + pad)).
    """

    image: np.ndarray
    layer: str
    kind: str
    weight_shape: tuple[int, ...]
    grid: tuple[int, int]
    tile: int
    pad: int
    zoom: int
    filters: list[int]
    inputs: list[int]
    scale: list[float]
    caveat: str | None = None
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        step = self.tile + self.pad
        return self.pad + row * step, self.pad + col * step

    def info(self) -> dict[str, Any]:
        """JSON-ready description (everything but the pixels)."""
        return {"layer": self.layer, "kind": self.kind, "weight_shape": list(self.weight_shape),
                "grid": list(self.grid), "tile": self.tile, "pad": self.pad, "zoom": self.zoom,
                "filters": self.filters, "inputs": self.inputs, "scale": self.scale,
                "image_shape": list(self.image.shape), "caveat": self.caveat, "truncated": self.truncated}


def _net(model: Any) -> nn.Module:
    return model.net if hasattr(model, "net") and isinstance(model.net, nn.Module) else model


def conv_layers(model: Any) -> list[str]:
    """Names of the Conv2d modules (subclasses included), in forward order where known (VisModel), else
    registration order."""
    net = _net(model)
    convs = [n for n, m in net.named_modules() if n and isinstance(m, nn.Conv2d)]
    if hasattr(model, "layer_info"):
        order = {i.name.partition("@")[0]: k for k, i in reversed(list(enumerate(model.layer_info)))}
        convs.sort(key=lambda n: order.get(n, len(order)))
    return convs


def first_conv(model: Any) -> str:
    """The first conv layer in forward order (the one that sees pixels)."""
    convs = conv_layers(model)
    if not convs:
        raise DeepVisError("this model has no Conv2d layer, so there are no filters to show")
    return convs[0]


def conv_for_layer(model: Any, layer: str | None) -> str | None:
    """The conv whose weights the Weights panel shows for `layer`: the layer itself when it is a conv, else the
    last conv inside it (a block, `_blocks.3` -> `_blocks.3._project_conv`), else None (no weights to show)."""
    if not layer:
        return first_conv(model)
    name = str(layer).partition("@")[0]
    convs = conv_layers(model)
    if name in convs:
        return name
    inside = [c for c in convs if c.startswith(name + ".")]
    return inside[-1] if inside else None


def conv_weight(model: Any, layer: str | None = None) -> tuple[str, torch.Tensor, int]:
    """(layer name, weight [out, in/groups, kh, kw] on the CPU as float32, groups) of a conv layer."""
    name = first_conv(model) if layer in (None, "") else str(layer).partition("@")[0]
    modules = dict(_net(model).named_modules())
    module = modules.get(name)
    if module is None or name == "":
        shown = ", ".join(conv_layers(model)[:12])
        raise DeepVisError(f"unknown layer {layer!r}; conv layers: {shown}, ... (see `deepvis layers`)")
    if not isinstance(module, nn.Conv2d):
        raise DeepVisError(f"layer {name!r} is a {type(module).__name__}, not a conv layer; filters exist only "
                           f"for Conv2d layers (first: {first_conv(model)})")
    return name, module.weight.detach().float().cpu(), module.groups


def scale_symmetric(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights -> uint8 with 0 -> 128 and +-max|w| -> 255 / 1 (a zero filter stays grey)."""
    m = float(np.abs(w).max()) if w.size else 0.0
    if not math.isfinite(m):
        raise DeepVisError("the layer's weights contain NaN or infinity")
    unit = w / m if m > 0 else np.zeros_like(w)
    return np.clip(np.rint(GREY + 127.0 * unit), 1, 255).astype(np.uint8), m


def _auto_zoom(k: int, target: int = 24) -> int:
    return max(1, round(target / k))


def _pick(n: int, chosen: Sequence[int] | None, limit: int, what: str) -> tuple[list[int], bool]:
    if chosen is None:
        return list(range(min(n, limit))), n > limit
    out = [int(i) for i in chosen]
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise DeepVisError(f"{what} {bad[0]} is out of range: this layer has {what}s 0..{n - 1}")
    return out, False


def filter_tiles(model: Any, layer: str | None = None, *, filters: Sequence[int] | None = None,
                 inputs: Sequence[int] | None = None, zoom: int | None = None, pad: int = 1,
                 max_filters: int = 256, max_inputs: int = 32, cols: int | None = None) -> FilterTiles:
    """A picture of conv `layer`'s filters (default: the first conv) of a VisModel or an nn.Module.

    Filters over 3 input channels (the stem) become colour tiles in a near-square grid (`cols` per row); other
    layers become grey tiles, one row per chosen filter and one column per input channel (depthwise convs: one
    tile per filter). zoom: integer upscaling of each tile (default: about 24 px per tile). At most
    `max_filters` filters / `max_inputs` input channels are drawn unless chosen explicitly (`truncated` says so).
    """
    name, w, groups = conv_weight(model, layer)
    if pad < 0:
        raise ParamError("pad", f"must be 0 or more, got {pad}")
    out_ch, in_per, kh, kw = w.shape
    fsel, trunc_f = _pick(out_ch, filters, max_filters, "filter")
    if not fsel:
        raise ParamError("filters", "must name at least one filter")
    z = _auto_zoom(max(kh, kw)) if zoom is None else int(zoom)
    if z < 1:
        raise ParamError("zoom", f"must be at least 1, got {z}")
    wn = w.numpy()
    rgb = in_per == 3 and groups == 1
    scales: list[float] = []
    if rgb:
        n = len(fsel)
        ncols = cols or math.ceil(math.sqrt(n))
        grid = (math.ceil(n / ncols), ncols)
        tiles = []
        for f in fsel:
            t, m = scale_symmetric(wn[f].transpose(1, 2, 0))  # (kh, kw, 3): input channels are R, G, B
            tiles.append(t)
            scales.append(m)
        isel, trunc_i = [0, 1, 2], False
        placed = [(i // ncols, i % ncols, t) for i, t in enumerate(tiles)]
        kind, caveat = "rgb", None
    else:
        isel, trunc_i = _pick(in_per, inputs, max_inputs, "input channel")
        if not isel:
            raise ParamError("inputs", "must name at least one input channel")
        grid = (len(fsel), len(isel))
        placed = []
        for r, f in enumerate(fsel):
            g, m = scale_symmetric(wn[f][isel])  # one scale per filter over its shown input channels
            scales.append(m)
            for c in range(len(isel)):
                placed.append((r, c, np.repeat(g[c][:, :, None], 3, axis=2)))
        kind, caveat = "grey", DEEP_CAVEAT
    th, tw = kh * z, kw * z
    step_y, step_x = th + pad, tw + pad
    pixels = (pad + grid[0] * step_y) * (pad + grid[1] * step_x)
    if pixels > MAX_PIXELS:
        raise ParamError("filters", f"and inputs make a picture of {pixels / 1e6:.0f} Mpx (at most "
                                    f"{MAX_PIXELS / 1e6:.0f}); choose fewer of them or a smaller zoom")
    image = np.zeros((pad + grid[0] * step_y, pad + grid[1] * step_x, 3), dtype=np.uint8)
    for r, c, t in placed:
        y, x = pad + r * step_y, pad + c * step_x
        image[y:y + th, x:x + tw] = np.repeat(np.repeat(t, z, axis=0), z, axis=1)
    res = FilterTiles(image=image, layer=name, kind=kind, weight_shape=tuple(w.shape), grid=grid,
                      tile=max(th, tw), pad=pad, zoom=z, filters=fsel, inputs=isel, scale=scales,
                      caveat=caveat, truncated=trunc_f or trunc_i)
    if groups != 1:
        res.extra["groups"] = groups
        if groups == out_ch:
            res.extra["note"] = "depthwise conv: each filter reads only its own input channel"
    return res


def random_twin(model: Any, seed: int = 0) -> Any:
    """The same architecture freshly initialised with `seed` (a VisModel on the same device), for "trained vs
    random". torch's global RNG state is left as it was."""
    if not hasattr(model, "reload"):
        raise DeepVisError("random_twin needs a model made by deepvis_app.load_model")
    if not 0 <= seed < 2**63:
        raise ParamError("seed", f"must be between 0 and 2^63 - 1, got {seed}")
    with torch.random.fork_rng(devices=[]):
        return model.reload(weights="random", seed=seed)  # any model a user has: spec, timm:, torchvision:


def side_by_side(left: np.ndarray, right: np.ndarray, *, labels: tuple[str, str] | None = ("trained", "random"),
                 gap: int = 12) -> np.ndarray:
    """Two pictures next to each other on a dark background, each with a small caption above."""
    import cv2

    head = 22 if labels else 0
    h = max(left.shape[0], right.shape[0]) + head
    w = left.shape[1] + gap + right.shape[1]
    out = np.full((h, w, 3), 30, dtype=np.uint8)
    out[head:head + left.shape[0], :left.shape[1]] = left
    out[head:head + right.shape[0], left.shape[1] + gap:] = right
    if labels:
        for x, text in ((0, labels[0]), (left.shape[1] + gap, labels[1])):
            cv2.putText(out, text, (x + 2, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    return out
