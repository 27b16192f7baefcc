"""Activations -> one tiled uint8 grid, computed with torch on the model's device.

Normalization follows the old toolbox: scale by the whole layer's range (channels comparable), by each
channel's own range (weak channels visible), then a gamma boost (< 1 lifts faint activity). Signed layers
(conv/BN outputs before a ReLU) map zero to mid-gray so negative and positive responses stay distinguishable.
Only the finished uint8 grid and the per-channel maxima cross to the host, in one copy (`to_host`). The `*_parts`
functions stop before that copy, so a caller that draws several things per frame (the live pipeline) reads all of
them back with one `to_host` and makes the host wait for the GPU once.

The grid draws channels-first maps C x H x W; which dimension of a layer's output holds the channels is the
model's knowledge, not the shape's: callers pass `layouts.as_maps(act, info)[0]` (a ConvNeXt channels-last layer
becomes 384 maps of 56x56, a ViT token layer 768 maps on its 14x14 patch grid, a vector C maps of 1x1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from . import devices
from .errors import DeepVisError

NORM_MODES = ("layer", "channel")


@dataclass(frozen=True)
class GridLayout:
    """Where tile `c` sits: row c // cols, column c % cols; each tile is tile_h x tile_w plus `pad` pixels."""

    channels: int
    rows: int
    cols: int
    tile_h: int
    tile_w: int
    pad: int

    @property
    def height(self) -> int:
        return self.rows * (self.tile_h + self.pad) + self.pad

    @property
    def width(self) -> int:
        return self.cols * (self.tile_w + self.pad) + self.pad

    def tile_origin(self, channel: int) -> tuple[int, int]:
        """Top-left pixel (y, x) of a channel's tile inside the grid image."""
        r, c = divmod(channel, self.cols)
        return self.pad + r * (self.tile_h + self.pad), self.pad + c * (self.tile_w + self.pad)

    def channel_at(self, y: float, x: float) -> int | None:
        """The channel whose tile (or its right/bottom padding) holds grid pixel (y, x); None outside tiles."""
        if y < self.pad or x < self.pad:
            return None
        r = int((y - self.pad) // (self.tile_h + self.pad))
        c = int((x - self.pad) // (self.tile_w + self.pad))
        if r >= self.rows or c >= self.cols:
            return None
        ch = r * self.cols + c
        return ch if ch < self.channels else None


def grid_layout(channels: int, tile_h: int, tile_w: int, *, pad: int = 1, aspect: float = 1.0) -> GridLayout:
    """Choose rows x cols so the grid's pixel aspect ratio is close to `aspect` (width / height)."""
    cols = max(1, round(math.sqrt(channels * aspect * (tile_h + pad) / (tile_w + pad))))
    cols = min(cols, channels)
    rows = math.ceil(channels / cols)
    return GridLayout(channels, rows, cols, tile_h, tile_w, pad)


@dataclass(frozen=True)
class Grid:
    """A rendered grid: `image` uint8 HxW (border pixels are 0), its layout, and per-channel max activation."""

    image: np.ndarray
    layout: GridLayout
    channel_max: np.ndarray
    signed: bool


def normalize(maps: torch.Tensor, *, norm: str = "layer", gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Map C x H x W activations into [0, 1]; returns (normalized, signed) with `signed` a 0-dim bool tensor.

    No host sync: whether the layer is signed is decided on the device (`torch.where`), so a CUDA frame
    crosses to the host only once, with the finished grid.
    """
    if norm not in NORM_MODES:
        raise ValueError(f"norm must be one of {NORM_MODES}, got {norm!r}")
    maps = maps.float()
    flat = maps.flatten(1).abs()  # for a non-negative layer |x| = x, so one scale serves both cases
    scale = flat.amax() if norm == "layer" else flat.amax(dim=1).view(-1, 1, 1)
    ratio = maps / scale.clamp_min(1e-12)  # [-1, 1], or [0, 1] when nothing is negative
    if gamma != 1.0:
        ratio = ratio.sign() * ratio.abs().pow(gamma)
    signed = maps.amin() < 0 if maps.numel() else torch.zeros((), dtype=torch.bool, device=maps.device)
    return torch.where(signed, 0.5 + 0.5 * ratio, ratio.clamp(0, 1)), signed


@dataclass(frozen=True)
class GridParts:
    """A grid drawn on the device and not read yet: `image` uint8 H x W, `stats` float32 [C + 1] (each channel's
    maximum, then 1.0 when the layer is signed). `finish` makes the `Grid` from their host copies."""

    image: torch.Tensor
    stats: torch.Tensor
    layout: GridLayout

    def tensors(self, prefix: str = "grid") -> dict[str, torch.Tensor]:
        """What to send through `to_host`, under names starting with `prefix`."""
        return {f"{prefix}.image": self.image, f"{prefix}.stats": self.stats}

    def finish(self, host: dict[str, np.ndarray], prefix: str = "grid") -> Grid:
        """The Grid from `to_host`'s arrays of `tensors(prefix)`."""
        stats = host[f"{prefix}.stats"]
        return Grid(image=host[f"{prefix}.image"], layout=self.layout, channel_max=stats[:-1],
                    signed=bool(stats[-1]))


def grid_parts(maps: torch.Tensor, *, norm: str = "layer", gamma: float = 1.0, pad: int = 1,
               aspect: float = 1.0, min_tile: int = 1) -> GridParts:
    """`render_grid` without its host copy: the grid and its statistics as device tensors.

    Drawn every frame, so on the CPU the tiles are scaled in place and written straight into the bordered grid
    (the sign decided on the host, where reading it costs nothing): a third of the passes over the layer of the
    device path, the same bytes (a test compares the two)."""
    if maps.dim() != 3:
        raise ValueError(f"render_grid draws C x H x W maps, got shape {tuple(maps.shape)}: pass "
                         "layouts.as_maps(act, info)[0], which knows the layer's layout")
    maps = maps.detach()
    if not devices.host_reads_free(maps) or gamma != 1.0 or norm not in NORM_MODES or not maps.numel():
        return grid_parts_device(maps, norm=norm, gamma=gamma, pad=pad, aspect=aspect, min_tile=min_tile)
    c, h, w = maps.shape
    maps = maps.float()
    chan_max = maps.flatten(1).amax(dim=1)
    lo, hi = torch.aminmax(maps) if norm == "layer" else (maps.amin(), None)
    signed = bool(lo < 0)
    if norm == "layer":
        scale = torch.maximum(hi, -lo) if signed else hi
    else:
        scale = (torch.maximum(chan_max, -maps.flatten(1).amin(dim=1)) if signed else chan_max).view(-1, 1, 1)
    ratio = maps / scale.clamp_min(1e-12)  # as `normalize`: [-1, 1], or [0, 1] when nothing is negative
    if signed:
        ratio.mul_(0.5).add_(0.5)
    else:
        ratio.clamp_(0, 1)
    ratio.mul_(254).add_(1).round_()  # 1..255 inside tiles, 0 reserved for borders
    stats = torch.cat([chan_max, torch.tensor([float(signed)])])
    factor = max(1, math.ceil(min_tile / max(h, w)))
    if factor > 1:
        ratio = ratio.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
        h, w = h * factor, w * factor
    layout = grid_layout(c, h, w, pad=pad, aspect=aspect)
    grid = torch.zeros(layout.rows * (h + pad) + pad, layout.cols * (w + pad) + pad, dtype=torch.uint8)
    cells = grid[pad:, pad:].view(layout.rows, h + pad, layout.cols, w + pad)
    full, rest = divmod(c, layout.cols)
    if full:
        cells[:full, :h, :, :w].copy_(ratio[:full * layout.cols].view(full, layout.cols, h, w).permute(0, 2, 1, 3))
    if rest:
        cells[full, :h, :rest, :w].copy_(ratio[full * layout.cols:].permute(1, 0, 2))
    return GridParts(grid, stats, layout)


def grid_parts_device(maps: torch.Tensor, *, norm: str, gamma: float, pad: int, aspect: float,
                       min_tile: int) -> GridParts:
    """The grid with no host sync (a GPU frame crosses to the host once, with the finished grid)."""
    c, h, w = maps.shape
    unit, signed = normalize(maps, norm=norm, gamma=gamma)
    stats = torch.cat([maps.flatten(1).amax(dim=1).float(), signed.float().view(1)])
    factor = max(1, math.ceil(min_tile / max(h, w)))
    if factor > 1:
        unit = unit.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
        h, w = h * factor, w * factor
    layout = grid_layout(c, h, w, pad=pad, aspect=aspect)
    tiles = (unit * 254 + 1).round().to(torch.uint8)  # 1..255 inside tiles, 0 reserved for borders
    total = layout.rows * layout.cols
    if total > c:
        tiles = torch.cat([tiles, tiles.new_zeros((total - c, h, w))])
    tiles = torch.nn.functional.pad(tiles, (0, pad, 0, pad))  # right/bottom border per tile
    grid = tiles.view(layout.rows, layout.cols, h + pad, w + pad).permute(0, 2, 1, 3)
    grid = grid.reshape(layout.rows * (h + pad), layout.cols * (w + pad))
    grid = torch.nn.functional.pad(grid, (pad, 0, pad, 0))
    return GridParts(grid, stats, layout)


def render_grid(maps: torch.Tensor, *, norm: str = "layer", gamma: float = 1.0, pad: int = 1,
                aspect: float = 1.0, min_tile: int = 1) -> Grid:
    """Render one image's layer as a tiled grid, one tile per channel: `maps` is C x H x W, channels first
    (`layouts.as_maps(act, info)[0]` for any layer); tiles smaller than `min_tile` are enlarged by an integer
    factor (nearest) so e.g. 7x7 maps and FC units stay visible. One copy to the host."""
    parts = grid_parts(maps, norm=norm, gamma=gamma, pad=pad, aspect=aspect, min_tile=min_tile)
    return parts.finish(to_host(parts.tensors()))


def upscale_tensor(act_map: torch.Tensor, size: int) -> torch.Tensor:
    """`upscale_map` on the device: uint8 size x size, not read yet."""
    m = act_map.detach().float()[None, None]
    norm = normalize(m[0], norm="channel")[0]
    big = torch.nn.functional.interpolate(norm[None], size=(size, size), mode="bilinear", align_corners=False)
    return (big[0, 0].clamp(0, 1) * 255).round().to(torch.uint8)


def upscale_map(act_map: torch.Tensor, size: int) -> np.ndarray:
    """One channel's H x W map -> uint8 size x size (bilinear), scaled like a 'channel' tile."""
    return upscale_tensor(act_map, size).cpu().numpy()


def prediction_parts(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """`top_predictions` on the device: float64 [2, k'] (the k' <= k best probabilities, then their class
    indices, exact as float64), not read yet."""
    probs = torch.softmax(logits.detach().float().flatten(), dim=0)
    values, indices = probs.topk(min(k, probs.numel()))
    return torch.stack([values.double(), indices.double()])


def finish_predictions(parts: np.ndarray, categories: list[str]) -> list[tuple[int, str, float]]:
    """(class index, name, probability) from `prediction_parts`' host copy."""
    out = []
    for v, i in zip(parts[0].tolist(), parts[1].astype(np.int64).tolist(), strict=True):
        out.append((i, categories[i] if i < len(categories) else str(i), float(v)))
    return out


def top_predictions(logits: torch.Tensor, categories: list[str], k: int = 5) -> list[tuple[int, str, float]]:
    """Top-k (class index, name, probability) from one image's logits (one copy to the host)."""
    return finish_predictions(prediction_parts(logits, k).cpu().numpy(), categories)


_NUMPY_DTYPES: dict[torch.dtype, np.dtype] = {
    t: torch.empty(0, dtype=t).numpy().dtype for t in (torch.uint8, torch.int8, torch.int16, torch.int32,
                                                       torch.int64, torch.float16, torch.float32, torch.float64,
                                                       torch.bool)}


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    found = _NUMPY_DTYPES.get(dtype)
    if found is None:
        found = _NUMPY_DTYPES[dtype] = torch.empty(0, dtype=dtype).numpy().dtype
    return found


def to_host(tensors: Mapping[str, torch.Tensor | None], *, pack: bool | None = None) -> dict[str, np.ndarray]:
    """Tensors on one device -> numpy arrays (same names, shapes and dtypes; None entries left out) with ONE copy
    to the host: the tensors' bytes are packed into one device buffer first. On a GPU every read-back makes the
    host wait for the device; a frame that reads its grid, statistics, predictions and maps one by one waits five
    times, this way once (and on the calling thread's stream only). CPU tensors are returned as they are
    (`pack=True` packs them too, which tests use to check the packing on a machine without a GPU). The arrays
    share one host buffer."""
    items = [(name, t.detach()) for name, t in tensors.items() if t is not None]
    out: dict[str, np.ndarray] = {}
    send = []
    for name, t in items:
        if t.device.type == "cpu" and not pack:
            out[name] = t.numpy()
        else:
            send.append((name, t if t.dtype != torch.bfloat16 else t.float()))
    if not send:
        return out
    chunks, spans, offset = [], [], 0
    for name, t in send:
        raw = t.contiguous().reshape(-1).view(torch.uint8)
        spans.append((name, offset, raw.numel(), t.dtype, tuple(t.shape)))
        pad = -raw.numel() % 8  # every array starts 8-byte aligned
        chunks.append(raw if not pad else torch.cat([raw, raw.new_zeros(pad)]))
        offset += raw.numel() + pad
    host = torch.cat(chunks).cpu().numpy()
    for name, start, size, dtype, shape in spans:
        out[name] = host[start:start + size].view(_numpy_dtype(dtype)).reshape(shape)
    return out


OVERLAY_ALPHA = 0.75  # a heat overlay's opacity at the map's maximum


def overlay_heat(rgb: np.ndarray, magnitude: np.ndarray, *, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend an inferno heat map over an image, opacity growing with the value: `alpha * m` at value m in [0, 1].

    Where the map is 0 the image is returned unchanged (so the photo stays readable around the hot region);
    at the map's maximum the heat colour covers `alpha` of it. rgb: uint8 HxWx3; magnitude: float HxW in [0, 1]
    (or uint8 0..255) of the same size. Plain function, Qt-free: the CLI's --overlay and the window's input pane
    (live CAM), heat map and attention panels draw with it.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DeepVisError(f"overlay_heat expects an RGB uint8 HxWx3 image, got {rgb.shape} {rgb.dtype}")
    m = magnitude.astype(np.float32) / 255.0 if magnitude.dtype == np.uint8 else magnitude.astype(np.float32)
    if m.shape != rgb.shape[:2]:
        raise DeepVisError(f"overlay_heat: map {m.shape} and image {rgb.shape[:2]} differ in size")
    m = np.clip(m, 0.0, 1.0)
    heat = cv2.cvtColor(cv2.applyColorMap((m * 255.0).round().astype(np.uint8), cv2.COLORMAP_INFERNO),
                        cv2.COLOR_BGR2RGB).astype(np.float32)
    a = (alpha * m)[..., None]
    out = rgb.astype(np.float32) * (1.0 - a) + heat * a
    return np.clip(out.round(), 0, 255).astype(np.uint8)
