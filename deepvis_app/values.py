"""The program's value types, in one torch-free module: a unit, a class target, a layer's layout, a view request.

Everything here is immutable and cheap to import (no torch, no Qt), so the app-state model, the GUI and the
command line can speak of units and layers without loading the compute core. The model (`zoo.VisModel`) owns the
facts about its layers (`info`, `channels`, `check_unit`); these types only carry values.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .errors import DeepVisError, ParamError

ATTRIBUTION_METHODS = ("gradient", "deconv", "guided")
LIVE_CAMS = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "eigencam")  # cheap enough per frame


class Layout(StrEnum):
    """How a layer's output is laid out (batch dimension left out).

    CHANNELS_FIRST: maps C x H x W (CNNs). CHANNELS_LAST: maps H x W x C (ConvNeXt's inner layers, Swin).
    TOKENS: T x C, tokens on a grid of H x W after `prefix_tokens` extra tokens (class, distillation, registers)
    when the model has a patch grid, else a plain sequence. VECTOR: C values (fully connected layers, logits).
    """

    CHANNELS_FIRST = "channels-first"
    CHANNELS_LAST = "channels-last"
    TOKENS = "tokens"
    VECTOR = "vector"


@dataclass(frozen=True)
class LayerInfo:
    """One probe-able layer as the model knows it: name, module type, raw output shape and its layout.

    `channels` are the units of the layer (features of a token layer); `grid` is the (height, width) of its maps or
    token grid (None: no positions); `prefix_tokens` are the tokens before the grid. Consumers ask these, never the
    shape: a 56x56x384 channels-last map has 384 channels, a 197x768 ViT layer 768 on a 14x14 grid.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    layout: Layout = Layout.CHANNELS_FIRST
    prefix_tokens: int = 0
    token_grid: tuple[int, int] | None = None  # TOKENS only: the patch grid the tokens after the prefix lie on

    @property
    def channels(self) -> int:
        if not self.shape:
            return 1
        if self.layout in (Layout.CHANNELS_LAST, Layout.TOKENS):
            return self.shape[-1]
        return self.shape[0]

    @property
    def grid(self) -> tuple[int, int] | None:
        """(height, width) of the positions a unit can sit at; None where the layer has none (vectors)."""
        if self.layout is Layout.CHANNELS_FIRST and len(self.shape) >= 3:
            return self.shape[-2], self.shape[-1]
        if self.layout is Layout.CHANNELS_LAST and len(self.shape) == 3:
            return self.shape[0], self.shape[1]
        if self.layout is Layout.TOKENS and len(self.shape) == 2:
            return self.token_grid if self.token_grid is not None else (1, self.shape[0] - self.prefix_tokens)
        return None

    @property
    def spatial(self) -> bool:
        """True when the layer's units have positions on an image-like grid (maps, or tokens on a patch grid)."""
        return self.grid is not None and (self.layout is not Layout.TOKENS or self.token_grid is not None)

    def with_name(self, name: str) -> LayerInfo:
        return replace(self, name=name)

    def describe(self) -> str:
        """"384 channels on 56x56 (channels-last)", "768 features on 14x14 tokens + 1 extra", "1000 values"."""
        grid = self.grid
        if self.layout is Layout.VECTOR or grid is None:
            return f"{self.channels} values"
        if self.layout is Layout.TOKENS:
            extra = f" + {self.prefix_tokens} extra" if self.prefix_tokens else ""
            where = f"{grid[0]}x{grid[1]} tokens" if self.token_grid else f"{grid[1]} tokens"
            return f"{self.channels} features on {where}{extra}"
        return f"{self.channels} channels on {grid[0]}x{grid[1]} ({self.layout.value})"


@dataclass(frozen=True)
class Unit:
    """One unit: a layer's channel, optionally at a position (y, x) of the layer's grid (default: the channel's
    argmax in the current frame). The one unit type of the program: live view, attribution, occlusion, top-k."""

    layer: str
    channel: int
    y: int | None = None
    x: int | None = None

    def __post_init__(self) -> None:
        if (self.y is None) != (self.x is None):
            raise DeepVisError(f"unit {self.layer}:{self.channel}: give both y and x of the position, or neither")

    @staticmethod
    def parse(text: str) -> Unit:
        """`LAYER:CHANNEL` or `LAYER:CHANNEL:Y:X` (as written on the command line and in snapshots)."""
        parts = text.split(":")
        numbers = parts[1:]
        if len(parts) not in (2, 4) or not parts[0] or not all(n.isdigit() for n in numbers):
            raise DeepVisError(f"bad unit {text!r}: use LAYER:CHANNEL or LAYER:CHANNEL:Y:X")
        if len(parts) == 2:
            return Unit(parts[0], int(numbers[0]))
        return Unit(parts[0], int(numbers[0]), int(numbers[1]), int(numbers[2]))

    @property
    def position(self) -> tuple[int, int] | None:
        return None if self.y is None or self.x is None else (self.y, self.x)

    def at(self, y: int | None, x: int | None) -> Unit:
        return replace(self, y=y, x=x)

    def __str__(self) -> str:
        return f"{self.layer}:{self.channel}" + (f":{self.y}:{self.x}" if self.y is not None else "")


@dataclass(frozen=True)
class ClassTarget:
    """A class of the network's output, scored by its softmax probability (`prob`) or its `logit`."""

    index: int
    score: str = "prob"

    def __post_init__(self) -> None:
        if self.score not in CLASS_SCORES:
            raise ParamError("score", f"must be one of {', '.join(CLASS_SCORES)}, not {self.score!r}")

    def __str__(self) -> str:
        return f"class {self.index} ({self.score})"


CLASS_SCORES = ("prob", "logit")


def check_position(info: LayerInfo, y: int | None, x: int | None, *, what: str = "position") -> None:
    """One line when (y, x) is not a position of `info`'s grid, or the layer has no positions."""
    if y is None and x is None:
        return
    grid = info.grid
    if grid is None:
        raise DeepVisError(f"layer {info.name!r} has no positions ({info.describe()}): give a unit without y and x")
    h, w = grid
    if y is None or x is None or not (0 <= y < h and 0 <= x < w):
        raise DeepVisError(f"{what} (y={y}, x={x}) is outside layer {info.name!r}: y in 0..{h - 1}, "
                           f"x in 0..{w - 1}")


def check_channel(info: LayerInfo, channel: int) -> None:
    """One line when `channel` is not a unit of `info`."""
    n = info.channels
    if not 0 <= channel < n:
        raise DeepVisError(f"unit {channel} is out of range for layer {info.name!r}: valid units are 0..{n - 1}")


def check_class_index(index: int, classes: int) -> None:
    """One line when `index` is not a class of a model with `classes` outputs."""
    if not 0 <= index < classes:
        raise DeepVisError(f"class {index} is out of range: valid classes are 0..{classes - 1}")


@dataclass(frozen=True)
class ViewRequest:
    """What the user currently wants to see; replaced wholesale (never mutated) whenever it changes."""

    request_id: int = 0
    layer: str = ""
    unit: Unit | None = None
    norm: str = "layer"
    gamma: float = 1.0
    crop: str | None = None
    attribution: tuple[str, ...] = ()
    attribution_view: str = "norm"
    paused: bool = False
    live_topk: bool = False  # keep a running top-k of frames for the units of `unit.layer`
    live_topk_k: int = 9
    live_topk_epoch: int = 0  # bump to clear the live top-k
    erf: bool = False  # accumulate the effective receptive field of the unit's channel at the layer centre
    overlay: str = ""  # a live CAM of a class over the input ("" off; one of LIVE_CAMS)
    overlay_layer: str = ""  # the CAM's layer ("": the model's last layer with positions)
    overlay_class: int | None = None  # the explained class (None: each frame's top class)
    attention: bool = False  # a vision transformer's attention: per head, from the class token or a patch
    attention_block: str = ""  # the attention module shown ("": the last one)
    attention_patch: tuple[int, int] | None = None  # the query patch (y, x) on the token grid (None: class token)
    interventions: tuple = ()  # interventions.Intervention values: the enabled ones change the live network

    def with_changes(self, **changes: Any) -> ViewRequest:
        return replace(self, request_id=self.request_id + 1, **changes)


@dataclass(frozen=True)
class TopKTile:
    """One live top-k entry of the selected unit, with its receptive-field patch."""

    value: float
    frame_id: int
    y: int
    x: int
    box: tuple[int, int, int, int]
    patch: Any  # np.ndarray uint8 HxWx3, zero-padded where the box leaves the frame
    frame: Any  # np.ndarray uint8 SxSx3: the whole frame as the network saw it

