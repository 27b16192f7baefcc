"""Live views beyond the grid and the unit, made from the frame's one forward: a class's CAM over the input, and a
vision transformer's attention (per head, from the class token or a clicked patch) with its rollout.

The CAM's formula is the CAM class's own (`methods.cam.*.combine`), so the live map equals `deepvis attribute
--method gradcam` on the same frame; its gradient comes from `probe.Capture(grad_from=layer)`: autograd records
only the network's head, from the CAM layer to the logits. The attention weights are recomputed from each block's
input recorded during the same forward (`methods.attention.AttentionRecorder`), so no second pass runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DeepVisError
from ..layouts import as_maps
from ..methods.attention import AttentionRecorder, attention_modules, query_index, rollout_row, token_maps
from ..methods.cam import CAM_METHODS
from ..render import Grid, render_grid
from ..values import LIVE_CAMS, LayerInfo, Layout


@dataclass(frozen=True)
class OverlayView:
    """A class's CAM on this frame: `image` uint8 SxS scaled to [0, 255] per frame (pytorch-grad-cam's display
    scaling), `raw` float32 h x w at the layer's resolution after the method's ReLU (for the trust meter)."""

    method: str
    layer: str
    cls: int
    image: np.ndarray
    raw: np.ndarray


@dataclass(frozen=True)
class AttentionView:
    """One block's attention: `heads` one tile per head (where the query token attends, on the patch grid);
    `rollout` uint8 SxS (attention rollout from the first block up to this one, the query's row); `query` says
    which token looks."""

    block: str
    heads: Grid
    rollout: np.ndarray
    query: str
    rollout_raw: np.ndarray  # float32 h x w: the rollout row on the token grid, unscaled


def check_overlay(method: str) -> None:
    if method and method not in LIVE_CAMS:
        raise DeepVisError(f"live overlay {method!r} is not one of {', '.join(LIVE_CAMS)} (Score-CAM, IG, LRP and "
                           "SmoothGrad run as jobs: they need many passes per frame)")


def needs_gradient(method: str) -> bool:
    return CAM_METHODS[method].uses_gradients


def overlay_view(method: str, layer: str, info: LayerInfo, act: Tensor, grad: Tensor | None, cls: int,
                 size: int) -> OverlayView:
    """The CAM of class `cls` from the layer's activation and d logit / d activation of image 0."""
    maps = as_maps(act.detach(), info)[:1].float()
    grads = None if grad is None else as_maps(grad.detach(), info)[:1].float()
    cam = CAM_METHODS[method](nn.Identity(), layer).combine(maps, grads).clamp(min=0)  # [1, h, w]
    low = cam[0]
    up = F.interpolate(low[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    up = up - up.min()
    up = up / up.max().clamp_min(1e-7)
    image = (up * 255).round().to(torch.uint8).cpu().numpy()
    return OverlayView(method, layer, cls, image, low.cpu().numpy().astype(np.float32))


def recorder_for(net: nn.Module, block: str) -> AttentionRecorder | None:
    """The recorder for the live forward (None for a network without attention blocks); set its `last_only`
    before the forward on a frame that keeps its rollout."""
    if not attention_modules(net):
        return None
    return AttentionRecorder(net, upto=block or None)


def attention_view(recorder: AttentionRecorder, info: LayerInfo, patch: tuple[int, int] | None,
                   size: int, previous: AttentionView | None = None) -> AttentionView:
    """The heads of the recorder's last block and the rollout, read on `info`'s token grid (the shown token
    layer, or any token layer of the model: the grid and prefix are the model's). With `previous` (the same
    block and query), its rollout is kept: the rollout of every block is refreshed every few frames only, the
    heads every frame (the live worker decides)."""
    if info.layout is not Layout.TOKENS or info.token_grid is None:
        raise DeepVisError("attention maps need the model's patch grid: show a token layer of the transformer")
    grid, prefix = info.token_grid, info.prefix_tokens
    q = query_index(prefix, grid, patch)
    if previous is not None:  # the heads only: one query row of the last block
        rows = recorder.query_rows(recorder.last, q)[0]  # [heads, T]
        weights = None
    else:
        weights = recorder.weights()
        if recorder.last not in weights:
            raise DeepVisError(f"attention block {recorder.last!r} did not run in this forward")
        rows = weights[recorder.last][0][:, q]
    heads = token_maps(rows, prefix, grid)  # [heads, h, w]
    tiles = render_grid(heads.float(), norm="channel", gamma=1.0, min_tile=8)
    query = "class token" if patch is None else f"patch ({patch[0]}, {patch[1]})"
    if weights is None:
        return AttentionView(recorder.last, tiles, previous.rollout, query, previous.rollout_raw)
    rolled = rollout_row(list(weights.values()), q)[0]
    raw = token_maps(rolled, prefix, grid).float()
    roll = F.interpolate(raw[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    roll = roll - roll.min()
    roll = (roll / roll.max().clamp_min(1e-7) * 255).round().to(torch.uint8).cpu().numpy()
    return AttentionView(recorder.last, tiles, roll, query, raw.cpu().numpy())
