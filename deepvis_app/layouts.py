"""Which layout each layer's output has, found once per model, and the one conversion every consumer uses.

A shape cannot say whether 56x56x384 is 56 channels of 56x384 or 384 channels of 56x56, nor where a ViT's class
token is. The model's own modules can: a Linear or a LayerNorm works on the last dimension (channels-last), a
Conv2d or BatchNorm2d on the second (channels-first), a Permute moves the channels, an elementwise module (GELU,
ReLU, Dropout) keeps its input's layout, and a block's output has the layout of the last leaf inside it with the
same shape (with none, as in Swin's functional window attention, its input's when the shape is kept). Token
layers (T x C) lie on the patch grid of the last convolution whose H*W leaves 0..8 extra tokens
(class, distillation, registers) in front. `LayoutTracker` sees every module call of the layer-table forward and
decides; `as_maps` turns any captured activation into channels-first maps N x C x H x W for the grid, units,
top-k, objectives and occlusion targets.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from .values import LayerInfo, Layout

MAX_PREFIX_TOKENS = 8  # class + distillation + up to 6 register tokens

_CHANNELS_FIRST_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.BatchNorm3d,
                         nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.GroupNorm,
                         nn.InstanceNorm2d, nn.LocalResponseNorm, nn.Upsample, nn.PixelShuffle)


class LayoutTracker:
    """Decides each module call's output layout during one forward (see the module docstring)."""

    def __init__(self) -> None:
        self._known: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> Layout
        self._grids: list[tuple[int, int]] = []  # spatial sizes of channels-first maps, most recent last
        self._leaf_outputs: list[tuple[tuple[int, ...], Layout]] = []  # (shape, layout) of leaf calls in order

    def leaf_mark(self) -> int:
        """Where a container's call begins (its leaves' outputs are those recorded after this mark)."""
        return len(self._leaf_outputs)

    def decide(self, module: nn.Module, inputs: tuple, output: Tensor, mark: int | None) -> tuple[Layout, int,
                                                                                                  tuple | None]:
        """(layout, prefix tokens, token grid) of `output`; `mark` is the container's leaf mark (None: a leaf)."""
        shape = tuple(output.shape[1:])
        layout = self._layout(module, inputs, output, shape, mark)
        self._known[output] = layout
        if mark is None:
            self._leaf_outputs.append((shape, layout))
        if layout is Layout.CHANNELS_FIRST and len(shape) == 3:
            self._grids.append((shape[1], shape[2]))
        if layout is Layout.CHANNELS_LAST and len(shape) == 3:
            self._grids.append((shape[0], shape[1]))
        prefix, grid = 0, None
        if layout is Layout.TOKENS:
            prefix, grid = self._token_grid(shape[0])
        return layout, prefix, grid

    def _token_grid(self, tokens: int) -> tuple[int, tuple[int, int] | None]:
        for h, w in reversed(self._grids):
            extra = tokens - h * w
            if 0 <= extra <= MAX_PREFIX_TOKENS:
                return extra, (h, w)
        return 0, None

    def _layout(self, module: nn.Module, inputs: tuple, output: Tensor, shape: tuple[int, ...],
                mark: int | None) -> Layout:
        if len(shape) <= 1:
            return Layout.VECTOR
        if len(shape) == 2:
            return Layout.TOKENS
        known = self._known.get(output)
        if known is not None:  # a container returning a leaf's tensor as it is
            return known
        first = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
        same_as_input = first is not None and tuple(first.shape[1:]) == shape and first in self._known
        if mark is None:
            rule = _module_rule(module, shape)
            if rule is not None:
                return rule
            return self._known[first] if same_as_input else Layout.CHANNELS_FIRST  # elementwise: GELU, Dropout ..
        for leaf_shape, leaf_layout in reversed(self._leaf_outputs[mark:]):
            if leaf_shape == shape and leaf_layout in (Layout.CHANNELS_FIRST, Layout.CHANNELS_LAST):
                return leaf_layout
        # No leaf inside gave this shape (children called functionally, as Swin's shifted-window attention does):
        # a block that keeps its input's shape keeps its layout.
        return self._known[first] if same_as_input else Layout.CHANNELS_FIRST


def _module_rule(module: nn.Module, shape: tuple[int, ...]) -> Layout | None:
    """The layout a leaf module's kind implies for a 3-D output, or None when it keeps its input's layout."""
    kind = type(module).__name__
    if isinstance(module, _CHANNELS_FIRST_TYPES) or kind.endswith("2d"):  # also timm's LayerNorm2d
        return Layout.CHANNELS_FIRST
    if isinstance(module, nn.Linear):
        return Layout.CHANNELS_LAST
    if isinstance(module, nn.LayerNorm):
        return Layout.CHANNELS_LAST if tuple(module.normalized_shape) == shape[-1:] else Layout.CHANNELS_FIRST
    dims = getattr(module, "dims", None)  # torchvision.ops.Permute
    if kind == "Permute" and dims is not None:
        dims = list(dims)
        if dims == [0, 2, 3, 1]:
            return Layout.CHANNELS_LAST
        if dims == [0, 3, 1, 2]:
            return Layout.CHANNELS_FIRST
    return None


def as_maps(act: Tensor, info: LayerInfo) -> Tensor:
    """A captured activation as channels-first maps N x C x H x W (a view where possible).

    Channels-last maps are permuted; tokens on a patch grid drop their prefix tokens and fold onto the grid; a
    grid-less token sequence is one row (N x C x 1 x T); a vector is N x C x 1 x 1. The values are the layer's
    own, so a unit (channel, y, x) indexes `as_maps(act, info)[:, channel, y, x]` whatever the layout."""
    n = act.shape[0]
    if info.layout is Layout.CHANNELS_FIRST:
        return act if act.dim() == 4 else act.reshape(n, info.channels, 1, -1)
    if info.layout is Layout.CHANNELS_LAST:
        return act.permute(0, 3, 1, 2)
    if info.layout is Layout.TOKENS:
        tokens = act[:, info.prefix_tokens:, :]
        h, w = info.grid or (1, tokens.shape[1])
        return tokens.transpose(1, 2).reshape(n, act.shape[-1], h, w)
    return act.reshape(n, -1, 1, 1)


def prefix_tokens(act: Tensor, info: LayerInfo) -> Tensor | None:
    """The extra tokens of a token layer (N x P x C: class, distillation, registers), None where it has none."""
    if info.layout is not Layout.TOKENS or info.prefix_tokens == 0:
        return None
    return act[:, : info.prefix_tokens, :]


def from_maps(maps: Tensor, info: LayerInfo, like: Tensor) -> Tensor:
    """The inverse of `as_maps` for gradients and seeds: N x C x H x W values laid out as the layer's output
    `like` (prefix tokens zero)."""
    if info.layout is Layout.CHANNELS_FIRST:
        return maps.reshape(like.shape)
    if info.layout is Layout.CHANNELS_LAST:
        return maps.permute(0, 2, 3, 1)
    if info.layout is Layout.TOKENS:
        out = torch.zeros_like(like)
        out[:, info.prefix_tokens:, :] = maps.flatten(2).transpose(1, 2)
        return out
    return maps.reshape(like.shape)
