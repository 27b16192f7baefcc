"""What a vision transformer attends to: each head's attention weights per block, maps from the class token (or a
clicked patch) to every patch, and attention rollout (Abnar & Zuidema 2020).

Fused attention kernels never materialize the weights, so they are recomputed from each attention module's input
with the module's own projections: softmax(q k^T * scale) per head, exactly what the block computed (tests compare
with timm's and torchvision's own weights). Supported: timm's `Attention` (qkv Linear, q/k norms) and torch's
`nn.MultiheadAttention` (torchvision's ViT). One forward captures every block's input through `probe.Capture`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DeepVisError
from ..probe import Capture


def attention_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's self-attention modules in forward (definition) order."""
    return [(name, m) for name, m in net.named_modules() if _kind(m) is not None]


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.MultiheadAttention):
        return "mha"
    if all(hasattr(m, a) for a in ("qkv", "num_heads", "scale")) and isinstance(m.qkv, nn.Linear):
        return "timm"
    return None


class _Inputs:
    """Forward pre-hooks keeping each attention module's query input (this thread's forward only: the hooks live
    inside one `attention` call)."""

    def __init__(self, modules: Sequence[tuple[str, nn.Module]]) -> None:
        self.seen: dict[str, Tensor] = {}
        self.handles = [m.register_forward_pre_hook(self._hook(name), with_kwargs=True) for name, m in modules]

    def _hook(self, name: str):
        def hook(_m: nn.Module, args: tuple, kwargs: dict):
            self.seen[name] = args[0] if args else kwargs.get("query", kwargs.get("x"))

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def weights_of(module: nn.Module, x: Tensor) -> Tensor:
    """[N, heads, T, T] attention weights the module computes for the token input `x` [N, T, C]."""
    if _kind(module) == "timm":
        n, t, _ = x.shape
        heads = module.num_heads
        qkv = module.qkv(x).reshape(n, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
        q, k = qkv[0], qkv[1]
        q, k = module.q_norm(q), module.k_norm(k)
        return ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    if _kind(module) == "mha":
        if not module.batch_first:
            x = x.transpose(0, 1)
        n, t, e = x.shape
        heads = module.num_heads
        w, b = module.in_proj_weight, module.in_proj_bias
        if w is None:
            raise DeepVisError("attention with separate q/k/v projections is not supported")
        q = F.linear(x, w[:e], None if b is None else b[:e]).reshape(n, t, heads, -1).transpose(1, 2)
        k = F.linear(x, w[e:2 * e], None if b is None else b[e:2 * e]).reshape(n, t, heads, -1).transpose(1, 2)
        return (q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)).softmax(dim=-1)
    raise DeepVisError(f"{type(module).__name__} is not an attention module DeepVis can read")


@torch.no_grad()
def attention(net: nn.Module, x: Tensor, *, upto: str | None = None) -> dict[str, Tensor]:
    """Every attention module's weights [N, heads, T, T] for the images `x`, in forward order; with `upto` (an
    attention module's name) the forward stops after that block."""
    modules = attention_modules(net)
    if not modules:
        raise DeepVisError(f"{type(net).__name__} has no self-attention blocks (attention views are for "
                           "vision transformers)")
    names = [n for n, _ in modules]
    if upto is not None:
        if upto not in names:
            raise DeepVisError(f"unknown attention block {upto!r}; blocks: {', '.join(names)}")
        modules = modules[: names.index(upto) + 1]
    inputs = _Inputs(modules)
    try:
        with Capture(net, [modules[-1][0]], example=x, stop=True, detach=True) as cap:
            cap.run(x)
    finally:
        inputs.remove()
    return {name: weights_of(m, inputs.seen[name]) for name, m in modules if name in inputs.seen}


def rollout(weights: Sequence[Tensor], *, residual: float = 0.5) -> Tensor:
    """Attention rollout [N, T, T]: heads averaged, the residual path added (residual * I + (1 - residual) * A),
    rows renormalized, and the blocks multiplied from the first up: row i says how much token i of the last
    block draws, through every path, on each input token."""
    if not weights:
        raise DeepVisError("rollout needs at least one attention block")
    out = None
    for w in weights:
        a = w.mean(dim=1)
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual * eye + (1 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True)
        out = a if out is None else a @ out
    return out


def token_maps(rows: Tensor, prefix: int, grid: tuple[int, int]) -> Tensor:
    """Attention rows [..., T] from one query token, as maps [..., h, w] over the patch tokens (prefix dropped)."""
    h, w = grid
    patches = rows[..., prefix:]
    if patches.shape[-1] != h * w:
        raise DeepVisError(f"{patches.shape[-1]} patch tokens do not fill a {h}x{w} grid")
    return patches.reshape(*rows.shape[:-1], h, w)


def query_index(prefix: int, grid: tuple[int, int], patch: tuple[int, int] | None) -> int:
    """The token a map is drawn from: the class token (0) or the patch at (y, x) of the grid."""
    if patch is None:
        if prefix == 0:
            raise DeepVisError("this model has no class token: click a patch to see where it attends")
        return 0
    y, x = patch
    if not (0 <= y < grid[0] and 0 <= x < grid[1]):
        raise DeepVisError(f"patch ({y}, {x}) is outside the {grid[0]}x{grid[1]} token grid")
    return prefix + y * grid[1] + x
