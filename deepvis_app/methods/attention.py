"""What a vision transformer attends to: each head's attention weights per block, maps from the class token (or a
clicked patch) to every patch, and attention rollout (Abnar & Zuidema 2020).

Fused attention kernels never materialize the weights, so they are recomputed from each attention module's input
with the module's own projections: softmax(q k^T * scale) per head, exactly what the block computed (tests compare
with timm's and torchvision's own weights). Supported: timm's `Attention` (qkv Linear, q/k norms) and torch's
`nn.MultiheadAttention` (torchvision's ViT). One forward captures every block's input through `probe.Capture`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import DeepVisError
from ..probe import Capture

_MODULES: weakref.WeakKeyDictionary[nn.Module, list[tuple[str, nn.Module]]] = weakref.WeakKeyDictionary()


def attention_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's self-attention modules in forward (definition) order (found once per net: the live worker
    asks every frame)."""
    found = _MODULES.get(net)
    if found is None:
        found = _MODULES[net] = [(name, m) for name, m in net.named_modules() if _kind(m) is not None]
    return list(found)


def _kind(m: nn.Module) -> str | None:
    if isinstance(m, nn.MultiheadAttention):
        return "mha"
    if all(hasattr(m, a) for a in ("qkv", "num_heads", "scale")) and isinstance(m.qkv, nn.Linear):
        return "timm"
    return None


