"""Exact running top-k per channel, kept on the model's device.

Every channel of a layer keeps its k best (value, image id, y, x) candidates. Ordering is total and
deterministic: value descending, then image id ascending. Because the order is total, merging is associative
and commutative: merging per-batch, per-checkpoint or per-rank partial results in any grouping gives exactly
the same top-k as one pass over all images (what makes `--resume` and torchrun sharding exact).
"""

from __future__ import annotations

import torch

EMPTY_ID = torch.iinfo(torch.int64).max  # id of an unfilled slot: loses every tie against a real image


def spatial_max(act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel maximum over space of a batch: Tensor[N,C,H,W] or [N,C] -> values, y, x, each [N,C].

    The argmax is the first maximal position in row-major order (torch's documented tie rule), so it is
    reproducible. A NaN maximum counts as -inf so it never wins. Stays on the activation's device.
    """
    act = act.detach()
    if act.dim() == 2:
        zeros = torch.zeros(act.shape, dtype=torch.int64, device=act.device)
        return torch.nan_to_num(act.float(), nan=float("-inf")), zeros, zeros
    if act.dim() != 4:
        raise ValueError(f"expected activations shaped [N,C,H,W] or [N,C], got {tuple(act.shape)}")
    n, c, _h, w = act.shape
    values, index = act.reshape(n, c, -1).max(dim=2)  # no copy of the activation; NaN handled on the result
    values = torch.nan_to_num(values.float(), nan=float("-inf"))
    return values, torch.div(index, w, rounding_mode="floor"), index % w


def merge_candidates(values: torch.Tensor, ids: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor,
                     k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best of candidate rows [C, M] by (value desc, id asc); pads with empty slots when M < k.

    Two stable sorts (id, then value) give the lexicographic order exactly, which `torch.topk` alone does not
    promise for ties.
    """
    c, m = values.shape
    if m < k:
        pad = k - m
        values = torch.cat([values, values.new_full((c, pad), float("-inf"))], dim=1)
        ids = torch.cat([ids, ids.new_full((c, pad), EMPTY_ID)], dim=1)
        ys = torch.cat([ys, ys.new_zeros((c, pad))], dim=1)
        xs = torch.cat([xs, xs.new_zeros((c, pad))], dim=1)
    order = torch.sort(ids, dim=1, stable=True).indices
    values, ids, ys, xs = (t.gather(1, order) for t in (values, ids, ys, xs))
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    return tuple(t.gather(1, order) for t in (values, ids, ys, xs))  # type: ignore[return-value]


class RunningTopK:
    """Top-k state of one layer: `values` float32 [C,k], `ids` int64 [C,k] (EMPTY_ID = unfilled), `y`, `x`."""

    def __init__(self, channels: int, k: int, device: torch.device | str = "cpu") -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k = k
        self.values = torch.full((channels, k), float("-inf"), device=device)
        self.ids = torch.full((channels, k), EMPTY_ID, dtype=torch.int64, device=device)
        self.y = torch.zeros((channels, k), dtype=torch.int64, device=device)
        self.x = torch.zeros((channels, k), dtype=torch.int64, device=device)

    @property
    def channels(self) -> int:
        return self.values.shape[0]

    def update(self, act: torch.Tensor, image_ids: torch.Tensor) -> None:
        """Merge one batch of activations [N,C,H,W] or [N,C]; `image_ids` [N] are global image indices."""
        values, ys, xs = spatial_max(act)
        ids = image_ids.to(self.ids.device, torch.int64).view(-1, 1).expand_as(values)
        self._merge(values.t(), ids.t(), ys.t(), xs.t())

    def merge(self, other: RunningTopK) -> None:
        """Fold another partial state (another rank, another checkpoint) into this one."""
        dev = self.values.device
        self._merge(other.values.to(dev), other.ids.to(dev), other.y.to(dev), other.x.to(dev))

    def _merge(self, values: torch.Tensor, ids: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> None:
        self.values, self.ids, self.y, self.x = merge_candidates(
            torch.cat([self.values, values], 1), torch.cat([self.ids, ids], 1),
            torch.cat([self.y, ys], 1), torch.cat([self.x, xs], 1), self.k)

    def state(self) -> dict[str, torch.Tensor]:
        """CPU tensors, for checkpoints and for gathering across ranks."""
        return {"values": self.values.cpu(), "ids": self.ids.cpu(), "y": self.y.cpu(), "x": self.x.cpu()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> RunningTopK:
        channels, k = state["values"].shape
        top = cls(channels, k, device)
        top.values = state["values"].to(device, torch.float32)
        top.ids = state["ids"].to(device, torch.int64)
        top.y = state["y"].to(device, torch.int64)
        top.x = state["x"].to(device, torch.int64)
        return top