class AttentionRecorder:
    """Keeps each attention module's query input during forwards this thread runs (forward pre-hooks, removed on
    exit), so the weights can be recomputed after any forward: the live worker's own, with no second pass.

    >>> with AttentionRecorder(net, upto="blocks.5.attn") as rec:
    ...     net(x)
    ...     w = rec.weights()          # {block name: [N, heads, T, T]} for the blocks up to blocks.5.attn
    """

    def __init__(self, net: nn.Module, *, upto: str | None = None, last_only: bool = False) -> None:
        modules = attention_modules(net)
        if not modules:
            raise DeepVisError(f"{type(net).__name__} has no self-attention blocks (attention views are for "
                               "vision transformers)")
        names = [n for n, _ in modules]
        if upto is not None:
            if upto not in names:
                raise DeepVisError(f"unknown attention block {upto!r}; blocks: {', '.join(names)}")
            modules = modules[: names.index(upto) + 1]
        self.modules = modules
        # Record the last block only (the live heads on a frame that keeps its rollout): one hook, not one per block.
        self.last_only = last_only
        self.seen: dict[str, Tensor] = {}
        self.qkv: dict[str, Tensor] = {}
        self._handles: list = []
        self._owner = 0

    @property
    def last(self) -> str:
        return self.modules[-1][0]

    def __enter__(self) -> AttentionRecorder:
        self._owner = threading.get_ident()
        for name, m in self.modules[-1:] if self.last_only else self.modules:
            if _kind(m) == "timm":  # its qkv projection is a module call: keep its output, nothing recomputed
                self._handles.append(m.qkv.register_forward_hook(self._qkv_hook(name)))
            else:
                self._handles.append(m.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, name: str):
        def hook(_m: nn.Module, args: tuple, kwargs: dict):
            if threading.get_ident() == self._owner:
                self.seen[name] = args[0] if args else kwargs.get("query", kwargs.get("x"))

        return hook

    def _qkv_hook(self, name: str):
        def hook(_m: nn.Module, _inputs: tuple, output: Tensor):
            if threading.get_ident() == self._owner:
                self.qkv[name] = output

        return hook

    @torch.no_grad()
    def weights(self, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """[N, heads, T, T] per recorded block (all, or `names`), from the recorded projections or inputs."""
        wanted = set(names) if names is not None else None
        out = {}
        for name, m in self.modules:
            if wanted is not None and name not in wanted:
                continue
            if name in self.qkv:
                out[name] = weights_from_qkv(m, self.qkv[name].detach())
            elif name in self.seen:
                out[name] = weights_of(m, self.seen[name].detach())
        return out


    @torch.no_grad()
    def query_rows(self, name: str, query: int) -> Tensor:
        """[N, heads, T]: block `name`'s attention from token `query` only (one row of each head's weights, what
        the live heads view draws every frame: 1/T of the work of `weights`)."""
        m = dict(self.modules)[name]
        if name in self.qkv:
            return rows_from_qkv(m, self.qkv[name].detach(), query)
        if name in self.seen:
            return weights_of(m, self.seen[name].detach(), query=query)[:, :, 0]
        raise DeepVisError(f"attention block {name!r} did not run in this forward")


def rows_from_qkv(module: nn.Module, qkv: Tensor, query: int) -> Tensor:
    """[N, heads, T]: one query token's attention weights from a timm attention module's qkv output."""
    n, t, _ = qkv.shape
    parts = qkv.reshape(n, t, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = module.q_norm(parts[0][:, :, query:query + 1]), module.k_norm(parts[1])
    return ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)[:, :, 0]


def weights_from_qkv(module: nn.Module, qkv: Tensor) -> Tensor:
    """[N, heads, T, T] from a timm attention module's qkv projection output [N, T, 3 * heads * d]."""
    n, t, _ = qkv.shape
    parts = qkv.reshape(n, t, 3, module.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = module.q_norm(parts[0]), module.k_norm(parts[1])
    return ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def weights_of(module: nn.Module, x: Tensor, *, query: int | None = None) -> Tensor:
    """[N, heads, T, T] attention weights the module computes for the token input `x` [N, T, C] (with `query`:
    [N, heads, 1, T], that token's row only)."""
    if _kind(module) == "timm":
        if query is not None:
            return rows_from_qkv(module, module.qkv(x), query)[:, :, None]
        return weights_from_qkv(module, module.qkv(x))
    if _kind(module) == "mha":
        if not module.batch_first:
            x = x.transpose(0, 1)
        n, t, e = x.shape
        heads = module.num_heads
        w, b = module.in_proj_weight, module.in_proj_bias
        if w is None:
            raise DeepVisError("attention with separate q/k/v projections is not supported")
        xq = x if query is None else x[:, query:query + 1]
        q = F.linear(xq, w[:e], None if b is None else b[:e]).reshape(n, xq.shape[1], heads, -1).transpose(1, 2)
        k = F.linear(x, w[e:2 * e], None if b is None else b[e:2 * e]).reshape(n, t, heads, -1).transpose(1, 2)
        return (q @ k.transpose(-2, -1) / (q.shape[-1] ** 0.5)).softmax(dim=-1)
    raise DeepVisError(f"{type(module).__name__} is not an attention module DeepVis can read")


@torch.no_grad()
def attention(net: nn.Module, x: Tensor, *, upto: str | None = None) -> dict[str, Tensor]:
    """Every attention module's weights [N, heads, T, T] for the images `x`, in forward order; with `upto` (an
    attention module's name) the forward stops after that block."""
    with AttentionRecorder(net, upto=upto) as rec, Capture(net, [rec.last], example=x, stop=True, detach=True) as cap:
        cap.run(x)
    return rec.weights()


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


def rollout_row(weights: Sequence[Tensor], query: int, *, residual: float = 0.5) -> Tensor:
    """Row `query` of `rollout(weights)` [N, T], from the last block down with vector-matrix products: the row
    so far times each head, averaged, mixed with the residual path -- no T x T matrix is formed (what the live
    view draws every few frames). Softmax rows sum to 1, so the rows of residual * I + (1 - residual) * mean(A)
    do too and `rollout`'s renormalization divides by 1 (the two agree to float rounding; a test checks)."""
    if not weights:
        raise DeepVisError("rollout needs at least one attention block")
    v = None
    for w in reversed(weights):  # w: [N, heads, T, T]
        if v is None:
            mixed = w[:, :, query].mean(dim=1)  # [N, T]: the query's row, heads averaged
            base = torch.zeros_like(mixed)
            base[:, query] = 1.0
        else:
            mixed = (v[:, None, None, :] @ w)[:, :, 0].mean(dim=1)
            base = v
        v = base.mul(residual).add_(mixed, alpha=1 - residual)
    return v


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
